"""The fused op library. Each op: a reference, a C++ CPU kernel, a Triton kernel,
one torch.library custom op, and a dispatcher (see _backends for the policy)."""

from ._backends import BACKEND_ENV, BackendUnavailable
from ._checks import nan_checks, set_nan_checks
from .masked_cross_attention import masked_cross_attention, masked_cross_attention_reference
from .shared_self_attention import shared_self_attention, shared_self_attention_reference
from .spade_norm import spade_norm, spade_norm_reference

OPS = ("spade_norm", "masked_cross_attention", "shared_self_attention")

__all__ = [
    "BACKEND_ENV", "BackendUnavailable", "OPS", "masked_cross_attention",
    "masked_cross_attention_reference", "nan_checks", "set_nan_checks", "shared_self_attention",
    "shared_self_attention_reference", "spade_norm", "spade_norm_reference",
]
