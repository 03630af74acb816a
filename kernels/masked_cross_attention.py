"""Triton masked cross-attention with SCA-DM semantics.

Grid (cdiv(L, BLOCK_L), B * h). Each program takes BLOCK_L queries of one head and
walks the R region tokens in chunks of BLOCK_R (R is small, one token per semantic
region, so usually one chunk) with an online softmax in fp32:

    s = (q . k) * scale * mask          tl.dot with fp32 accumulation
    s = -FLT_MAX where s == 0           the seed's masked_fill(sim == 0, -max)
    s = -inf in padded columns r >= R   so they drop out of the softmax
    out = softmax(s) @ v

A row whose mask is all zero becomes all -FLT_MAX: every exp(s - max) is 1, the
softmax is uniform and the output is mean(V), as in the seed; a logit that is
exactly 0 is masked, also as in the seed. Every chunk holds at least one column
r < R, so the running max is finite after the first chunk. d is padded to BLOCK_D
and R to a multiple of BLOCK_R (powers of two, at least 16 for tl.dot) with masked
loads.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

OP = "masked_cross_attention_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_D = 256  # head dimension
# The seed fills masked logits with -torch.finfo(float32).max: the lowest finite float32.
_FP32_LOWEST = tl.constexpr(-3.4028234663852886e38)


@triton.jit
def _mm(a, b, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation.

    fp32 operands use 3xTF32 (each operand split into a TF32 high part and a TF32
    residual, three tensor-core products): close to fp32 accuracy, where plain TF32
    (the default) costs ~1e-3 relative error and "ieee" falls back to FMA loops that
    spill registers at these tile sizes.

    UPCAST converts 16-bit operands to fp32 first. The launcher sets it under
    TRITON_INTERPRET=1 only: the interpreter's tl.dot multiplies bfloat16 bit patterns
    as integers. Products of 16-bit floats are exact in fp32, so the result matches
    the GPU's 16-bit tensor-core dot with fp32 accumulation.
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision="tf32x3")
    else:
        return tl.dot(a, b)


@triton.jit
def _masked_xattn_kernel(
    Q,     # *q: [B, h, L, d] queries (any strides)
    K,     # *k: [B, h, R, d] region keys (any strides)
    V,     # *v: [B, h, R, d] region values (any strides)
    Mask,  # *mask: [B, L, R], shared by the h heads, any float dtype (any strides)
    Out,   # *out: [B, h, L, d], written here (dtype of q)
    scale,  # logit scale
    H, L, R, D,  # heads, queries, region tokens, head dim
    sqb, sqh, sql, sqd,  # q strides (elements)
    skb, skh, skr, skd,  # k strides
    svb, svh, svr, svd,  # v strides
    smb, sml, smr,       # mask strides
    sob, soh, sol, sod,  # out strides
    BLOCK_L: tl.constexpr,  # queries per program
    BLOCK_R: tl.constexpr,  # region tokens per chunk (power of two >= 16)
    BLOCK_D: tl.constexpr,  # d padded to a power of two >= 16
    UPCAST: tl.constexpr,   # see _mm
):
    pid_l = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    hh = (pid_bh % H).to(tl.int64)
    rows = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    cols = tl.arange(0, BLOCK_R)
    dims = tl.arange(0, BLOCK_D)
    row_in = rows < L
    dim_in = dims < D

    q = tl.load(Q + b * sqb + hh * sqh + rows[:, None] * sql + dims[None, :] * sqd,
                mask=row_in[:, None] & dim_in[None, :], other=0.0)
    m = tl.full((BLOCK_L,), float("-inf"), dtype=tl.float32)  # running max
    denom = tl.zeros((BLOCK_L,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    k_base = K + b * skb + hh * skh
    v_base = V + b * svb + hh * svh
    mask_base = Mask + b * smb + rows[:, None] * sml
    for r0 in range(0, R, BLOCK_R):
        keys = r0 + cols
        key_in = keys < R
        kv_mask = key_in[:, None] & dim_in[None, :]
        k = tl.load(k_base + keys[:, None] * skr + dims[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + keys[:, None] * svr + dims[None, :] * svd, mask=kv_mask, other=0.0)
        w = tl.load(mask_base + keys[None, :] * smr, mask=row_in[:, None] & key_in[None, :],
                    other=0.0).to(tl.float32)
        # Same order of operations as the seed: (q . k) * scale, then * mask.
        s = _mm(q, tl.trans(k), UPCAST) * scale * w
        s = tl.where(s == 0.0, _FP32_LOWEST, s)
        s = tl.where(key_in[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)  # 0 on the first chunk (m = -inf, m_new finite)
        p = tl.exp(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, UPCAST)
        m = m_new
    out = acc / denom[:, None]
    tl.store(Out + b * sob + hh * soh + rows[:, None] * sol + dims[None, :] * sod,
             out.to(Out.dtype.element_ty), mask=row_in[:, None] & dim_in[None, :])


def _check_device(name: str, t: torch.Tensor) -> None:
    if os.environ.get("TRITON_INTERPRET", "0") != "1" and t.device.type != "cuda":
        raise TypeError(f"{OP}: {name} is on {t.device}; Triton kernels need CUDA tensors "
                        "(or TRITON_INTERPRET=1)")


def _default_blocks(dtype: torch.dtype, block_d: int, R: int) -> tuple[int, int, int]:
    """(BLOCK_L, BLOCK_R, num_warps) for a head dim padded to block_d.

    Chosen from the register use of sm_90 builds (cuobjdump --dump-resource-usage):
    16-bit inputs compile without spills at these sizes. fp32 operands take three
    TF32 products each, hence smaller tiles; at d > 128 fp32 still spills a little.
    """
    block_r = max(16, triton.next_power_of_2(R))
    if dtype == torch.float32:
        block_l = 64 if block_d <= 64 else 32 if block_d <= 128 else 16
        return block_l, min(block_r, 32 if block_d <= 128 else 16), 4
    return 64, min(block_r, 32), 4 if block_d <= 128 else 8


def masked_cross_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                  mask: torch.Tensor, scale: float, *,
                                  block_l: int | None = None,
                                  block_r: int | None = None) -> torch.Tensor:
    """Masked cross-attention on the GPU (or the Triton interpreter).

    Args:
        q: [B, h, L, d] float32, bfloat16 or float16.
        k, v: [B, h, R, d], same dtype and device as q; R >= 1, d <= 256.
        mask: [B, L, R], float (any precision) or bool, same device; shared by heads.
        scale: logit scale.
        block_l, block_r: queries per program and region tokens per chunk (powers
            of two >= 16); defaults from :func:`_default_blocks`. Tests pass small
            values to cover several query blocks and chunks.
    Inputs may have any strides (views are read in place, nothing is copied).
    Returns:
        [B, h, L, d] contiguous tensor of q's dtype.
    """
    for name, t, nd in (("q", q, 4), ("k", k, 4), ("v", v, 4), ("mask", mask, 3)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != nd:
            raise ValueError(f"{OP}: {name} must have {nd} dims, got shape {tuple(t.shape)}")
        if t.device != q.device:
            raise TypeError(f"{OP}: {name} is on {t.device} but q is on {q.device}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"{OP}: q has dtype {q.dtype}; expected float32, bfloat16 or float16")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{OP}: {name} has dtype {t.dtype} but q has {q.dtype}")
    if mask.dtype == torch.bool:
        mask = mask.to(q.dtype)
    elif not mask.is_floating_point():
        raise TypeError(f"{OP}: mask has dtype {mask.dtype}; expected bool or a float dtype")
    _check_device("q", q)
    B, H, L, D = q.shape
    R = k.shape[2]
    if tuple(k.shape) != (B, H, R, D) or tuple(v.shape) != (B, H, R, D):
        raise ValueError(f"{OP}: k and v must have shape (B, h, R, d) = ({B}, {H}, R, {D}); "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if R < 1:
        raise ValueError(f"{OP}: k has no region tokens (R = 0)")
    if D > _MAX_D:
        raise ValueError(f"{OP}: q has head dim d = {D}; d <= {_MAX_D} is supported")
    if tuple(mask.shape) != (B, L, R):
        raise ValueError(f"{OP}: mask must have shape (B, L, R) = ({B}, {L}, {R}), "
                         f"got {tuple(mask.shape)}")

    out = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    block_d = max(16, triton.next_power_of_2(D))
    default_l, default_r, num_warps = _default_blocks(q.dtype, block_d, R)
    block_l = default_l if block_l is None else int(block_l)
    block_r = default_r if block_r is None else int(block_r)
    for name, val in (("block_l", block_l), ("block_r", block_r)):
        if val < 16 or val & (val - 1):
            raise ValueError(f"{OP}: {name} must be a power of two >= 16, got {val}")
    if B * H > 65535:
        raise ValueError(f"{OP}: B * h = {B * H} exceeds the grid limit 65535")
    upcast = os.environ.get("TRITON_INTERPRET", "0") == "1" and q.dtype != torch.float32
    grid = (triton.cdiv(L, block_l), B * H)
    _masked_xattn_kernel[grid](
        q, k, v, mask, out, float(scale), H, L, R, D,
        *q.stride(), *k.stride(), *v.stride(), *mask.stride(), *out.stride(),
        BLOCK_L=block_l, BLOCK_R=block_r, BLOCK_D=block_d, UPCAST=upcast,
        num_warps=num_warps)
    return out
