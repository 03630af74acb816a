"""The fused op library. Each op: a reference, a C++ CPU kernel, a Triton kernel,
one torch.library custom op, and a dispatcher (see _backends for the policy)."""

from ._backends import BACKEND_ENV, BackendUnavailable, forced_backend
from ._checks import nan_checks, set_nan_checks
from .bias_act import bias_act, bias_act_reference
from .masked_cross_attention import masked_cross_attention, masked_cross_attention_reference
from .modulated_conv2d import modulated_conv2d, modulated_conv2d_reference
from .shared_self_attention import shared_self_attention, shared_self_attention_reference
from .spade_norm import spade_norm, spade_norm_reference
from .upfirdn2d import (downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_reference,
                        upsample2d)

# Diffusion ops (SCA-DM, Parts2Whole), then StyleGAN2 ops (DragGAN, TediGAN).
OPS = ("spade_norm", "masked_cross_attention", "shared_self_attention",
       "modulated_conv2d", "bias_act", "upfirdn2d")

__all__ = [
    "BACKEND_ENV", "BackendUnavailable", "OPS", "forced_backend", "bias_act", "bias_act_reference",
    "downsample2d", "filter2d", "modulated_conv2d", "modulated_conv2d_reference",
    "setup_filter", "upfirdn2d", "upfirdn2d_reference", "upsample2d", "masked_cross_attention",
    "masked_cross_attention_reference", "nan_checks", "set_nan_checks", "shared_self_attention",
    "shared_self_attention_reference", "spade_norm", "spade_norm_reference",
]
