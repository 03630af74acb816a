"""Triton SPADE normalization: ``act(GroupNorm(x) * (1 + gamma) + beta)``.

Two kernels, in the manner of Triton's layer-norm tutorial:

1. ``_spade_stats_kernel``: grid (B * groups, SPLIT). Each program reduces one
   contiguous slice of one group (a group of a contiguous [B, C, H, W] tensor is the
   contiguous run of C / groups * H * W elements) to Welford partials
   (count, mean, M2) in fp32. Chunks of BLOCK elements are centred on their own
   mean and merged with Chan's formula, so there is no sum-of-squares cancellation.
   SPLIT > 1 spreads a large group over several programs, so B * groups (often 64)
   programs do not leave most of the GPU idle.
2. ``_spade_apply_kernel``: grid (cdiv(group size, BLOCK), B * groups). Each program
   merges its group's SPLIT partials (a handful of scalars), then streams x, gamma
   and beta once and writes ``(x - mean) * rstd * (1 + gamma) + beta``, optionally
   followed by SiLU. All math is fp32; the store rounds to x's dtype.

x is read twice in total (statistics, apply), gamma and beta once, out written once.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

OP = "spade_norm_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_STATS_BLOCK = 2048  # elements per statistics chunk (power of two)
_APPLY_BLOCK = 1024  # elements per apply program (power of two)
_MAX_SPLIT = 16      # most programs one group's statistics are spread over


@triton.jit
def _spade_stats_kernel(
    X,        # *x: contiguous [B, C, H, W]; group r is elements [r * N, (r + 1) * N)
    Partial,  # *fp32 [B * groups, SPLIT, 3]: (count, mean, M2) of each slice, written here
    N,        # elements per group: C / groups * H * W
    SPAN,     # elements per slice, a multiple of BLOCK; slice s covers [s * SPAN, (s + 1) * SPAN)
    SPLIT: tl.constexpr,  # slices per group
    BLOCK: tl.constexpr,  # elements per chunk
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    base = X + row.to(tl.int64) * N
    lo = split * SPAN
    hi = tl.minimum(lo + SPAN, N)
    cols = tl.arange(0, BLOCK)
    count = tl.zeros((), dtype=tl.float32)
    mean = tl.zeros((), dtype=tl.float32)
    m2 = tl.zeros((), dtype=tl.float32)
    for start in range(lo, hi, BLOCK):
        idx = start + cols
        inside = idx < hi
        x = tl.load(base + idx, mask=inside, other=0.0).to(tl.float32)
        n_chunk = tl.minimum(hi - start, BLOCK).to(tl.float32)
        chunk_mean = tl.sum(x, axis=0) / n_chunk
        centred = tl.where(inside, x - chunk_mean, 0.0)
        chunk_m2 = tl.sum(centred * centred, axis=0)
        # Chan et al.: merge (count, mean, m2) with the chunk's (n_chunk, chunk_mean, chunk_m2).
        total = count + n_chunk
        delta = chunk_mean - mean
        mean += delta * (n_chunk / total)
        m2 += chunk_m2 + delta * delta * (count * (n_chunk / total))
        count = total
    out = Partial + (row * SPLIT + split) * 3
    tl.store(out, count)
    tl.store(out + 1, mean)
    tl.store(out + 2, m2)


@triton.jit
def _spade_apply_kernel(
    X,        # *x: contiguous [B, C, H, W]
    Gamma,    # *gamma: contiguous, same shape and dtype as x
    Beta,     # *beta: contiguous, same shape and dtype as x
    Out,      # *out: contiguous, same shape and dtype as x, written here
    Partial,  # *fp32 [B * groups, SPLIT, 3]: the statistics kernel's slices
    N,        # elements per group
    eps,      # GroupNorm epsilon
    SPLIT: tl.constexpr,  # slices per group (power of two)
    BLOCK: tl.constexpr,  # elements per program
    SILU: tl.constexpr,   # apply SiLU after the modulation
):
    block = tl.program_id(0)
    row = tl.program_id(1)
    # Merge the group's slices: exact parallel Welford, all in fp32.
    part = Partial + row * SPLIT * 3 + tl.arange(0, SPLIT) * 3
    counts = tl.load(part)
    means = tl.load(part + 1)
    m2s = tl.load(part + 2)
    n = tl.sum(counts, axis=0)
    mean = tl.sum(counts * means, axis=0) / n
    dev = means - mean
    var = tl.sum(m2s + counts * dev * dev, axis=0) / n
    rstd = 1.0 / tl.sqrt(var + eps)

    idx = block * BLOCK + tl.arange(0, BLOCK)
    inside = idx < N
    offs = row.to(tl.int64) * N + idx
    x = tl.load(X + offs, mask=inside, other=0.0).to(tl.float32)
    g = tl.load(Gamma + offs, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(Beta + offs, mask=inside, other=0.0).to(tl.float32)
    y = (x - mean) * rstd * (1.0 + g) + b
    if SILU:
        # sigmoid from exp(-|y|) <= 1: never overflows (the interpreter warns on exp overflow).
        e = tl.exp(-tl.abs(y))
        y = y * tl.where(y >= 0, 1.0, e) / (1.0 + e)
    tl.store(Out + offs, y.to(Out.dtype.element_ty), mask=inside)


def _check_device(name: str, t: torch.Tensor) -> None:
    if os.environ.get("TRITON_INTERPRET", "0") != "1" and t.device.type != "cuda":
        raise TypeError(f"{OP}: {name} is on {t.device}; Triton kernels need CUDA tensors "
                        "(or TRITON_INTERPRET=1)")


def _pow2_at_least(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(int(n), 1)))


def spade_norm_triton(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int,
                      eps: float, act: str, *, block: int | None = None,
                      split: int | None = None) -> torch.Tensor:
    """Fused SPADE normalization on the GPU (or the Triton interpreter).

    Args:
        x: [B, C, H, W] float32, bfloat16 or float16 features.
        gamma, beta: [B, C, H, W], same dtype and device as x. Any strides: the
            launcher makes x, gamma and beta contiguous (a copy only where needed).
        groups: GroupNorm groups, a positive divisor of C.
        eps: GroupNorm epsilon, > 0.
        act: "" (none) or "silu".
        block: elements per apply program (power of two >= 16); default 1024. Tests
            use small values to cover several programs per group.
        split: programs per group for the statistics (power of two); default grows
            with the group size up to 16.
    Returns:
        [B, C, H, W] contiguous tensor of x's dtype.
    """
    for name, t in (("x", x), ("gamma", gamma), ("beta", beta)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{OP}: {name} must be 4-D [B, C, H, W], got shape {tuple(t.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{OP}: x has dtype {x.dtype}; expected float32, bfloat16 or float16")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.dtype != x.dtype:
            raise TypeError(f"{OP}: {name} has dtype {t.dtype} but x has {x.dtype}")
        if t.device != x.device:
            raise TypeError(f"{OP}: {name} is on {t.device} but x is on {x.device}")
        if t.shape != x.shape:
            raise ValueError(f"{OP}: {name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    _check_device("x", x)
    B, C, H, W = x.shape
    if not isinstance(groups, int) or groups <= 0 or C % groups:
        raise ValueError(f"{OP}: groups={groups!r} must be a positive divisor of C={C}")
    if not eps > 0:
        raise ValueError(f"{OP}: eps must be positive, got {eps}")
    if act not in ("", "silu"):
        raise ValueError(f"{OP}: act must be '' or 'silu', got {act!r}")
    apply_block = _APPLY_BLOCK if block is None else int(block)
    if apply_block < 16 or apply_block & (apply_block - 1):
        raise ValueError(f"{OP}: block must be a power of two >= 16, got {block}")

    out = torch.empty((B, C, H, W), dtype=x.dtype, device=x.device)
    n = (C // groups) * H * W
    rows = B * groups
    if out.numel() == 0:
        return out
    if n >= 2**31:
        raise ValueError(f"{OP}: a group of x holds {n} elements; at most 2**31 - 1 are supported")
    x, gamma, beta = x.contiguous(), gamma.contiguous(), beta.contiguous()

    stats_block = min(_STATS_BLOCK, _pow2_at_least(n, 16))
    if split is None:
        split = min(_MAX_SPLIT, _pow2_at_least(triton.cdiv(n, 4 * stats_block)))
    elif split < 1 or split & (split - 1):
        raise ValueError(f"{OP}: split must be a power of two >= 1, got {split}")
    span = triton.cdiv(triton.cdiv(n, split), stats_block) * stats_block
    partial = torch.empty((rows, split, 3), dtype=torch.float32, device=x.device)
    _spade_stats_kernel[(rows, split)](x, partial, n, span, SPLIT=split, BLOCK=stats_block)
    _spade_apply_kernel[(triton.cdiv(n, apply_block), rows)](
        x, gamma, beta, out, partial, n, float(eps),
        SPLIT=split, BLOCK=apply_block, SILU=act == "silu")
    return out
