"""SCA-DM's side of the distillation recipe: conditions, teacher and student closures,
and the training data sources.

Condition of a batch: the one-hot label map seg [B, 19, H, W] and style tokens
ctx [B, 19, D] from the teacher's frozen style encoder (the student reuses the
teacher's encoder, so a student bundle ships the teacher's style encoder and VQ).
The unconditional teacher branch is SCA-DM's: zero tokens and a zero mask.

Model outputs are converted to eps as the pipeline does (``prediction="v"`` models
output v = sqrt(abar) eps - sqrt(1 - abar) x0); a student keeps its teacher's
parametrisation (it starts as a copy of it).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 19


def to_eps(out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, abar: torch.Tensor,
           prediction: str) -> torch.Tensor:
    """Model output [B, ...] -> eps; ``abar`` [T] float64, ``t`` [B] int64."""
    if prediction == "eps":
        return out
    if prediction != "v":
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
    a = abar.to(x.device)[t].view((-1,) + (1,) * (x.dim() - 1))
    return (a.sqrt().to(out.dtype) * out + (1 - a).sqrt().to(out.dtype) * x.to(out.dtype))


class SCADMTask:
    """Closures of the recipe for SCA-DM.

    Args:
        teacher: the teacher UNet (frozen; eval mode).
        style_encoder: the teacher's style encoder (frozen).
        prediction: "eps" or "v", what both UNets output.
        abar: [T] float64 cumulative alphas of the schedule.
    """

    def __init__(self, teacher: nn.Module, style_encoder: nn.Module, prediction: str,
                 abar: torch.Tensor):
        self.teacher = teacher.eval().requires_grad_(False)
        self.style_encoder = style_encoder.eval().requires_grad_(False)
        self.prediction = prediction
        self.abar = abar

    @torch.no_grad()
    def condition(self, seg: torch.Tensor, ref: torch.Tensor, ref_seg: torch.Tensor,
                  keep: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(seg [B, 19, H, W], ctx [B, 19, D]); rows with keep False get the unconditional
        input (zeros), as in the teacher's training."""
        ctx = self.style_encoder(ref, ref_seg).float()
        if keep is not None:
            k = keep.to(ctx.dtype)
            ctx, seg = ctx * k.view(-1, 1, 1), seg * k.view(-1, 1, 1, 1)
        return seg, ctx

    def teacher_fn(self, seg: torch.Tensor, ctx: torch.Tensor, guided: bool = True):
        """``fn(x, t) -> (eps_cond, eps_uncond or None)``; one batched call [uncond; cond]."""
        def fn(x, t):
            if not guided:
                return to_eps(self.teacher(x, t, ctx, seg), x, t, self.abar, self.prediction), None
            B = x.shape[0]
            x2, t2 = torch.cat([x, x]), torch.cat([t, t])
            ctx2 = torch.cat([torch.zeros_like(ctx), ctx])
            seg2 = torch.cat([torch.zeros_like(seg), seg])
            eps = to_eps(self.teacher(x2, t2, ctx2, seg2), x2, t2, self.abar, self.prediction)
            return eps[B:], eps[:B]

        return fn

    def student_fn(self, net: nn.Module, seg: torch.Tensor, ctx: torch.Tensor):
        """``fn(x, t, w) -> eps`` for a student (or its EMA target)."""
        takes_w = getattr(net, "takes_guidance", False)

        def fn(x, t, w):
            out = net(x, t, ctx, seg, guidance=w) if takes_w else net(x, t, ctx, seg)
            return to_eps(out, x, t, self.abar, self.prediction)

        return fn


# ---------------------------------------------------------------------------- data
class TensorSource:
    """A fixed set of training items held in memory (tests, smoke runs).

    Args:
        latents: [N, C, h, w] clean latents (diffusion scale).
        seg: [N, 19, H, W] one-hot label maps.
        ref, ref_seg: [N, 3, H, W] references in [-1, 1] and their one-hot maps.
    """

    def __init__(self, latents, seg, ref, ref_seg, description: str = "tensors"):
        n = latents.shape[0]
        if not (seg.shape[0] == ref.shape[0] == ref_seg.shape[0] == n):
            raise ValueError("TensorSource: latents, seg, ref and ref_seg need the same length")
        self.latents, self.seg, self.ref, self.ref_seg = latents, seg, ref, ref_seg
        self.description = description

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, rng: np.random.Generator, B: int):
        """(x0, seg, ref, ref_seg, keep) for B items drawn with ``rng``."""
        idx = torch.from_numpy(np.sort(rng.integers(0, len(self), B)))
        return (self.latents[idx], self.seg[idx], self.ref[idx], self.ref_seg[idx],
                torch.ones(B, dtype=torch.bool))


def random_source(cfg, n: int, seed: int = 0) -> TensorSource:
    """n random items for a config (unit-variance latents, blocky label maps, random
    references): enough to exercise the recipe without any trained first stage."""
    g = torch.Generator().manual_seed(seed)
    S, lat, C = cfg.image_size, cfg.latent_size, cfg.unet.in_channels
    coarse = torch.randint(0, NUM_CLASSES, (2 * n, 1, 8, 8), generator=g).float()
    labels = F.interpolate(coarse, size=(S, S), mode="nearest")[:, 0].long()
    onehot = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    latents = torch.randn(n, C, lat, lat, generator=g)
    ref = torch.rand(n, 3, S, S, generator=g) * 2 - 1
    return TensorSource(latents, onehot[:n], ref, onehot[n:], f"random: {n} items, seed {seed}")


class CacheSource:
    """Rendered SynthFace train cache, batches as :func:`facegen_rt.train.scadm.make_batch`
    builds them for the teacher (same references, pairs, shifts and CFG dropout).

    Args:
        cache: a :class:`facegen_rt.train.data_cache.ImageCache`.
        latents: [n, C, h, w] latents of cache items 0..n-1 (diffusion scale).
    """

    def __init__(self, cache, latents: torch.Tensor, p_pair: float = 0.5, ref_shift: int = 6,
                 p_uncond: float = 0.0):
        self.cache, self.latents = cache, latents
        self.opts = dict(p_pair=p_pair, ref_shift=ref_shift, p_uncond=p_uncond)
        self.description = f"{cache.describe()}; {len(latents)} latents; {self.opts}"

    def __len__(self) -> int:
        return len(self.latents)

    def batch(self, rng: np.random.Generator, B: int):
        from facegen_rt.train.scadm import make_batch

        x0, seg, ref, ref_seg, keep = make_batch(self.cache, self.latents, rng,
                                                 SimpleNamespace(batch=B, **self.opts))
        return x0, seg, ref, ref_seg, keep
