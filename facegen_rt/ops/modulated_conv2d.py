"""StyleGAN2 modulated convolution with optional up/downsampling and demodulation.

NVlabs training/networks_stylegan2.py ``modulated_conv2d`` on top of
torch_utils/ops/conv2d_resample.py. Per sample n, with styles s[n] over input channels:

    w[n, o, i] = weight[o, i] * s[n, i]
    d[n, o]    = rsqrt(sum_{i, ky, kx} w[n, o, i, ky, kx]^2 + 1e-8)     (demodulate)
    y[n]       = conv2d_resample(x[n], w[n] * d[n]) + noise

Two paths compute it, as in NVlabs:

* fused (``fused_modconv=True``): the per-sample weights are built and the batch runs as
  one grouped convolution (groups = N);
* non-fused: x is scaled by s, convolved with the shared weight, and the output scaled
  by d. DragGAN's renderer keeps its generator in training mode and so runs this path;
  the two differ by rounding only (~1e-6 relative in fp32).

The resampling follows conv2d_resample exactly (same fast paths, same padding rules),
with the low-pass ``resample_filter`` applied by upfirdn2d. The float16
pre-normalization of NVlabs is not needed: float16 is not an accepted dtype.

Backends: "cpu" (C++: weight modulation/demodulation fused into one pass that writes
the grouped convolution's weight layout, the convolution by ATen/oneDNN, the FIR steps
by this library's upfirdn2d kernel), "triton" (the weight preparation as a Triton
kernel, the convolution and FIR steps left to PyTorch: cuDNN already runs the
convolution well, the rest is memory-bound and small) and the reference.

Gradients, for the inputs that need one only (in a DragGAN step the weights are
frozen, so no weight gradient is computed): for float32/bfloat16 CPU tensors the C++
backward (ATen's convolution backward, closed-form modulation and demodulation
gradients, upfirdn2d for the FIR steps); otherwise, when "reference" is forced, and
while a graph of the backward is recorded, the reference is recomputed and
differentiated with torch.func.vjp. That path is the oracle of the C++ backward.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ._backends import Backend, OpBackends, dtype_refusals
from ._checks import FLOAT_DTYPES, check_finite, check_like, check_tensor
from ._dispatch import call_op, cpu_backward_applies, eager_autograd
from ._native import compiled, cpu_kernel_unavailable, triton_device_refusals, triton_unavailable
from .upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d_reference

OP = "modulated_conv2d"


def _conv2d(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d correlates: flip_weight=False flips the kernel to convolve instead."""
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    op = F.conv_transpose2d if transpose else F.conv2d
    return op(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample_reference(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None,
                              up: int = 1, down: int = 1, padding: Padding = 0, groups: int = 1,
                              flip_weight: bool = True, flip_filter: bool = False) -> torch.Tensor:
    """NVlabs ``conv2d_resample``: 2-D convolution with FIR up/downsampling.

    Args:
        x: [N, C_in, H, W].
        w: [C_out, C_in / groups, kh, kw], x's dtype.
        f: low-pass filter from setup_filter ([fh, fw] or [taps]), or None (identity).
        up, down: integer factors.
        padding: int, [x, y] or [x0, x1, y0, y1], in the upsampled image.
        groups: grouped convolution.
        flip_weight: True = correlation (as F.conv2d), False = convolution.
        flip_filter: True = correlate with f, False = convolve.
    Returns:
        [N, C_out, H', W'] (see :func:`output_size`).
    """
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    # Padding is applied once, so fold the resampling filter's own padding into it.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: downsample first, then convolve.
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = upfirdn2d_reference(x, f, down=down, padding=[px0, px1, py0, py1],
                                flip_filter=flip_filter)
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight)
    # 1x1 kernel, upsampling only: convolve first, then upsample.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d_reference(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                                   flip_filter=flip_filter)
    # Downsampling only: filter, then strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d_reference(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    # Upsampling (then optional downsampling): transposed strided convolution, then filter.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv2d(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True,
                    flip_weight=not flip_weight)
        x = upfirdn2d_reference(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt],
                                gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d_reference(x, f, down=down, flip_filter=flip_filter)
        return x
    # No resampling, symmetric non-negative padding: plain conv2d.
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    # Generic path.
    x = upfirdn2d_reference(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1],
                            gain=up ** 2, flip_filter=flip_filter)
    x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d_reference(x, f, down=down, flip_filter=flip_filter)
    return x


def output_size(x_hw: Sequence[int], k_hw: Sequence[int], f_wh: Sequence[int], up: int,
                down: int, padding: Sequence[int]) -> tuple[int, int]:
    """(out_h, out_w) of conv2d_resample: every path above gives the generic path's size."""
    fw, fh = f_wh
    sizes = []
    for n, k, fs, p0, p1 in ((x_hw[0], k_hw[0], fh, padding[2], padding[3]),
                             (x_hw[1], k_hw[1], fw, padding[0], padding[1])):
        if up > 1:
            p0, p1 = p0 + (fs + up - 1) // 2, p1 + (fs - up) // 2
        if down > 1:
            p0, p1 = p0 + (fs - down + 1) // 2, p1 + (fs - down) // 2
        size = n * up + p0 + p1 - k + 1
        if up > 1:
            size = size - fs + 1
        if down > 1:
            size = (size - fs + down) // down
        sizes.append(size)
    return sizes[0], sizes[1]


def modulated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                               noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1,
                               padding: Padding = 0, resample_filter: Optional[torch.Tensor] = None,
                               demodulate: bool = True, flip_weight: bool = True,
                               fused_modconv: bool = True) -> torch.Tensor:
    """NVlabs ``modulated_conv2d`` in plain PyTorch.

    Args:
        x: [N, C_in, H, W].
        weight: [C_out, C_in, kh, kw].
        styles: [N, C_in] modulation coefficients.
        noise: added to the output; broadcastable to [N, C_out, H', W'] (StyleGAN2 passes
            [H', W'] or [N, 1, H', W']), or None.
        up, down: integer resampling factors.
        padding: int, [x, y] or [x0, x1, y0, y1] in the upsampled image.
        resample_filter: low-pass filter from setup_filter, or None.
        demodulate: normalize each output channel's modulated weights to unit norm.
        flip_weight: True = correlation (F.conv2d), False = convolution.
        fused_modconv: one grouped convolution (True) or scale-conv-scale (False).
    Returns:
        [N, C_out, H', W'], contiguous, x's dtype.
    """
    N = x.shape[0]
    _, in_channels, kh, kw = weight.shape
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(N, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(N, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(N, -1, 1, 1)
        x = conv2d_resample_reference(x, weight.to(x.dtype), resample_filter, up=up, down=down,
                                      padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            # NVlabs fuses this multiply-add (fma.fma = addcmul); so do we, for bit parity.
            x = torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(N, -1, 1, 1))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(N, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x.contiguous()

    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample_reference(x, w.to(x.dtype), resample_filter, up=up, down=down,
                                  padding=padding, groups=N, flip_weight=flip_weight)
    x = x.reshape(N, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x.contiguous()


def _reference(x, weight, styles, noise, f, up, down, padding, demodulate, flip_weight, fused):
    return modulated_conv2d_reference(x, weight, styles, noise, up, down, list(padding), f,
                                      demodulate, flip_weight, fused)


# Argument contract for compiled backends:
# x [N, I, H, W], weight [O, I, kh, kw], styles [N, I], noise broadcastable to the output
# or None, resample filter or None, up, down, padding (x0, x1, y0, y1), three flags.
def _cpu(x, weight, styles, noise, f, up, down, padding, demodulate, flip_weight, fused):
    return compiled().modulated_conv2d(x, weight, styles, noise, f, up, down, list(padding),
                                       demodulate, flip_weight, fused)


def _triton(x, weight, styles, noise, f, up, down, padding, demodulate, flip_weight, fused):
    from facegen_rt.kernels.modulated_conv2d import modulated_conv2d_triton

    return modulated_conv2d_triton(x, weight, styles, noise, f, up, down, list(padding),
                                   demodulate, flip_weight, fused)


_LOWP = (torch.float32, torch.bfloat16)


def _cpu_unavailable():
    return cpu_kernel_unavailable("modulated_conv2d")


def _cpu_refusals(x, *args):
    return dtype_refusals("x", x, _LOWP)


def _triton_refusals(x, weight, styles, noise, f, *args):
    tensors = [t for t in (x, weight, styles, noise, f) if t is not None]
    return triton_device_refusals(*tensors) + dtype_refusals("x", x, _LOWP)


# Compiled kernels go ahead of the reference.
BACKENDS = OpBackends(OP, [
    Backend("cpu", _cpu, _cpu_unavailable, _cpu_refusals, devices=("cpu",)),
    Backend("triton", _triton, triton_unavailable, _triton_refusals, devices=("cuda",)),
    Backend("reference", _reference, devices=("cpu", "cuda")),
])


def _modulated_conv2d_body(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                           noise: Optional[torch.Tensor], resample_filter: Optional[torch.Tensor],
                           up: int, down: int, padding: list[int], demodulate: bool,
                           flip_weight: bool, fused_modconv: bool, backend: str) -> torch.Tensor:
    check_finite(OP, x=x, weight=weight, styles=styles,
                 **({} if noise is None else {"noise": noise}))
    args = (x, weight, styles, noise, resample_filter, up, down, padding, demodulate,
            flip_weight, fused_modconv)
    return BACKENDS.select(backend, x.device.type, *args).run(*args)


# One graph node for compile and export; plain eager calls run the body directly
# (see _dispatch).
_modulated_conv2d_op = torch.library.custom_op(
    "facegen::modulated_conv2d", _modulated_conv2d_body, mutates_args=())


@_modulated_conv2d_op.register_fake
def _(x, weight, styles, noise, resample_filter, up, down, padding, demodulate, flip_weight,
      fused_modconv, backend):
    oh, ow = output_size(x.shape[2:], weight.shape[2:], filter_size(resample_filter), up, down,
                         padding)
    return x.new_empty(x.shape[0], weight.shape[0], oh, ow)


def _setup_context(ctx, inputs, output):
    x, weight, styles, noise, f, *args, backend = inputs
    # The output lets the C++ backward recover the pre-demodulation convolution output
    # of the non-fused path without running the convolution again.
    ctx.save_for_backward(x, weight, styles, noise, f, output)
    ctx.args = args
    ctx.backend = backend


def _backward(ctx, grad):
    """The C++ backward where it applies, else the reference's vector-Jacobian product."""
    x, weight, styles, noise, f, out = ctx.saved_tensors
    if cpu_backward_applies(BACKENDS, ctx.backend, x, grad):
        up, down, padding, demodulate, flip_weight, fused = ctx.args
        grads = compiled().modulated_conv2d_backward(
            grad, x, weight, styles, noise, out, f, up, down, list(padding), demodulate,
            flip_weight, fused, list(ctx.needs_input_grad[:4]))
        return tuple(grads) + (None,) * 8
    return _reference_backward(ctx, grad, x, weight, styles, noise, f)


def _reference_backward(ctx, grad, x, weight, styles, noise, f):
    """Recompute the reference and take its vector-Jacobian product (see module docstring)."""
    tensors = [x, weight, styles, noise]
    wanted = [i for i in range(4) if ctx.needs_input_grad[i]]

    def forward(*primals):
        t = list(tensors)
        for i, p in zip(wanted, primals):
            t[i] = p
        return _reference(t[0], t[1], t[2], t[3], f, *ctx.args)

    _, vjp = torch.func.vjp(forward, *[tensors[i] for i in wanted])
    grads = [None] * 12
    for i, g in zip(wanted, vjp(grad)):
        grads[i] = g
    return tuple(grads)


_modulated_conv2d_autograd = eager_autograd(OP, _modulated_conv2d_op, _modulated_conv2d_body,
                                            _backward, _setup_context)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1,
                     padding: Padding = 0, resample_filter: Optional[torch.Tensor] = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True,
                     backend: Optional[str] = None) -> torch.Tensor:
    """StyleGAN2 modulated convolution; see :func:`modulated_conv2d_reference`.

    Args:
        x: [N, C_in, H, W], float32, bfloat16 or float64.
        weight: [C_out, C_in, kh, kw]; styles: [N, C_in]; noise: broadcastable to the
            output, or None. All of x's dtype and device.
        up, down: integer factors >= 1.
        padding: int, [x, y] or [x0, x1, y0, y1] in the upsampled image.
        resample_filter: [fh, fw] or [taps] filter (no grad), or None.
        demodulate, flip_weight, fused_modconv: as NVlabs (fused_modconv=False is the
            path DragGAN's renderer runs).
        backend: force a backend by name; None chooses automatically.
    Returns:
        [N, C_out, H', W'] contiguous tensor of x's dtype; differentiable in x, weight,
        styles and noise.
    """
    check_tensor(OP, "x", x, 4)
    check_tensor(OP, "weight", weight, 4)
    check_tensor(OP, "styles", styles, 2)
    check_like(OP, "x", x, weight=weight, styles=styles)
    N, C_in = x.shape[:2]
    if weight.shape[1] != C_in:
        raise ValueError(f"{OP}: weight must have shape (C_out, {C_in}, kh, kw) (C_in of x), "
                         f"got {tuple(weight.shape)}")
    if styles.shape != (N, C_in):
        raise ValueError(f"{OP}: styles must have shape ({N}, {C_in}) (N, C_in of x), "
                         f"got {tuple(styles.shape)}")
    for name, v in (("up", up), ("down", down)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{OP}: {name} must be an int >= 1, got {v!r}")
    f = resample_filter
    if f is not None:
        if not isinstance(f, torch.Tensor) or f.dim() not in (1, 2) or f.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{OP}: resample_filter must be a float [fh, fw] or [taps] tensor, "
                            "or None")
        if f.device != x.device:
            raise TypeError(f"{OP}: resample_filter is on {f.device} but x is on {x.device}")
        if f.requires_grad:
            raise ValueError(f"{OP}: resample_filter requires grad; pass a constant filter")
    pad = list(parse_padding(padding))
    oh, ow = output_size(x.shape[2:], weight.shape[2:], filter_size(f), up, down, pad)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{OP}: the output would be empty ({oh}x{ow}) for x {tuple(x.shape)}, "
                         f"kernel {tuple(weight.shape[2:])}, padding {pad}")
    if noise is not None:
        if not isinstance(noise, torch.Tensor):
            raise TypeError(f"{OP}: noise must be a torch.Tensor or None, "
                            f"got {type(noise).__name__}")
        check_like(OP, "x", x, noise=noise)
        out_shape = (N, weight.shape[0], oh, ow)
        try:
            fits = torch.broadcast_shapes(noise.shape, out_shape) == out_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"{OP}: noise with shape {tuple(noise.shape)} does not broadcast to "
                             f"the output shape {out_shape}")
    tensors = tuple(t for t in (x, weight, styles, noise, f) if t is not None)
    return call_op(_modulated_conv2d_op, _modulated_conv2d_body, tensors, x, weight, styles,
                   noise, f, up, down, pad, bool(demodulate), bool(flip_weight),
                   bool(fused_modconv), backend or "", autograd=_modulated_conv2d_autograd)
