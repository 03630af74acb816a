"""Guidance-scale conditioning for distilled students (LCM's "w-embedding").

A guidance-distilled student predicts what the teacher does under classifier-free
guidance with scale s, so s must be an input. :class:`GuidanceEmbedding` maps s to a
vector of the UNet's time-embedding width; :class:`GuidanceConditionedUNet` adds it
to the output of the UNet's ``time_embed`` through a forward hook, so the UNet class
and its state_dict keys stay untouched (a wrapped SCA-DM UNet's weights load into
a plain :class:`~facegen_rt.models.sca_dm.SCADMUNet` and vice versa).

The embedding's last layer starts at zero: a fresh student equals its teacher.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from facegen_rt.models.sca_dm.blocks import timestep_embedding

#: s is embedded as the sinusoidal features of (s - 1) * GUIDANCE_SCALE, so the
#: guidance range of interest (1 .. ~15) spans a range of "timesteps" like the
#: diffusion's own, and s = 1 (no guidance) embeds as t = 0.
GUIDANCE_SCALE = 100.0


class GuidanceEmbedding(nn.Module):
    """[B] guidance scales -> [B, emb_dim]: sinusoid(freq_dim) -> Linear -> SiLU -> Linear.

    Args:
        emb_dim: the UNet's time-embedding width (``cfg.time_embed_dim``).
        freq_dim: width of the sinusoidal features (the UNet's ``model_channels``).
    """

    def __init__(self, emb_dim: int, freq_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(),
                                 nn.Linear(emb_dim, emb_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, scale: torch.Tensor) -> torch.Tensor:
        feats = timestep_embedding((scale.float() - 1.0) * GUIDANCE_SCALE, self.freq_dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


def _add_extra_embedding(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on ``time_embed``: add the embedding staged by the wrapper, if any.

    A module-level function reading the hooked module (not a closure over the wrapper),
    so a deep copy of the wrapper (the EMA target) stages and reads its own copy."""
    extra = getattr(module, "extra_embedding", None)
    return output if extra is None else output + extra.to(output.dtype)


class GuidanceConditionedUNet(nn.Module):
    """A UNet that also takes the guidance scale: ``forward(x, t, ..., guidance=s)``.

    Args:
        unet: a UNet with a ``time_embed`` module whose output [B, emb_dim] feeds every
            block (SCA-DM's :class:`SCADMUNet`; LDM-style UNets in general).
        embedding: a :class:`GuidanceEmbedding` (built from the UNet's config if None).

    ``prepare_conditioning``, ``fill_conditioning`` and ``cfg`` are those of the inner
    UNet, so the pipeline's per-run caches work unchanged (the caches belong to the
    inner UNet; batched CFG is never used with this model, the scale goes in directly).
    """

    takes_guidance = True

    def __init__(self, unet: nn.Module, embedding: Optional[GuidanceEmbedding] = None):
        super().__init__()
        self.unet = unet
        if embedding is None:
            cfg = unet.cfg
            w = unet.time_embed[0].weight
            embedding = GuidanceEmbedding(cfg.time_embed_dim, cfg.model_channels)
            embedding = embedding.to(w.device, w.dtype)
        self.guidance_embed = embedding
        te = self.unet.time_embed
        if not getattr(te, "has_guidance_hook", False):  # wrapping twice must not add twice
            te.register_forward_hook(_add_extra_embedding)
            te.has_guidance_hook = True

    @property
    def cfg(self):
        return self.unet.cfg

    def prepare_conditioning(self, *args, **kwargs):
        return self.unet.prepare_conditioning(*args, **kwargs)

    def fill_conditioning(self, *args, **kwargs):
        return self.unet.fill_conditioning(*args, **kwargs)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, *args,
                guidance: Union[None, float, torch.Tensor] = None, **kwargs) -> torch.Tensor:
        """The inner UNet's forward (same arguments) with ``guidance``: a float or [B]."""
        if guidance is None:
            raise ValueError("this student takes the guidance scale as an input: pass guidance=")
        B = x.shape[0]
        s = torch.as_tensor(guidance, dtype=torch.float32, device=x.device)
        if s.dim() == 0:
            s = s.expand(B)
        if s.shape != (B,):
            raise ValueError(f"guidance must be a float or a [{B}] tensor, got {tuple(s.shape)}")
        te = self.unet.time_embed
        te.extra_embedding = self.guidance_embed(s)
        try:
            return self.unet(x, timesteps, *args, **kwargs)
        finally:
            te.extra_embedding = None
