"""Triton StyleGAN2 bias + activation: ``clamp(gain * act(x + b), -clamp, clamp)``.

One elementwise kernel over the contiguous x, viewed as [outer, C, inner] with C the
biased dimension: element e takes bias b[(e // inner) % C]. fp32 arithmetic, the store
rounds to x's dtype. The backward stays in PyTorch on the GPU: it is a single fused
elementwise expression plus a reduction, which PyTorch already runs at memory speed.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

OP = "bias_act_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK = 1024


@triton.jit
def _bias_act_kernel(
    X,       # *x: contiguous, numel elements
    B,       # *b: [C] bias (ignored unless HAS_BIAS)
    Out,     # *out: contiguous, x's shape and dtype, written here
    numel,   # elements of x
    C,       # size of the biased dimension
    inner,   # product of the sizes after the biased dimension
    alpha,   # lrelu negative slope
    gain,    # output scale
    clamp,   # clamp bound (used only when CLAMP)
    HAS_BIAS: tl.constexpr,
    LRELU: tl.constexpr,
    CLAMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < numel
    z = tl.load(X + offs, mask=inside, other=0.0).to(tl.float32)
    if HAS_BIAS:
        c = (offs // inner) % C
        z += tl.load(B + c, mask=inside, other=0.0).to(tl.float32)
    if LRELU:
        z = tl.where(z > 0, z, z * alpha)
    z = z * gain
    if CLAMP:
        z = tl.minimum(tl.maximum(z, -clamp), clamp)
    tl.store(Out + offs, z.to(Out.dtype.element_ty), mask=inside)


def bias_act_triton(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str,
                    alpha: float, gain: float, clamp: float, *,
                    block: Optional[int] = None) -> torch.Tensor:
    """Fused bias + activation on the GPU (or the Triton interpreter).

    Args:
        x: any shape (>= 1-D), float32, bfloat16 or float16, any strides (copied to
            contiguous where needed).
        b: [x.shape[dim]] of x's dtype and device, or None.
        dim: the dimension b runs along (negative counts from the end).
        act: "linear" or "lrelu"; alpha, gain: resolved slope and gain.
        clamp: bound, or < 0 for none.
        block: elements per program (power of two >= 16); default 1024.
    Returns:
        Contiguous tensor of x's shape and dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{OP}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{OP}: x has dtype {x.dtype}; expected float32, bfloat16 or float16")
    if x.dim() == 0:
        raise ValueError(f"{OP}: x must have at least 1 dim")
    if os.environ.get("TRITON_INTERPRET", "0") != "1" and x.device.type != "cuda":
        raise TypeError(f"{OP}: x is on {x.device}; Triton kernels need CUDA tensors "
                        "(or TRITON_INTERPRET=1)")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"{OP}: dim={dim} is out of range for x with shape {tuple(x.shape)}")
    dim %= x.dim()
    if act not in ("linear", "lrelu"):
        raise ValueError(f"{OP}: act must be 'linear' or 'lrelu', got {act!r}")
    if b is not None:
        if b.dtype != x.dtype or b.device != x.device:
            raise TypeError(f"{OP}: b must have x's dtype and device, got {b.dtype} on {b.device}")
        if b.dim() != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"{OP}: b must have shape ({x.shape[dim]},), got {tuple(b.shape)}")
    block = _BLOCK if block is None else int(block)
    if block < 16 or block & (block - 1):
        raise ValueError(f"{OP}: block must be a power of two >= 16, got {block}")
    x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() == 0:
        return out
    inner = 1
    for s in x.shape[dim + 1:]:
        inner *= s
    bias = b.contiguous() if b is not None else x  # a placeholder pointer when unused
    _bias_act_kernel[(triton.cdiv(x.numel(), block),)](
        x, bias, out, x.numel(), x.shape[dim], inner, float(alpha), float(gain),
        float(clamp), HAS_BIAS=b is not None, LRELU=act == "lrelu", CLAMP=clamp >= 0,
        BLOCK=block)
    return out
