"""Triton shared self-attention (Parts2Whole), target queries only.

Flash-attention style, as in Triton's fused-attention tutorial: grid
(cdiv(L, BLOCK_M), B * h); each program keeps BLOCK_M queries in registers and runs
an online softmax (base 2, fp32 running max / denominator / accumulator) over key
tiles of BLOCK_N tokens: first the L self keys, then the M reference keys.

Masked reference tokens (ref_keep False):

* in a tile with at least one kept token, K and V are loaded with the keep mask, so
  a masked token reads as key = value = 0, exactly the seed's zeroed bank: its logit
  is 0 (set explicitly) and it adds to the denominator only. With ``exclude`` its
  logit is -inf instead and it drops out.
* a tile with no kept token is skipped without touching K or V. Its masked tokens
  (logit 0, value 0) are folded in analytically: the launcher counts them per batch
  (``n_skip``) and the program starts its online softmax from the state those tokens
  produce, running max 0 and denominator n_skip (each contributes exp(0 - 0) = 1),
  accumulator 0. Later tiles rescale that state like any other. With ``exclude`` the
  start state is empty.

The launcher computes the per-tile kept counts with torch on the device, so nothing
syncs with the host.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

OP = "shared_self_attention_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_D = 256
_LOG2E = 1.4426950408889634


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
def _online_step(s, v, m_i, l_i, acc, UPCAST: tl.constexpr):
    """Fold one key tile into the running softmax state.

    s: [BLOCK_M, BLOCK_N] fp32 logits in base-2 units, each row with a finite entry.
    v: [BLOCK_N, BLOCK_D] values. m_i, l_i: [BLOCK_M] running max and denominator.
    acc: [BLOCK_M, BLOCK_D] fp32 unnormalized output.
    """
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)  # 0 while m_i is still -inf
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, UPCAST)
    return m_new, l_i, acc


@triton.jit
def _shared_attn_kernel(
    Q,        # *q: [B, h, L, d] target queries (any strides)
    KS,       # *k_self: [B, h, L, d] target keys (any strides)
    VS,       # *v_self: [B, h, L, d] target values (any strides)
    KR,       # *k_ref: [B, h, M, d] reference keys; rows of masked tokens are never read
    VR,       # *v_ref: [B, h, M, d] reference values; likewise
    Keep,     # *uint8 [B, M]: ref_keep viewed as bytes (any strides)
    TileKept,  # *int32 [B, N_TILES] contiguous: kept tokens in each BLOCK_N reference tile
    NSkip,    # *int32 [B]: masked tokens inside tiles with no kept token
    Out,      # *out: [B, h, L, d], written here (dtype of q)
    qk_scale,  # scale * log2(e): logits go straight to base 2
    H, L, M, D, N_TILES,  # heads, queries, reference tokens, head dim, cdiv(M, BLOCK_N)
    sqb, sqh, sql, sqd,   # q strides (elements)
    sksb, sksh, sksl, sksd,  # k_self strides
    svsb, svsh, svsl, svsd,  # v_self strides
    skrb, skrh, skrm, skrd,  # k_ref strides
    svrb, svrh, svrm, svrd,  # v_ref strides
    sgb, sgm,               # keep strides
    sob, soh, sol, sod,     # out strides
    EXCLUDE: tl.constexpr,  # masked tokens leave the softmax instead of acting as zero keys
    BLOCK_M: tl.constexpr,  # queries per program
    BLOCK_N: tl.constexpr,  # keys per tile (the launcher's tile counts use the same value)
    BLOCK_D: tl.constexpr,  # d padded to a power of two >= 16
    UPCAST: tl.constexpr,   # see _mm
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    hh = (pid_bh % H).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_in = dims < D

    q = tl.load(Q + b * sqb + hh * sqh + rows[:, None] * sql + dims[None, :] * sqd,
                mask=(rows < L)[:, None] & dim_in[None, :], other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    if EXCLUDE:
        m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    else:
        # Start from the skipped zero-key tokens: max 0, denominator n_skip.
        n_skip = tl.load(NSkip + b).to(tl.float32)
        m_i = tl.full((BLOCK_M,), 0.0, dtype=tl.float32)
        m_i = tl.where(n_skip > 0, m_i, float("-inf"))
        l_i = tl.zeros((BLOCK_M,), dtype=tl.float32) + n_skip

    # Self keys. L >= 1, so each tile (the last one included) has a valid column.
    ks_base = KS + b * sksb + hh * sksh
    vs_base = VS + b * svsb + hh * svsh
    for start in range(0, L, BLOCK_N):
        keys = start + cols
        key_in = keys < L
        tile_mask = key_in[:, None] & dim_in[None, :]
        k = tl.load(ks_base + keys[:, None] * sksl + dims[None, :] * sksd, mask=tile_mask, other=0.0)
        v = tl.load(vs_base + keys[:, None] * svsl + dims[None, :] * svsd, mask=tile_mask, other=0.0)
        s = _mm(q, tl.trans(k), UPCAST) * qk_scale
        s = tl.where(key_in[None, :], s, float("-inf"))
        m_i, l_i, acc = _online_step(s, v, m_i, l_i, acc, UPCAST)

    # Reference keys, skipping tiles without a kept token.
    kr_base = KR + b * skrb + hh * skrh
    vr_base = VR + b * svrb + hh * svrh
    for tile in range(0, N_TILES):
        kept = tl.load(TileKept + b * N_TILES + tile)
        if kept > 0:
            keys = tile * BLOCK_N + cols
            key_in = keys < M
            keep = tl.load(Keep + b * sgb + keys * sgm, mask=key_in, other=0) != 0
            tile_mask = keep[:, None] & dim_in[None, :]
            k = tl.load(kr_base + keys[:, None] * skrm + dims[None, :] * skrd, mask=tile_mask, other=0.0)
            v = tl.load(vr_base + keys[:, None] * svrm + dims[None, :] * svrd, mask=tile_mask, other=0.0)
            s = _mm(q, tl.trans(k), UPCAST) * qk_scale
            if EXCLUDE:
                s = tl.where(keep[None, :], s, float("-inf"))
            else:
                s = tl.where(keep[None, :], s, 0.0)  # the seed's zero key: logit exactly 0
                s = tl.where(key_in[None, :], s, float("-inf"))
            m_i, l_i, acc = _online_step(s, v, m_i, l_i, acc, UPCAST)

    out = acc / l_i[:, None]
    tl.store(Out + b * sob + hh * soh + rows[:, None] * sol + dims[None, :] * sod,
             out.to(Out.dtype.element_ty), mask=(rows < L)[:, None] & dim_in[None, :])


def _check_device(name: str, t: torch.Tensor) -> None:
    if os.environ.get("TRITON_INTERPRET", "0") != "1" and t.device.type != "cuda":
        raise TypeError(f"{OP}: {name} is on {t.device}; Triton kernels need CUDA tensors "
                        "(or TRITON_INTERPRET=1)")


def _default_blocks(dtype: torch.dtype, block_d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for a head dim padded to block_d.

    Chosen from the register use of sm_90 builds (cuobjdump --dump-resource-usage):
    16-bit inputs compile without spills at these sizes. fp32 operands take three
    TF32 products each, hence smaller tiles; at d > 64 fp32 still spills a little.
    """
    if dtype == torch.float32:
        return (64 if block_d <= 128 else 32), (32 if block_d <= 64 else 16), (4 if block_d <= 128 else 8)
    return 64, (64 if block_d <= 64 else 32), (4 if block_d <= 128 else 8)


def _tile_counts(ref_keep: torch.Tensor, block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(b, tile) kept counts [B, n_tiles] and per-b masked tokens in empty tiles [B].

    Both int32 on ref_keep's device, computed without a host sync.
    """
    B, M = ref_keep.shape
    n_tiles = triton.cdiv(M, block_n)
    keep = F.pad(ref_keep.to(torch.int32), (0, n_tiles * block_n - M))
    kept = keep.view(B, n_tiles, block_n).sum(-1, dtype=torch.int32)
    tile_len = (M - torch.arange(n_tiles, device=ref_keep.device) * block_n).clamp(max=block_n)
    n_skip = torch.where(kept == 0, tile_len.to(torch.int32), 0).sum(-1, dtype=torch.int32)
    return kept.contiguous(), n_skip.contiguous()


def shared_self_attention_triton(q: torch.Tensor, k_self: torch.Tensor, v_self: torch.Tensor,
                                 k_ref: torch.Tensor, v_ref: torch.Tensor, ref_keep: torch.Tensor,
                                 scale: float, exclude: bool, *, block_m: int | None = None,
                                 block_n: int | None = None) -> torch.Tensor:
    """Target-only shared self-attention on the GPU (or the Triton interpreter).

    Args:
        q, k_self, v_self: [B, h, L, d] float32, bfloat16 or float16; d <= 256.
        k_ref, v_ref: [B, h, M, d] reference keys/values, same dtype and device.
        ref_keep: [B, M] bool, False for tokens outside the subject mask.
        scale: logit scale.
        exclude: drop masked tokens instead of treating them as zero keys.
        block_m, block_n: queries per program / keys per tile (powers of two >= 16);
            defaults from :func:`_default_blocks`. Tests pass 16/32.
    Inputs may have any strides (views are read in place, nothing is copied).
    Returns:
        [B, h, L, d] contiguous tensor of q's dtype.
    """
    named = (("q", q), ("k_self", k_self), ("v_self", v_self), ("k_ref", k_ref), ("v_ref", v_ref))
    for name, t in named + (("ref_keep", ref_keep),):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != q.device:
            raise TypeError(f"{OP}: {name} is on {t.device} but q is on {q.device}")
    for name, t in named:
        if t.dim() != 4:
            raise ValueError(f"{OP}: {name} must have 4 dims, got shape {tuple(t.shape)}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"{OP}: q has dtype {q.dtype}; expected float32, bfloat16 or float16")
    for name, t in named[1:]:
        if t.dtype != q.dtype:
            raise TypeError(f"{OP}: {name} has dtype {t.dtype} but q has {q.dtype}")
    if ref_keep.dtype != torch.bool:
        raise TypeError(f"{OP}: ref_keep has dtype {ref_keep.dtype}; expected bool")
    _check_device("q", q)
    B, H, L, D = q.shape
    M = k_ref.shape[2]
    for name, t in named[1:3]:
        if tuple(t.shape) != (B, H, L, D):
            raise ValueError(f"{OP}: {name} must have q's shape {(B, H, L, D)}, got {tuple(t.shape)}")
    for name, t in named[3:]:
        if tuple(t.shape) != (B, H, M, D):
            raise ValueError(f"{OP}: {name} must have shape (B, h, M, d) = {(B, H, M, D)}, "
                             f"got {tuple(t.shape)}")
    if tuple(ref_keep.shape) != (B, M):
        raise ValueError(f"{OP}: ref_keep must have shape (B, M) = {(B, M)}, got {tuple(ref_keep.shape)}")
    if D > _MAX_D:
        raise ValueError(f"{OP}: q has head dim d = {D}; d <= {_MAX_D} is supported")
    if B * H > 65535:
        raise ValueError(f"{OP}: B * h = {B * H} exceeds the grid limit 65535")
    block_d = max(16, triton.next_power_of_2(D))
    default_m, default_n, num_warps = _default_blocks(q.dtype, block_d)
    block_m = default_m if block_m is None else int(block_m)
    block_n = default_n if block_n is None else int(block_n)
    for name, val in (("block_m", block_m), ("block_n", block_n)):
        if val < 16 or val & (val - 1):
            raise ValueError(f"{OP}: {name} must be a power of two >= 16, got {val}")

    out = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    kept, n_skip = _tile_counts(ref_keep, block_n)
    n_tiles = kept.shape[1]
    if M == 0:
        # Nothing to read from the reference tensors; hand the kernel valid pointers.
        k_ref, v_ref = k_self, v_self
        kept = torch.zeros((B, 1), dtype=torch.int32, device=q.device)
        keep_bytes = kept
    else:
        keep_bytes = ref_keep.view(torch.uint8)
    upcast = os.environ.get("TRITON_INTERPRET", "0") == "1" and q.dtype != torch.float32
    grid = (triton.cdiv(L, block_m), B * H)
    _shared_attn_kernel[grid](
        q, k_self, v_self, k_ref, v_ref, keep_bytes, kept, n_skip, out,
        float(scale) * _LOG2E, H, L, M, D, n_tiles,
        *q.stride(), *k_self.stride(), *v_self.stride(), *k_ref.stride(), *v_ref.stride(),
        *keep_bytes.stride(), *out.stride(),
        EXCLUDE=bool(exclude), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        UPCAST=upcast, num_warps=num_warps)
    return out
