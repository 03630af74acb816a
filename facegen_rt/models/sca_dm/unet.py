"""SCA-DM's denoiser: LDM's openaimodel UNetModel with SPADE decoder blocks and masked
cross-attention to per-region style tokens.

Layout (official preset, latent 64^2, widths 224/448/672/896):
    input_blocks   conv_in, then per level num_res_blocks x [ResBlock (+ SpatialTransformer
                   where the downsampling factor is in attention_ds)] and a Downsample
                   between levels;
    middle_block   SDMResBlock, SpatialTransformer, SDMResBlock;
    output_blocks  per level (deepest first) num_res_blocks+1 x [SDMResBlock on the
                   concatenated skip (+ SpatialTransformer) (+ Upsample at the end of
                   the level)];
    out            GroupNorm32, SiLU, conv to out_channels.
``label_emb`` is built (it is in the official checkpoint) but never used, as upstream.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MaskedCrossAttention, SpatialTransformer
from .blocks import (Downsample, ResBlock, SDMResBlock, SPADEGroupNorm, UNetConditioning,
                     UNetStage, Upsample, group_norm32, timestep_embedding)
from .config import UNetConfig


class SCADMUNet(nn.Module):
    """eps-prediction UNet.

    forward(x [B, in, h, w], timesteps [B], context [B, R, D], seg [B, R, H, W])
        -> eps [B, out, h, w]; or pass ``cond`` (a :class:`UNetConditioning`) instead of
    context/seg to reuse the per-run caches across sampling steps.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        mc, emb_dim, g = cfg.model_channels, cfg.time_embed_dim, cfg.groups
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)

        self._spade_ds: dict[str, int] = {}  # SPADE layer name -> downsampling factor
        self._attn_ds: set[int] = set(cfg.attention_ds)

        def transformer(ch: int) -> SpatialTransformer:
            heads = ch // cfg.num_head_channels
            return SpatialTransformer(ch, heads, cfg.num_head_channels, cfg.context_dim,
                                      groups=g, dropout=cfg.dropout)

        def sdm(cin: int, cout: int, ds: int) -> SDMResBlock:
            block = SDMResBlock(cin, emb_dim, cout, cfg.num_classes, cfg.spade_hidden, g,
                                cfg.dropout)
            block.ds = ds
            return block

        conv_in = nn.Conv2d(cfg.in_channels, mc, 3, padding=1)
        self.input_blocks = nn.ModuleList([UNetStage([conv_in])])
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, g, cfg.dropout)]
                ch = mult * mc
                if ds in self._attn_ds:
                    layers.append(transformer(ch))
                self.input_blocks.append(UNetStage(layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetStage([Downsample(ch)]))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = UNetStage([sdm(ch, ch, ds), transformer(ch), sdm(ch, ch, ds)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [sdm(ch + skip_channels.pop(), mult * mc, ds)]
                ch = mult * mc
                if ds in self._attn_ds:
                    layers.append(transformer(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetStage(layers))

        self.out = nn.Sequential(nn.GroupNorm(g, ch), nn.SiLU(),
                                 nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

        # Cache keys: each SPADE / cross-attention layer is named by its qualified name.
        for name, module in self.named_modules():
            if isinstance(module, (SPADEGroupNorm, MaskedCrossAttention)):
                module.cache_key = name
            if isinstance(module, SDMResBlock):
                self._spade_ds[name + ".in_norm"] = module.ds
                self._spade_ds[name + ".out_norm"] = module.ds

    # ------------------------------------------------------------------ conditioning
    def prepare_conditioning(self, seg: torch.Tensor, context: torch.Tensor,
                             latent_size: Optional[tuple[int, int]] = None) -> UNetConditioning:
        """Per-run caches for the given mask and style tokens.

        Args:
            seg: [B, R, H, W] one-hot segmentation at image resolution (zeros: unconditional).
            context: [B, R, context_dim] style tokens.
            latent_size: (h, w) of the latent; when given, every SPADE gamma/beta, K/V
                projection and resized mask is computed now, otherwise on first use.
        Returns:
            A :class:`UNetConditioning` to pass as ``cond=`` at every step.
        """
        self._check_conditioning(seg, context)
        cond = UNetConditioning(seg=seg, context=context)
        if latent_size is not None:
            self.fill_conditioning(cond, latent_size)
        return cond

    @torch.no_grad()
    def fill_conditioning(self, cond: UNetConditioning, latent_size: tuple[int, int]) -> None:
        """Compute every cache entry of ``cond`` for a latent of ``latent_size`` (h, w)."""
        h, w = latent_size
        self._check_latent_size(h, w)
        cond.claim(self)
        dtype = self.time_embed[0].weight.dtype
        modules = dict(self.named_modules())
        for name, ds in self._spade_ds.items():
            cond.spade_params(modules[name], (h // ds, w // ds))
        for module in modules.values():
            if isinstance(module, MaskedCrossAttention):
                cond.cross_kv(module)
        for ds in self._attn_ds:
            if ds <= self.cfg.downsample_factor:
                cond.mask_tokens((h // ds, w // ds), dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, timesteps: torch.Tensor,
                context: Optional[torch.Tensor] = None, seg: Optional[torch.Tensor] = None,
                cond: Optional[UNetConditioning] = None) -> torch.Tensor:
        """Predict the noise.

        Args:
            x: [B, in_channels, h, w] noisy latent; h, w multiples of 2**(levels-1).
            timesteps: [B] (or scalar) timestep indices, int or float.
            context: [B or 1, R, context_dim] style tokens (with ``seg``), or None with ``cond``.
            seg: [B or 1, R, H, W] one-hot mask at image resolution (H, W >= h, w).
            cond: per-run caches from :meth:`prepare_conditioning` (then context/seg unused).
        Returns:
            [B, out_channels, h, w] in x's dtype.
        """
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"SCADMUNet: x must have shape [B, {self.cfg.in_channels}, h, w], "
                             f"got {tuple(x.shape)}")
        B = x.shape[0]
        self._check_latent_size(x.shape[2], x.shape[3])
        if cond is None:
            if context is None or seg is None:
                raise ValueError("SCADMUNet: pass either cond, or both context and seg")
            self._check_conditioning(seg, context)
            cond = UNetConditioning(seg=seg, context=context)
        if cond.batch not in (1, B) or cond.context.shape[0] != cond.batch:
            raise ValueError(f"SCADMUNet: conditioning batch {cond.batch} (context "
                             f"{cond.context.shape[0]}) must be 1 or the batch of x ({B})")
        cond.claim(self)
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(B)
        if timesteps.shape != (B,):
            raise ValueError(f"SCADMUNet: timesteps must have shape [{B}], "
                             f"got {tuple(timesteps.shape)}")

        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(dtype))
        h = x.to(dtype)
        skips = []
        for stage in self.input_blocks:
            h = stage(h, emb, cond)
            skips.append(h)
        h = self.middle_block(h, emb, cond)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, cond)
        h = self.out[2](F.silu(group_norm32(h, self.out[0])))
        return h.to(x.dtype)

    # ------------------------------------------------------------------ checks
    def _check_latent_size(self, h: int, w: int) -> None:
        f = self.cfg.downsample_factor
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(f"SCADMUNet: latent size {h}x{w} must be a positive multiple of {f}")

    def _check_conditioning(self, seg: torch.Tensor, context: torch.Tensor) -> None:
        R, D = self.cfg.num_classes, self.cfg.context_dim
        if seg.dim() != 4 or seg.shape[1] != R:
            raise ValueError(f"SCADMUNet: seg must have shape [B, {R}, H, W], "
                             f"got {tuple(seg.shape)}")
        if context.dim() != 3 or context.shape[1:] != (R, D):
            raise ValueError(f"SCADMUNet: context must have shape [B, {R}, {D}], "
                             f"got {tuple(context.shape)}")
        if seg.shape[0] != context.shape[0]:
            raise ValueError(f"SCADMUNet: seg batch {seg.shape[0]} != "
                             f"context batch {context.shape[0]}")
        if not seg.is_floating_point():
            raise TypeError(f"SCADMUNet: seg must be a float one-hot tensor, got {seg.dtype}")
