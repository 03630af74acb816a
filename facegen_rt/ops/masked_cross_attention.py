"""SCA-DM's masked cross-attention from image tokens to per-region style tokens.

The seed multiplies the logits by the mask and then sets every logit that is exactly
zero to -finfo.max before the softmax over the R region tokens. Two consequences the
kernels use (both exact, see :func:`onehot_row_is_exact`):

* Mask row with exactly one nonzero entry (a one-hot semantic mask): every other
  logit becomes -max, so the softmax is one-hot and the output is ``v[region]``: a
  gather, unless the one surviving logit is itself exactly 0.0 (the quirk: then it
  is masked as well, the whole row is -max and the output is mean(V)) or NaN.
  The kernels compute that single logit to decide, so the fast path is exact.
* Mask row of zeros (the unconditional branch): all logits are -max, the softmax is
  uniform, and the output is mean(V) over the R tokens.
Rows with several nonzero entries run the general softmax.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._backends import Backend, OpBackends, dtype_refusals
from ._checks import check_finite, check_like, check_tensor
from ._dispatch import call_op, eager_cpu_entry
from ._native import compiled, cpu_unavailable, triton_device_refusals, triton_unavailable

OP = "masked_cross_attention"


def masked_cross_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     mask: torch.Tensor, scale: float) -> torch.Tensor:
    """The seed's formulation (SCA-DM CrossAttention with a mask), per head.

    Args:
        q: [B, h, L, d] image-token queries.
        k, v: [B, h, R, d] region-token keys and values.
        mask: [B, L, R] float; one-hot per pixel in SCA-DM, shared by all heads.
        scale: logit scale, d ** -0.5 in SCA-DM.
    Returns:
        [B, h, L, d] contiguous, dtype of q.
    """
    sim = torch.einsum("bhld,bhrd->bhlr", q, k) * scale
    sim = sim * mask[:, None].to(sim.dtype)
    sim = sim.masked_fill(sim == 0, -torch.finfo(sim.dtype).max)
    return torch.einsum("bhlr,bhrd->bhld", sim.softmax(dim=-1), v).contiguous()


def onehot_row_is_exact(mask_row: torch.Tensor) -> bool:
    """True when the gather shortcut applies to one [R] mask row.

    It applies when the row has at most one nonzero entry. The kernels still compute
    the one surviving logit and return mean(V) when it is exactly 0.0, as the seed does.
    """
    return int((mask_row != 0).sum()) <= 1


def _cpu(q, k, v, mask, scale):
    return compiled().masked_cross_attention(q, k, v, mask, scale)


def _triton(q, k, v, mask, scale):
    from facegen_rt.kernels.masked_cross_attention import masked_cross_attention_triton

    return masked_cross_attention_triton(q, k, v, mask, scale)


_LOWP = (torch.float32, torch.bfloat16)
BACKENDS = OpBackends(OP, [
    Backend("cpu", _cpu, cpu_unavailable,
            lambda q, *a: dtype_refusals("q", q, _LOWP), devices=("cpu",)),
    Backend("triton", _triton, triton_unavailable,
            lambda q, k, v, m, s: triton_device_refusals(q, k, v, m) + dtype_refusals("q", q, _LOWP),
            devices=("cuda",)),
    Backend("reference", masked_cross_attention_reference, devices=("cpu", "cuda")),
])


def _masked_cross_attention_body(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    check_finite(OP, q=q, k=k, v=v, mask=mask)
    impl = BACKENDS.select(backend, q.device.type, q, k, v, mask, scale)
    return impl.run(q, k, v, mask, scale)


# One graph node for compile and export; plain eager calls run the body directly
# (see _dispatch).
_masked_cross_attention_op = torch.library.custom_op(
    "facegen::masked_cross_attention", _masked_cross_attention_body, mutates_args=())


@_masked_cross_attention_op.register_fake
def _(q, k, v, mask, scale, backend):
    return q.new_empty(q.shape)


def masked_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           mask: torch.Tensor, scale: Optional[float] = None,
                           backend: Optional[str] = None) -> torch.Tensor:
    """Masked cross-attention with SCA-DM semantics (see the module docstring).

    Args:
        q: [B, h, L, d]; k, v: [B, h, R, d]; all one dtype (float32, bfloat16, float64).
        mask: [B, L, R], float of any precision or bool; converted to q's dtype.
        scale: logit scale; default d ** -0.5.
        backend: force "cpu", "triton" or "reference"; None chooses automatically.
    Returns:
        [B, h, L, d] contiguous tensor of q's dtype.
    """
    entry = eager_cpu_entry(BACKENDS, backend, "masked_cross_attention_eager", (q, k, v, mask))
    if entry is not None and (scale is None or type(scale) is float):
        out = entry(q, k, v, mask, scale)
        if out is not None:
            return out
    check_tensor(OP, "q", q, 4)
    check_tensor(OP, "k", k, 4)
    check_tensor(OP, "v", v, 4)
    check_like(OP, "q", q, k=k, v=v)
    check_tensor(OP, "mask", mask, 3,
                 (torch.bool, torch.float32, torch.bfloat16, torch.float16, torch.float64))
    B, h, L, d = q.shape
    R = k.shape[2]
    if k.shape != (B, h, R, d) or v.shape != (B, h, R, d):
        raise ValueError(
            f"{OP}: k and v must have shape (B, h, R, d) = ({B}, {h}, R, {d}) matching q; "
            f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if R == 0:
        raise ValueError(f"{OP}: k has no tokens (R = 0)")
    if mask.shape != (B, L, R):
        raise ValueError(f"{OP}: mask must have shape (B, L, R) = ({B}, {L}, {R}), "
                         f"got {tuple(mask.shape)}")
    if mask.device != q.device:
        raise TypeError(f"{OP}: mask is on {mask.device} but q is on {q.device}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if mask.dtype != q.dtype:  # .to() of the same dtype returns mask, at ~2 us a call
        mask = mask.to(q.dtype)
    return call_op(_masked_cross_attention_op, _masked_cross_attention_body, (q, k, v, mask),
                   q, k, v, mask, float(scale), backend or "")
