"""StyleGAN2 FIR resampling: pad, upsample, filter and downsample a batch of images.

NVlabs torch_utils/ops/upfirdn2d.py semantics, per channel:

1. upsample by inserting ``up - 1`` zeros after each pixel;
2. pad with zeros (negative padding crops), padding given as (x0, x1, y0, y1) in the
   upsampled image;
3. convolve with the FIR filter f (true convolution unless ``flip_filter``), keeping
   only the outputs whose footprint lies inside the padded image;
4. keep every ``down``-th pixel.

The helpers :func:`setup_filter`, :func:`filter2d`, :func:`upsample2d` and
:func:`downsample2d` compute the padding the way NVlabs does. StyleGAN2 uses the
[1, 3, 3, 1] filter (normalized outer product, 4x4) everywhere.

Gradients flow to x only (the filter is a constant buffer in every model): the
gradient of upfirdn2d is another upfirdn2d with up and down swapped and the filter
flipped, so the backward runs the same backend table (the C++ kernel for CPU tensors)
and works at any order.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ._backends import Backend, OpBackends, dtype_refusals
from ._checks import FLOAT_DTYPES, check_finite, check_tensor
from ._dispatch import call_op, eager_autograd
from ._native import compiled, cpu_kernel_unavailable, triton_device_refusals, triton_unavailable

OP = "upfirdn2d"

Scaling = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


def parse_scaling(name: str, scaling: Scaling) -> tuple[int, int]:
    """An int or [x, y] factor -> (sx, sy), each >= 1."""
    if isinstance(scaling, int):
        scaling = (scaling, scaling)
    if (not isinstance(scaling, (list, tuple)) or len(scaling) != 2
            or not all(isinstance(s, int) and s >= 1 for s in scaling)):
        raise ValueError(f"{OP}: {name} must be an int >= 1 or a pair [x, y] of them, "
                         f"got {scaling!r}")
    return int(scaling[0]), int(scaling[1])


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """An int, [x, y] or [x0, x1, y0, y1] padding -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = (padding, padding)
    # SymInts appear when a traced filter size feeds the padding (torch.compile).
    if (not isinstance(padding, (list, tuple))
            or not all(isinstance(p, (int, torch.SymInt)) for p in padding)):
        raise ValueError(f"{OP}: padding must be an int or a list of ints, got {padding!r}")
    if len(padding) == 2:
        padding = (padding[0], padding[0], padding[1], padding[1])
    if len(padding) != 4:
        raise ValueError(f"{OP}: padding must have 1, 2 or 4 entries, got {padding!r}")
    return tuple(padding)  # type: ignore[return-value]


def filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(fw, fh) of a [fh, fw] or separable [taps] filter; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    return f.shape[-1], f.shape[0]


def setup_filter(f, device: Optional[torch.device] = None, normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: Optional[bool] = None
                 ) -> torch.Tensor:
    """A float32 FIR filter from a list/array/tensor, as NVlabs ``setup_filter``.

    Args:
        f: [fh, fw], [taps], a scalar, or None (the identity).
        normalize: divide by the sum so a constant signal keeps its magnitude.
        flip_filter: flip the taps.
        gain: overall signal gain, spread over the filter's dims.
        separable: keep a 1-D filter separable; None = only when it has >= 8 taps.
        device: where the filter goes; None = the default device (NVlabs: cpu), so a
            model built under ``torch.device("meta")`` gets a meta filter.
    Returns:
        float32 [fh, fw] (non-separable) or [taps] (separable). setup_filter([1, 3, 3, 1])
        is the 4x4 outer product divided by 64.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.dim() not in (0, 1, 2) or f.numel() == 0:
        raise ValueError("setup_filter: f must be a non-empty scalar, 1-D or 2-D, "
                         f"got shape {tuple(f.shape)}")
    if f.dim() == 0:
        f = f[None]
    if separable is None:
        separable = f.dim() == 1 and f.numel() >= 8
    if f.dim() == 1 and not separable:
        f = torch.outer(f, f)
    if f.dim() != (1 if separable else 2):
        raise ValueError("setup_filter: a 2-D filter can't be made separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.dim())))
    f = f * (gain ** (f.dim() / 2))
    return f if device is None else f.to(device=device)


def _upfirdn2d(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int,
               px0: int, px1: int, py0: int, py1: int, flip_filter: bool, gain: float
               ) -> torch.Tensor:
    """The reference on parsed arguments (NVlabs ``_upfirdn2d_ref``)."""
    N, C, H, W = x.shape
    # Upsample by inserting zeros after every pixel.
    x = x.reshape(N, C, H, 1, W, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(N, C, H * upy, W * upx)
    # Pad, then crop where the padding is negative.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    # conv2d correlates, so the filter is flipped to convolve unless flip_filter.
    f = f * (gain ** (f.dim() / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.dim())))
    f = f[None, None].repeat([C, 1] + [1] * f.dim())
    if f.dim() == 4:
        x = F.conv2d(x, f, groups=C)
    else:  # separable: rows, then columns
        x = F.conv2d(x, f.unsqueeze(2), groups=C)
        x = F.conv2d(x, f.unsqueeze(3), groups=C)
    return x[:, :, ::downy, ::downx].contiguous()


def upfirdn2d_reference(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 1,
                        down: Scaling = 1, padding: Padding = 0, flip_filter: bool = False,
                        gain: float = 1) -> torch.Tensor:
    """NVlabs ``_upfirdn2d_ref`` in plain PyTorch.

    Args:
        x: [N, C, H, W].
        f: [fh, fw] filter, [taps] separable filter, or None (1x1 identity); cast to x's dtype.
        up, down: int or [x, y] factors.
        padding: int, [x, y] or [x0, x1, y0, y1], in the upsampled image; negative crops.
        flip_filter: False = convolution, True = correlation.
        gain: overall signal gain.
    Returns:
        [N, C, (H*upy + y0 + y1 - fh + downy) // downy, (W*upx + x0 + x1 - fw + downx) // downx],
        contiguous, x's dtype.
    """
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    upx, upy = parse_scaling("up", up)
    downx, downy = parse_scaling("down", down)
    return _upfirdn2d(x, f, upx, upy, downx, downy, *parse_padding(padding), flip_filter, gain)


def output_size(x_hw: Sequence[int], f_wh: Sequence[int], upx: int, upy: int, downx: int,
                downy: int, px0: int, px1: int, py0: int, py1: int) -> tuple[int, int]:
    """(out_h, out_w) of upfirdn2d for an [H, W] input and a (fw, fh) filter."""
    H, W = x_hw
    fw, fh = f_wh
    return ((H * upy + py0 + py1 - fh + downy) // downy,
            (W * upx + px0 + px1 - fw + downx) // downx)


# Argument contract for compiled backends:
# x [N, C, H, W] possibly strided, f [fh, fw] or separable [taps] of any float dtype,
# then the parsed factors, padding (x0, x1, y0, y1), flip_filter and gain.
def _cpu(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    return compiled().upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)


def _triton(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    from facegen_rt.kernels.upfirdn2d import upfirdn2d_triton

    return upfirdn2d_triton(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)


_LOWP = (torch.float32, torch.bfloat16)


def _cpu_unavailable():
    return cpu_kernel_unavailable("upfirdn2d")


def _cpu_refusals(x, *args):
    return dtype_refusals("x", x, _LOWP)


def _triton_refusals(x, f, *args):
    return triton_device_refusals(x, f) + dtype_refusals("x", x, _LOWP)


# Compiled kernels go ahead of the reference.
BACKENDS = OpBackends(OP, [
    Backend("cpu", _cpu, _cpu_unavailable, _cpu_refusals, devices=("cpu",)),
    Backend("triton", _triton, triton_unavailable, _triton_refusals, devices=("cuda",)),
    Backend("reference", _upfirdn2d, devices=("cpu", "cuda")),
])


def _upfirdn2d_body(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int,
                    downy: int, px0: int, px1: int, py0: int, py1: int, flip_filter: bool,
                    gain: float, backend: str) -> torch.Tensor:
    check_finite(OP, x=x, f=f)
    args = (x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)
    return BACKENDS.select(backend, x.device.type, *args).run(*args)


# One graph node for compile and export; plain eager calls run the body directly
# (see _dispatch).
_upfirdn2d_op = torch.library.custom_op("facegen::upfirdn2d", _upfirdn2d_body, mutates_args=())


@_upfirdn2d_op.register_fake
def _(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, backend):
    oh, ow = output_size(x.shape[2:], filter_size(f), upx, upy, downx, downy, px0, px1, py0, py1)
    return x.new_empty(x.shape[0], x.shape[1], oh, ow)


def _setup_context(ctx, inputs, output):
    x, f, *params, backend = inputs
    ctx.save_for_backward(f)
    ctx.params = params
    ctx.backend = backend
    ctx.x_hw = x.shape[2:]


def _backward(ctx, grad):
    """dx = upfirdn2d(dy) with up/down swapped, the filter flipped, the padding mirrored."""
    (f,) = ctx.saved_tensors
    upx, upy, downx, downy, px0, _, py0, _, flip_filter, gain = ctx.params
    ih, iw = ctx.x_hw
    oh, ow = grad.shape[2:]
    fw, fh = filter_size(f)
    p = (fw - px0 - 1, iw * upx - ow * downx + px0 - upx + 1,
         fh - py0 - 1, ih * upy - oh * downy + py0 - upy + 1)
    # Through the op's autograd while a graph of the backward is recorded (double
    # backward), straight to the body otherwise.
    dx = call_op(_upfirdn2d_op, _upfirdn2d_body, (grad, f), grad, f, downx, downy, upx, upy, *p,
                 not flip_filter, gain, ctx.backend, autograd=_upfirdn2d_autograd)
    return (dx,) + (None,) * 12


_upfirdn2d_autograd = eager_autograd(OP, _upfirdn2d_op, _upfirdn2d_body, _backward,
                                     _setup_context)


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
              backend: Optional[str] = None) -> torch.Tensor:
    """Pad, upsample, FIR-filter and downsample; see :func:`upfirdn2d_reference` and the
    module docstring for the exact semantics.

    Args:
        x: [N, C, H, W], float32, bfloat16 or float64.
        f: [fh, fw] or separable [taps] filter (any float dtype, x's device, no grad), or None.
        up, down: int or [x, y] factors >= 1.
        padding: int, [x, y] or [x0, x1, y0, y1] in the upsampled image; negative crops.
        flip_filter: False = convolution, True = correlation.
        gain: overall signal gain.
        backend: force a backend by name; None chooses automatically.
    Returns:
        [N, C, out_h, out_w] contiguous tensor of x's dtype; differentiable in x.
    """
    check_tensor(OP, "x", x, 4)
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{OP}: f must be a torch.Tensor or None, got {type(f).__name__}")
    if f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError(f"{OP}: f must be a non-empty [fh, fw] or [taps] filter, "
                         f"got shape {tuple(f.shape)}")
    if f.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{OP}: f has dtype {str(f.dtype).replace('torch.', '')}; "
                        "expected a float dtype")
    if f.device != x.device:
        raise TypeError(f"{OP}: f is on {f.device} but x is on {x.device}")
    if f.requires_grad:
        raise ValueError(f"{OP}: f requires grad, but gradients flow to x only; pass f.detach()")
    upx, upy = parse_scaling("up", up)
    downx, downy = parse_scaling("down", down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    H, W = x.shape[2:]
    if W * upx + px0 + px1 < fw or H * upy + py0 + py1 < fh:
        raise ValueError(
            f"{OP}: the padded, upsampled image ({H * upy + py0 + py1}x{W * upx + px0 + px1}) "
            f"is smaller than the {fh}x{fw} filter"
        )
    return call_op(_upfirdn2d_op, _upfirdn2d_body, (x, f), x, f, upx, upy, downx, downy, px0,
                   px1, py0, py1, bool(flip_filter), float(gain), backend or "",
                   autograd=_upfirdn2d_autograd)


def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding: Padding = 0,
             flip_filter: bool = False, gain: float = 1, backend: Optional[str] = None
             ) -> torch.Tensor:
    """Filter x with f, padded so the output keeps x's [H, W] (plus ``padding``)."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2)
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, backend=backend)


def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up: Scaling = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1, backend: Optional[str] = None
               ) -> torch.Tensor:
    """Upsample x by ``up`` with f: [N, C, H, W] -> [N, C, H*upy, W*upx] (plus ``padding``).

    The gain is multiplied by upx*upy so the zero insertion keeps the signal's magnitude.
    """
    upx, upy = parse_scaling("up", up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = (px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2,
         py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2)
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy,
                     backend=backend)


def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down: Scaling = 2,
                 padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
                 backend: Optional[str] = None) -> torch.Tensor:
    """Downsample x by ``down`` with f: [N, C, H, W] -> [N, C, H/downy, W/downx]
    (plus ``padding``)."""
    downx, downy = parse_scaling("down", down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = (px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2,
         py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2)
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain,
                     backend=backend)
