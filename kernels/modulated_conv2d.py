"""Triton weight preparation for StyleGAN2's modulated convolution.

What is fused, and what is not: the convolution itself stays with PyTorch
(cuDNN, through the reference's conv2d_resample with its FIR steps), since a Triton
convolution would only reproduce what cuDNN already does well. The kernel here fuses
the weight side, which the eager formulation runs as five separate passes over
[N, O, I, kh, kw]: modulation by the styles, the sum of squares, the rsqrt, and the
demodulating multiply. Grid (N * O,): one program per output channel of one sample
reduces its I * kh * kw modulated weights in fp32 and then writes them scaled by
the demodulation coefficient (or, for the non-fused path, only the coefficient).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

OP = "modulated_conv2d_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK = 1024


@triton.jit
def _modulate_kernel(
    Wt,      # *weight: contiguous [O, I * K]
    S,       # *styles: contiguous [N, I]
    Out,     # *out: [N, O, I * K] modulated (demodulated) weights, written when WRITE
    D,       # *fp32 [N, O]: demodulation coefficients (1 when not DEMOD), written here
    C_out, C_in, K,
    DEMOD: tl.constexpr, WRITE: tl.constexpr, BLOCK: tl.constexpr,
):
    no = tl.program_id(0)
    n = no // C_out
    o = no % C_out
    row = C_in * K
    coef = 1.0
    if DEMOD:
        ss = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, row, BLOCK):
            j = start + tl.arange(0, BLOCK)
            inside = j < row
            w = tl.load(Wt + o * row + j, mask=inside, other=0.0).to(tl.float32)
            s = tl.load(S + n * C_in + j // K, mask=inside, other=0.0).to(tl.float32)
            m = w * s
            ss += m * m
        coef = 1.0 / tl.sqrt(tl.sum(ss, axis=0) + 1e-8)
    tl.store(D + no, coef)
    if WRITE:
        for start in range(0, row, BLOCK):
            j = start + tl.arange(0, BLOCK)
            inside = j < row
            w = tl.load(Wt + o * row + j, mask=inside, other=0.0).to(tl.float32)
            s = tl.load(S + n * C_in + j // K, mask=inside, other=0.0).to(tl.float32)
            tl.store(Out + no.to(tl.int64) * row + j, (w * s * coef).to(Out.dtype.element_ty),
                     mask=inside)


def modulate_weights_triton(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                            write: bool = True, *, block: Optional[int] = None
                            ) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """Modulated weights and demodulation coefficients.

    Args:
        weight: [O, I, kh, kw]; styles: [N, I]; one dtype (float32, bfloat16, float16).
        demodulate: compute d = rsqrt(sum (weight * s)^2 + 1e-8); else d = 1.
        write: also return the weights; False returns (None, d) (non-fused path).
        block: elements per loop step (power of two >= 16).
    Returns:
        (w [N, O, I, kh, kw] of weight's dtype = weight * s * d, or None; d fp32 [N, O]).
    """
    if weight.dim() != 4 or styles.dim() != 2 or styles.shape[1] != weight.shape[1]:
        raise ValueError(f"{OP}: weight must be [O, I, kh, kw] and styles [N, I], got "
                         f"{tuple(weight.shape)} and {tuple(styles.shape)}")
    if weight.dtype not in _DTYPES or styles.dtype != weight.dtype:
        raise TypeError(f"{OP}: weight and styles must share a float dtype, got "
                        f"{weight.dtype} and {styles.dtype}")
    if os.environ.get("TRITON_INTERPRET", "0") != "1" and weight.device.type != "cuda":
        raise TypeError(f"{OP}: weight is on {weight.device}; Triton kernels need CUDA tensors "
                        "(or TRITON_INTERPRET=1)")
    block = _BLOCK if block is None else int(block)
    if block < 16 or block & (block - 1):
        raise ValueError(f"{OP}: block must be a power of two >= 16, got {block}")
    c_out, c_in, kh, kw = weight.shape
    N = styles.shape[0]
    d = torch.empty((N, c_out), dtype=torch.float32, device=weight.device)
    out = (torch.empty((N, c_out, c_in, kh, kw), dtype=weight.dtype, device=weight.device)
           if write else d)
    if N * c_out == 0:
        return (out if write else None), d
    _modulate_kernel[(N * c_out,)](weight.contiguous(), styles.contiguous(), out, d, c_out, c_in,
                                   kh * kw, DEMOD=demodulate, WRITE=write, BLOCK=block)
    return (out if write else None), d


def modulated_conv2d_triton(x, weight, styles, noise, f, up, down, padding, demodulate,
                            flip_weight, fused_modconv):
    """modulated_conv2d with the Triton weight preparation; the rest as the reference.

    Args: as modulated_conv2d_reference (x [N, I, H, W], weight [O, I, kh, kw], styles
        [N, I], noise broadcastable to the output or None, f the resample filter or
        None, padding (x0, x1, y0, y1)).
    Returns:
        [N, O, H', W'] contiguous, x's dtype.
    """
    from facegen_rt.ops.modulated_conv2d import conv2d_resample_reference

    N, c_in, H, W = x.shape
    c_out, _, kh, kw = weight.shape
    if fused_modconv:
        w, _ = modulate_weights_triton(weight, styles.to(weight.dtype), demodulate)
        y = conv2d_resample_reference(x.reshape(1, N * c_in, H, W),
                                      w.reshape(N * c_out, c_in, kh, kw), f, up=up, down=down,
                                      padding=list(padding), groups=N, flip_weight=flip_weight)
        y = y.reshape(N, c_out, *y.shape[2:])
    else:
        y = conv2d_resample_reference(x * styles.reshape(N, c_in, 1, 1), weight, f, up=up,
                                      down=down, padding=list(padding), flip_weight=flip_weight)
        if demodulate:
            _, d = modulate_weights_triton(weight, styles, True, write=False)
            y = y * d.to(y.dtype).reshape(N, c_out, 1, 1)
    if noise is not None:
        y = y + noise
    return y.contiguous()
