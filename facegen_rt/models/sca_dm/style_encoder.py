"""SCA-DM's style encoder (MultiScaleEffStyleEncoder): reference image + its mask -> one
style token per semantic region.

Every convolution is grouped by region (groups = R = 19), so channel block r of each
feature map belongs to region r. A stride-2 encoder goes down ``num_downsample`` times;
a decoder with skip connections comes back up ``num_upsample`` times, and at each
decoder scale the features of region r are averaged over the pixels of region r, then
mapped to ``output_dim`` values (grouped 1x1 Conv1d + tanh). The scales are
concatenated: context [B, R, num_upsample * output_dim] = [B, 19, 1280] officially.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import StyleEncoderConfig

POOL_EPS = 1e-5  # added to the region area, so an absent region pools to 0 (as upstream)


class MultiScaleStyleEncoder(nn.Module):
    """forward(image [B, 3, H, W] in [-1, 1], seg [B, R, H, W] one-hot) -> [B, R, D].

    H and W must be multiples of 2**num_downsample. Parameter names match the official
    ``cond_stage_model.*`` keys (Encoder.first_layer, Encoder.enc_layer_i,
    Decoder.dec_layer_j, out.out_j).
    """

    def __init__(self, cfg: StyleEncoderConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        R, nd = cfg.num_classes, cfg.num_downsample
        widths = [R * cfg.num_feat * 2 ** i for i in range(nd + 1)]
        self.widths = widths

        self.Encoder = nn.ModuleDict()
        self.Encoder["first_layer"] = nn.Sequential(
            nn.Conv2d(cfg.input_channels, widths[0], 3, padding=1), nn.GroupNorm(R, widths[0]),
            nn.ReLU())
        for i in range(nd):
            self.Encoder[f"enc_layer_{i}"] = nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, groups=R),
                nn.GroupNorm(R, widths[i + 1]), nn.ReLU())

        # Decoder step j works at encoder depth i = nd - 1 - j; from step 1 on, its input
        # is the previous output concatenated with the encoder feature of the same size.
        self.Decoder = nn.ModuleDict()
        self.out = nn.ModuleDict()
        for j in range(cfg.num_upsample):
            i = nd - 1 - j
            cin = widths[i + 1] * (1 if j == 0 else 2)
            self.Decoder[f"dec_layer_{j}"] = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(cin, widths[i], 3, padding=1, groups=R),
                nn.GroupNorm(R, widths[i]), nn.ReLU())
            self.out[f"out_{j}"] = nn.Sequential(
                nn.Conv1d(widths[i], cfg.output_dim * R, 1, groups=R), nn.Tanh())

    def forward(self, image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        R = cfg.num_classes
        if image.dim() != 4 or image.shape[1] != cfg.input_channels:
            raise ValueError(f"style encoder: image must have shape "
                             f"[B, {cfg.input_channels}, H, W], got {tuple(image.shape)}")
        if seg.dim() != 4 or seg.shape[1] != R or seg.shape[0] != image.shape[0]:
            raise ValueError(f"style encoder: seg must have shape [{image.shape[0]}, {R}, H, W], "
                             f"got {tuple(seg.shape)}")
        f = 2 ** cfg.num_downsample
        H, W = image.shape[-2:]
        if H % f or W % f:
            raise ValueError(f"style encoder: image size {H}x{W} must be a multiple of {f}")
        dtype = self.Encoder["first_layer"][0].weight.dtype
        x = self.Encoder["first_layer"](image.to(dtype))
        seg = seg.to(dtype)
        feats = []
        for i in range(cfg.num_downsample):
            x = self.Encoder[f"enc_layer_{i}"](x)
            feats.append(x)

        tokens = []
        for j in range(cfg.num_upsample):
            x = self.Decoder[f"dec_layer_{j}"](x)
            tokens.append(self._region_tokens(x, seg, j))
            if j + 1 < cfg.num_upsample:  # the last skip would feed nothing
                x = torch.cat([x, feats[cfg.num_upsample - 1 - j]], dim=1)
        return torch.cat(tokens, dim=2)

    def _region_tokens(self, x: torch.Tensor, seg: torch.Tensor, j: int) -> torch.Tensor:
        """Masked average of each region's channel block, then Conv1d + tanh.

        x [B, R*G, h, w], seg [B, R, H, W] -> [B, R, output_dim].
        """
        B, C, h, w = x.shape
        R = self.cfg.num_classes
        m = F.interpolate(seg, size=(h, w), mode="nearest").reshape(B, R, h * w)
        feats = x.reshape(B, R, C // R, h * w)
        pooled = torch.einsum("brgp,brp->brg", feats, m) / (m.sum(-1, keepdim=True) + POOL_EPS)
        out = self.out[f"out_{j}"](pooled.reshape(B, C, 1))  # [B, R*output_dim, 1]
        return out.reshape(B, R, self.cfg.output_dim)
