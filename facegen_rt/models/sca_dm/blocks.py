"""UNet building blocks of SCA-DM and the per-run conditioning cache.

Parameter names follow the official openaimodel.py so that a checkpoint loads with a
strict ``load_state_dict`` (e.g. ``in_layers.2`` is the first conv of a ResBlock and
``in_norm.mlp_gamma`` a SPADE gamma conv). Modules that own no parameters in the
official code (SiLU, Dropout) keep their positions in the ``nn.Sequential`` containers
so the indices stay right, but the forward passes call the functional forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from facegen_rt.ops import spade_norm

Size = tuple[int, int]


@dataclass
class UNetConditioning:
    """Everything in a UNet step that depends only on the mask and the style context.

    SPADE gamma/beta depend only on the segmentation, the cross-attention keys and
    values only on the style context, and the attention masks only on the
    segmentation, so a sampler computes them once per run and reuses them at every
    step. The caches fill lazily on first use (or all at once with
    :meth:`SCADMUNet.prepare_conditioning`); a forward call given ``seg``/``context``
    instead of a conditioning object builds a throw-away one, i.e. recomputes them.

    Valid for one UNet, with its weights, dtype and device as they were when the caches
    filled: build a new one after loading other weights or casting the model.

    Attributes:
        seg: [B, R, H, W] one-hot segmentation at image resolution (zeros for the
            unconditional branch).
        context: [B, R, D] style tokens, one per region (zeros when unconditional).
        seg_resized: (h, w) -> [B, R, h, w] nearest-resized segmentation.
        masks: (h, w) -> [B, h*w, R] per-pixel region masks for the cross-attention.
        spade: SPADE layer name -> (gamma, beta), each [B, C, h, w].
        kv: cross-attention layer name -> (k, v), each [B, heads, R, head_dim].
        owner: id of the UNet whose layers filled the caches.
    """

    seg: torch.Tensor
    context: torch.Tensor
    seg_resized: dict[Size, torch.Tensor] = field(default_factory=dict)
    masks: dict[Size, torch.Tensor] = field(default_factory=dict)
    spade: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    owner: Optional[int] = None

    @property
    def batch(self) -> int:
        return self.seg.shape[0]

    def clear(self) -> None:
        """Drop every cached tensor (keeps seg and context)."""
        self.seg_resized.clear()
        self.masks.clear()
        self.spade.clear()
        self.kv.clear()
        self.owner = None

    def claim(self, unet: nn.Module) -> None:
        """Tie the caches to ``unet``; ValueError when another model filled them."""
        if self.owner is None:
            self.owner = id(unet)
        elif self.owner != id(unet):
            raise ValueError("UNetConditioning: these caches were filled by another UNet; "
                             "call clear() or build a new conditioning for this model")

    def resized(self, size: Size, dtype: torch.dtype) -> torch.Tensor:
        """[B, R, h, w] segmentation resized with mode "nearest" (as the official code)."""
        out = self.seg_resized.get(size)
        if out is None:
            out = F.interpolate(self.seg.to(dtype), size=size, mode="nearest")
            self.seg_resized[size] = out
        return out

    def mask_tokens(self, size: Size, dtype: torch.dtype) -> torch.Tensor:
        """[B, h*w, R] mask rows in token order (row-major over h, w)."""
        out = self.masks.get(size)
        if out is None:
            out = self.resized(size, dtype).flatten(2).transpose(1, 2).contiguous()
            self.masks[size] = out
        return out

    def spade_params(self, norm: "SPADEGroupNorm", size: Size) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) of one SPADE layer at feature size ``size``."""
        out = self.spade.get(norm.cache_key)
        if out is None:
            out = norm.modulation(self.resized(size, norm.mlp_gamma.weight.dtype))
            self.spade[norm.cache_key] = out
        _check_cached(out[0], norm.mlp_gamma.weight, norm.cache_key, size)
        return out

    def cross_kv(self, attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) of one cross-attention layer, [B, heads, R, head_dim] each."""
        out = self.kv.get(attn.cache_key)
        if out is None:
            out = attn.project_context(self.context)
            self.kv[attn.cache_key] = out
        _check_cached(out[0], attn.to_k.weight, attn.cache_key, None)
        return out


def _check_cached(t: torch.Tensor, weight: torch.Tensor, key: str, size: Optional[Size]) -> None:
    """A cache entry must match the layer's current dtype/device and the feature size."""
    if t.dtype != weight.dtype or t.device != weight.device:
        raise ValueError(f"UNetConditioning: the entry for {key} was computed in {t.dtype} on "
                         f"{t.device} but the model is now {weight.dtype} on {weight.device}; "
                         "call clear() or prepare a new conditioning")
    if size is not None and tuple(t.shape[-2:]) != tuple(size):
        raise ValueError(f"UNetConditioning: the entry for {key} was computed for features of "
                         f"{tuple(t.shape[-2:])}, now {tuple(size)}: the latent size changed; "
                         "call clear() or prepare a new conditioning")


class UNetLayer(nn.Module):
    """A layer called as ``layer(x, emb, cond)``; plain modules are called as ``layer(x)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor,
                cond: UNetConditioning) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class UNetStage(nn.ModuleList):
    """One entry of input_blocks / output_blocks / middle_block (TimestepEmbedSequential)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: UNetConditioning) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, cond) if isinstance(layer, UNetLayer) else layer(x)
        return x


def timestep_embedding(timesteps: torch.Tensor, dim: int,
                       max_period: float = 10000.0) -> torch.Tensor:
    """[B] timesteps -> [B, dim] float32 sinusoidal embedding, cosines first (as LDM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def group_norm32(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """LDM's GroupNorm32: normalize in float32, return x's dtype."""
    w = norm.weight.float() if norm.weight is not None else None
    b = norm.bias.float() if norm.bias is not None else None
    return F.group_norm(x.float(), norm.num_groups, w, b, norm.eps).to(x.dtype)


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResBlock(UNetLayer):
    """Encoder residual block: GN32-SiLU-conv, + time embedding, GN32-SiLU-conv, skip.

    x [B, C, h, w] -> [B, out_channels, h, w].
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int,
                 groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       _conv3(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(),
                                        nn.Dropout(dropout), _conv3(out_channels, out_channels))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb, cond):
        h = self.in_layers[2](F.silu(group_norm32(x, self.in_layers[0])))
        h = h + self.emb_layers[1](F.silu(emb)).to(h.dtype)[:, :, None, None]
        h = F.silu(group_norm32(h, self.out_layers[0]))
        h = self.out_layers[3](self.out_layers[2](h))
        return self.skip_connection(x) + h


class SPADEGroupNorm(nn.Module):
    """SPADE: GroupNorm without affine, modulated by maps predicted from the mask.

    Parameters only: the normalization itself is applied by the block through
    :func:`facegen_rt.ops.spade_norm` (fused with the SiLU that follows it).
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 128,
                 groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.channels, self.groups, self.eps = channels, groups, eps
        self.mlp_shared = nn.Sequential(_conv3(label_channels, hidden), nn.ReLU())
        self.mlp_gamma = _conv3(hidden, channels)
        self.mlp_beta = _conv3(hidden, channels)
        self.cache_key = ""  # set by the UNet to the layer's qualified name

    def modulation(self, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, R, h, w] resized mask -> (gamma, beta), each [B, C, h, w]."""
        a = F.relu(self.mlp_shared[0](seg))
        return self.mlp_gamma(a), self.mlp_beta(a)

    def normalize_silu(self, x: torch.Tensor, cond: UNetConditioning) -> torch.Tensor:
        """SiLU(SPADE(x)) for x [B, C, h, w]: the norm is always followed by a SiLU in SCA-DM."""
        gamma, beta = cond.spade_params(self, (x.shape[-2], x.shape[-1]))
        if gamma.shape[0] != x.shape[0]:  # a batch-1 conditioning shared by the batch
            gamma = gamma.expand(x.shape[0], -1, -1, -1)
            beta = beta.expand(x.shape[0], -1, -1, -1)
        return spade_norm(x, gamma, beta, groups=self.groups, eps=self.eps, act="silu")


class SDMResBlock(UNetLayer):
    """Decoder/middle residual block with two SPADE norms.

    h = conv(SiLU(SPADE_in(x))) + Linear(SiLU(emb)); h = conv(SiLU(SPADE_out(h)));
    out = skip(x) + h.  x [B, C, h, w] -> [B, out_channels, h, w].
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int,
                 num_classes: int, hidden: int = 128, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.in_norm = SPADEGroupNorm(channels, num_classes, hidden, groups)
        self.in_layers = nn.Sequential(nn.SiLU(), _conv3(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_norm = SPADEGroupNorm(out_channels, num_classes, hidden, groups)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        _conv3(out_channels, out_channels))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb, cond):
        h = self.in_layers[1](self.in_norm.normalize_silu(x, cond))
        h = h + self.emb_layers[1](F.silu(emb)).to(h.dtype)[:, :, None, None]
        h = self.out_layers[2](self.out_layers[1](self.out_norm.normalize_silu(h, cond)))
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv, [B, C, h, w] -> [B, C, ceil(h/2), ceil(w/2)]."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = _conv3(channels, channels, stride=2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv, [B, C, h, w] -> [B, C, 2h, 2w]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
