"""Parts2Whole's shared self-attention, with target-only queries.

The seed concatenates the target tokens with N reference banks and runs
self-attention over all (N + 1) L tokens, then keeps the first L outputs. Only the
target queries matter, so this op takes them alone, plus the reference keys and
values (fixed across sampling steps: callers compute them once per request).

Masked-out reference tokens, default semantics (``exclude=False``), exactly as the
seed: the bank stores zeros there and SD's to_k / to_v have no bias, so such a token
has key = value = 0. It contributes exp(0 * scale - max) to the softmax denominator
and nothing to the numerator. The kernels never read those tokens; they add
``n_masked * exp(-max)`` to the denominator analytically.

``exclude=True`` is a different semantics: masked tokens are dropped from the softmax
entirely (as if the references had been cropped). It is not what the seed computes.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._backends import Backend, OpBackends, dtype_refusals
from ._checks import check_finite, check_like, check_tensor, nan_checks_enabled
from ._dispatch import call_op, eager_cpu_entry
from ._native import compiled, cpu_unavailable, triton_device_refusals, triton_unavailable

OP = "shared_self_attention"


def shared_self_attention_reference(q: torch.Tensor, k_self: torch.Tensor, v_self: torch.Tensor,
                                    k_ref: torch.Tensor, v_ref: torch.Tensor,
                                    ref_keep: torch.Tensor, scale: float,
                                    exclude: bool = False) -> torch.Tensor:
    """The seed's math for the L target queries.

    Args:
        q, k_self, v_self: [B, h, L, d] target tokens.
        k_ref, v_ref: [B, h, M, d] reference tokens (all N banks, concatenated).
        ref_keep: [B, M] bool; False marks a token outside the subject mask.
        scale: logit scale, d ** -0.5 in SD.
        exclude: drop masked tokens instead of counting them as zero keys.
    Returns:
        [B, h, L, d] contiguous, dtype of q.
    """
    keep = ref_keep[:, None, :, None]
    zero = torch.zeros((), dtype=k_ref.dtype, device=k_ref.device)
    k = torch.cat([k_self, torch.where(keep, k_ref, zero)], dim=2)
    v = torch.cat([v_self, torch.where(keep, v_ref, zero)], dim=2)
    sim = torch.einsum("bhld,bhmd->bhlm", q, k) * scale
    if exclude:
        key_keep = torch.cat([ref_keep.new_ones(ref_keep.shape[0], k_self.shape[2]), ref_keep], 1)
        sim = sim.masked_fill(~key_keep[:, None, None, :], float("-inf"))
    return torch.einsum("bhlm,bhmd->bhld", sim.softmax(dim=-1), v).contiguous()


def _cpu(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude):
    return compiled().shared_self_attention(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude)


def _triton(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude):
    from facegen_rt.kernels.shared_self_attention import shared_self_attention_triton

    return shared_self_attention_triton(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude)


_LOWP = (torch.float32, torch.bfloat16)
BACKENDS = OpBackends(OP, [
    Backend("cpu", _cpu, cpu_unavailable,
            lambda q, *a: dtype_refusals("q", q, _LOWP), devices=("cpu",)),
    Backend("triton", _triton, triton_unavailable,
            lambda q, ks, vs, kr, vr, keep, *a: (triton_device_refusals(q, ks, vs, kr, vr, keep)
                                                  + dtype_refusals("q", q, _LOWP)),
            devices=("cuda",)),
    Backend("reference", shared_self_attention_reference, devices=("cpu", "cuda")),
])


def _shared_self_attention_body(q: torch.Tensor, k_self: torch.Tensor, v_self: torch.Tensor,
                                k_ref: torch.Tensor, v_ref: torch.Tensor, ref_keep: torch.Tensor,
                                scale: float, exclude: bool, backend: str) -> torch.Tensor:
    if nan_checks_enabled():
        # Masked reference rows are never read, so only kept rows must be finite.
        rows = ref_keep[:, None].expand(k_ref.shape[:3])
        check_finite(OP, q=q, k_self=k_self, v_self=v_self, k_ref=k_ref[rows], v_ref=v_ref[rows])
    impl = BACKENDS.select(backend, q.device.type, q, k_self, v_self, k_ref, v_ref, ref_keep,
                           scale, exclude)
    return impl.run(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude)


# One graph node for compile and export; plain eager calls run the body directly
# (see _dispatch).
_shared_self_attention_op = torch.library.custom_op(
    "facegen::shared_self_attention", _shared_self_attention_body, mutates_args=())


@_shared_self_attention_op.register_fake
def _(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude, backend):
    return q.new_empty(q.shape)


def shared_self_attention(q: torch.Tensor, k_self: torch.Tensor, v_self: torch.Tensor,
                          k_ref: torch.Tensor, v_ref: torch.Tensor, ref_keep: torch.Tensor,
                          scale: Optional[float] = None, exclude: bool = False,
                          backend: Optional[str] = None) -> torch.Tensor:
    """Target-only shared self-attention; see the module docstring for the semantics.

    Args:
        q, k_self, v_self: [B, h, L, d], one dtype (float32, bfloat16, float64), one device.
        k_ref, v_ref: [B, h, M, d] reference keys and values (M = N * L_ref).
        ref_keep: [B, M] bool, True for tokens inside the subject mask.
        scale: logit scale; default d ** -0.5.
        exclude: drop masked tokens (not the seed's semantics; see module docstring).
        backend: force "cpu", "triton" or "reference"; None chooses automatically.
    Returns:
        [B, h, L, d] contiguous tensor of q's dtype.
    """
    entry = eager_cpu_entry(BACKENDS, backend, "shared_self_attention_eager",
                            (q, k_self, v_self, k_ref, v_ref, ref_keep))
    if entry is not None and (scale is None or type(scale) is float):
        out = entry(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, bool(exclude))
        if out is not None:
            return out
    for name, t in (("q", q), ("k_self", k_self), ("v_self", v_self), ("k_ref", k_ref),
                    ("v_ref", v_ref)):
        check_tensor(OP, name, t, 4)
    check_like(OP, "q", q, k_self=k_self, v_self=v_self, k_ref=k_ref, v_ref=v_ref)
    check_tensor(OP, "ref_keep", ref_keep, 2, (torch.bool,))
    B, h, L, d = q.shape
    M = k_ref.shape[2]
    for name, t in (("k_self", k_self), ("v_self", v_self)):
        if t.shape != (B, h, L, d):
            raise ValueError(f"{OP}: {name} must have shape {(B, h, L, d)} like q, got {tuple(t.shape)}")
    for name, t in (("k_ref", k_ref), ("v_ref", v_ref)):
        if t.shape != (B, h, M, d):
            raise ValueError(f"{OP}: {name} must have shape (B, h, M, d) = {(B, h, M, d)}, "
                             f"got {tuple(t.shape)}")
    if ref_keep.shape != (B, M):
        raise ValueError(f"{OP}: ref_keep must have shape (B, M) = {(B, M)}, got {tuple(ref_keep.shape)}")
    if ref_keep.device != q.device:
        raise TypeError(f"{OP}: ref_keep is on {ref_keep.device} but q is on {q.device}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    return call_op(_shared_self_attention_op, _shared_self_attention_body,
                   (q, k_self, v_self, k_ref, v_ref, ref_keep),
                   q, k_self, v_self, k_ref, v_ref, ref_keep, float(scale), bool(exclude),
                   backend or "")
