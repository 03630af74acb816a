"""Triton upfirdn2d: zero-insert upsample, pad/crop, FIR filter, downsample per channel.

Grid (cdiv(out_h * out_w, BLOCK), N * C): each program computes BLOCK output pixels of
one plane. For output (oy, ox) and tap (ky, kx) of the correlation filter, the padded,
upsampled position (oy * down_y + ky - pad_y0, ox * down_x + kx - pad_x0) holds an input
pixel only when it is a multiple of up and lies inside the image: the kernel loads x
there under that mask, so the zero-stuffed image is never built. The filter (at most
MAX_TAPS taps, flipped on the host unless flip_filter, gain folded in) is read as
scalars from a small fp32 buffer. fp32 accumulation; the store rounds to x's dtype.

The backward needs no kernel of its own: it is upfirdn2d again (up and down swapped,
filter flipped), so the op's autograd runs this same kernel.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

OP = "upfirdn2d_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK = 256
MAX_TAPS = 64  # fh * fw: the taps are unrolled at compile time


@triton.jit
def _upfirdn2d_kernel(
    X,      # *x: contiguous [N * C, H, W]
    K,      # *fp32 [FH, FW]: correlation filter, gain applied
    Out,    # *out: contiguous [N * C, OH, OW], written here
    H, W, OH, OW,
    upx, upy, downx, downy, px0, py0,
    FH: tl.constexpr, FW: tl.constexpr, BLOCK: tl.constexpr,
):
    plane = tl.program_id(1).to(tl.int64)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = idx < OH * OW
    oy = idx // OW
    ox = idx % OW
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    xp = X + plane * H * W
    for ky in tl.static_range(FH):
        uy = oy * downy + ky - py0  # position in the upsampled image
        iy = uy // upy
        ok_y = (uy >= 0) & (uy == iy * upy) & (iy < H)
        for kx in tl.static_range(FW):
            ux = ox * downx + kx - px0
            ix = ux // upx
            ok = inside & ok_y & (ux >= 0) & (ux == ix * upx) & (ix < W)
            v = tl.load(xp + iy * W + ix, mask=ok, other=0.0).to(tl.float32)
            acc += v * tl.load(K + ky * FW + kx)
    tl.store(Out + plane * OH * OW + idx, acc.to(Out.dtype.element_ty), mask=inside)


def upfirdn2d_triton(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int,
                     downy: int, px0: int, px1: int, py0: int, py1: int, flip_filter: bool,
                     gain: float, *, block: Optional[int] = None) -> torch.Tensor:
    """upfirdn2d on the GPU (or the Triton interpreter); semantics of upfirdn2d_reference.

    Args:
        x: [N, C, H, W] float32, bfloat16 or float16, any strides.
        f: [fh, fw] or separable [taps] filter (any float dtype, x's device), at most
            MAX_TAPS taps in 2-D.
        upx, upy, downx, downy: factors >= 1.
        px0, px1, py0, py1: padding in the upsampled image (negative crops).
        flip_filter: False = convolution, True = correlation.
        gain: overall signal gain.
        block: output pixels per program (power of two >= 16); default 256.
    Returns:
        [N, C, (H*upy + py0 + py1 - fh + downy) // downy,
         (W*upx + px0 + px1 - fw + downx) // downx], contiguous, x's dtype.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{OP}: x must be a 4-D [N, C, H, W] tensor")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{OP}: x has dtype {x.dtype}; expected float32, bfloat16 or float16")
    if os.environ.get("TRITON_INTERPRET", "0") != "1" and x.device.type != "cuda":
        raise TypeError(f"{OP}: x is on {x.device}; Triton kernels need CUDA tensors "
                        "(or TRITON_INTERPRET=1)")
    if not isinstance(f, torch.Tensor) or f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError(f"{OP}: f must be a non-empty [fh, fw] or [taps] tensor")
    if f.device != x.device:
        raise TypeError(f"{OP}: f is on {f.device} but x is on {x.device}")
    if min(upx, upy, downx, downy) < 1:
        raise ValueError(f"{OP}: up and down must be >= 1")
    k = f.to(torch.float32)
    if k.dim() == 1:  # separable: the outer product, gain^(1/2) per axis as the reference
        k = torch.outer(k, k)
    if k.numel() > MAX_TAPS:
        raise ValueError(f"{OP}: f has {k.numel()} taps in 2-D; at most {MAX_TAPS} are supported")
    if not flip_filter:
        k = k.flip([0, 1])
    k = (k * gain).contiguous()
    fh, fw = k.shape
    N, C, H, W = x.shape
    oh = (H * upy + py0 + py1 - fh + downy) // downy
    ow = (W * upx + px0 + px1 - fw + downx) // downx
    if oh < 0 or ow < 0:
        raise ValueError(f"{OP}: padding: the padded image is smaller than the filter")
    block = _BLOCK if block is None else int(block)
    if block < 16 or block & (block - 1):
        raise ValueError(f"{OP}: block must be a power of two >= 16, got {block}")
    out = torch.empty((N, C, oh, ow), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    x = x.contiguous()
    _upfirdn2d_kernel[(triton.cdiv(oh * ow, block), N * C)](
        x, k, out, H, W, oh, ow, upx, upy, downx, downy, px0, py0, FH=fh, FW=fw, BLOCK=block)
    return out
