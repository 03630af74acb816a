"""Classifier-free guidance wrappers: turn conditional/unconditional denoisers into one
``model_fn(x, t) -> eps`` for the samplers.

    eps = eps_u + s * (eps_c - eps_u)

as SCA-DM's sampler does (``unconditional_guidance_scale``; s = 1 is the plain
conditional model, s = 0 the unconditional one). Two evaluation strategies give the same
result up to floating-point reassociation:

* batched (default): one call on the concatenation [x; x] with the unconditional half
  first, through ``joint_fn(x2, t2)``, which owns a conditioning of batch 2B;
* separate: two calls, ``uncond_fn(x, t)`` and ``cond_fn(x, t)`` (half the peak
  activation memory, and the unconditional conditioning can stay batch 1).
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import ModelFn


def combine(eps_u: torch.Tensor, eps_c: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_u + scale * (eps_c - eps_u)."""
    return eps_u + scale * (eps_c - eps_u)


def cfg_batched(joint_fn: ModelFn, scale: float) -> ModelFn:
    """``joint_fn`` takes [2B, ...] inputs ordered [unconditional; conditional]."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = joint_fn(torch.cat([x, x]), torch.cat([t, t]))
        eps_u, eps_c = eps.chunk(2)
        return combine(eps_u, eps_c, scale)

    return model_fn


def cfg_separate(uncond_fn: ModelFn, cond_fn: ModelFn, scale: float) -> ModelFn:
    """Two calls per step; same result as :func:`cfg_batched`."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return combine(uncond_fn(x, t), cond_fn(x, t), scale)

    return model_fn


def guided(scale: float, cond_fn: ModelFn, uncond_fn: Optional[ModelFn] = None,
           joint_fn: Optional[ModelFn] = None, batched: bool = True) -> ModelFn:
    """The denoiser a sampler should call for guidance ``scale``.

    scale == 1 needs only ``cond_fn`` (no unconditional evaluation at all); otherwise
    ``joint_fn`` (batched) or ``uncond_fn`` (separate) must be given.
    """
    scale = float(scale)
    if not scale == scale or scale < 0:  # NaN or negative
        raise ValueError(f"guidance scale must be a number >= 0, got {scale}")
    if scale == 1.0:
        return cond_fn
    if batched and joint_fn is not None:
        return cfg_batched(joint_fn, scale)
    if uncond_fn is None:
        raise ValueError("guidance scale != 1 needs the unconditional denoiser")
    return cfg_separate(uncond_fn, cond_fn, scale)
