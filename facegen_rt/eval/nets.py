"""Architectures of the bundled evaluators: small CNNs sized for CPU training.

Both nets take images as float [N, 3, 128, 128] in [0, 1] and start with a 2x2
space-to-depth step (the 4 pixels of each 2x2 cell become 12 channels of a 64x64 map):
no information is lost, and the 64x64 stage costs a quarter of a full-resolution one,
which is what makes a 30-minute CPU training possible.

* :class:`ParserNet`: a U-Net over 64 -> 32 -> 16 -> 8 whose 64x64 output predicts
  the 2x2 pixels of each cell (pixel shuffle back to 128x128). The raw 12-channel
  space-to-depth input is fed again to the last stage so that sub-cell edges are
  decided from the exact pixel colours (labels are ``coverage >= 0.5``, which the
  anti-aliased colour of an edge pixel encodes). ``ParserConfig.refine`` adds a small
  full-resolution stage that corrects the logits from the logits and the pixels (off in
  the bundled parser; the evaluators' README has what it measured).
* :class:`FaceNet`: a shared encoder with a landmark head (per-landmark heatmap logits
  at 32x32 from a small feature pyramid, read out by soft-argmax) and an attribute
  head on globally pooled features; those pooled features are the embedding.
* :class:`RegionNet`: attribute heads for the fine geometric attributes (nose width,
  brow arch and thickness, lip fullness, ...), each a small CNN on a crop of one face
  region cut at the landmarks and aligned to the eye line. The face net's global head
  sees a 10-pixel nose as a speck of a 128x128 image and, in a 30-minute CPU run, often
  never learns it; on an aligned crop the same attribute is learnt in one epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.synthface import ATTRIBUTE_NAMES, LANDMARK_NAMES, NUM_ATTRIBUTES, NUM_CLASSES, NUM_LANDMARKS

#: input resolution the nets are trained at (other sizes are resized to it)
NET_RES = 128
_EYE_CENTRES = (LANDMARK_NAMES.index("l_eye_center"), LANDMARK_NAMES.index("r_eye_center"))


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (channels kept)."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.a = conv_bn(c, c, dilation=dilation)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False),
                               nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


def stage(cin: int, cout: int, blocks: int, stride: int = 2, dilation: int = 1) -> nn.Sequential:
    """A strided conv_bn to ``cout`` followed by ``blocks`` residual blocks."""
    return nn.Sequential(conv_bn(cin, cout, stride), *[ResBlock(cout, dilation) for _ in range(blocks)])


def _up(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


@dataclass
class ParserConfig:
    """Widths of the 64/32/16/8 stages and residual blocks per encoder stage."""

    widths: tuple = (32, 64, 96, 128)
    blocks: tuple = (1, 1, 2, 2)
    num_classes: int = NUM_CLASSES
    patch: int = 2          # space-to-depth factor of the input (2: first stage at 64x64)
    refine: int = 0         # channels of the full-resolution refinement stage (0: none)

    def to_dict(self) -> dict:
        return asdict(self)


class ParserNet(nn.Module):
    """Face parser: image float [N, 3, 128, 128] in [0, 1] -> logits float [N, 19, 128, 128]."""

    def __init__(self, cfg: ParserConfig = ParserConfig()):
        super().__init__()
        w, b = tuple(cfg.widths), tuple(cfg.blocks)
        self.cfg = cfg
        self.patch = int(cfg.patch)
        cin = 3 * self.patch ** 2
        self.stem = stage(cin, w[0], b[0], stride=1)
        self.enc1 = stage(w[0], w[1], b[1])
        self.enc2 = stage(w[1], w[2], b[2])
        # dilated blocks at 8x8 see the whole face (left/right eye, hat vs hair)
        self.enc3 = nn.Sequential(conv_bn(w[2], w[3], 2), ResBlock(w[3], 1), *[ResBlock(w[3], 2) for _ in range(b[3] - 1)])
        self.dec2 = conv_bn(w[3] + w[2], w[2])
        self.dec1 = conv_bn(w[2] + w[1], w[1])
        self.dec0 = nn.Sequential(conv_bn(w[1] + w[0] + cin, w[0]), conv_bn(w[0], w[0]))
        self.head = nn.Conv2d(w[0], cfg.num_classes * self.patch ** 2, 1)
        # The parser's errors sit on edge pixels, whose label (coverage >= 0.5) is in their
        # anti-aliased colour: a small stage at full resolution reads the logits beside the
        # pixels and adds a correction to the logits.
        self.refine = None
        if cfg.refine:
            r = int(cfg.refine)
            self.refine = nn.Sequential(conv_bn(cfg.num_classes + 3, r), conv_bn(r, r),
                                        nn.Conv2d(r, cfg.num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.pixel_unshuffle(x * 2.0 - 1.0, self.patch)   # [N, 3 p^2, 128 / p, 128 / p]
        e0 = self.stem(s)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([_up(e3, e2), e2], 1))
        d1 = self.dec1(torch.cat([_up(d2, e1), e1], 1))
        d0 = self.dec0(torch.cat([_up(d1, e0), e0, s], 1))
        logits = F.pixel_shuffle(self.head(d0), self.patch)  # [N, C, 128, 128]
        if self.refine is not None:
            logits = logits + self.refine(torch.cat([logits, x * 2.0 - 1.0], 1))
        return logits


@dataclass
class FaceConfig:
    """Widths of the 64/32/16/8 encoder stages, residual blocks per stage, pyramid width,
    and the soft-argmax heatmap resolution (32 = stride 4)."""

    widths: tuple = (32, 64, 128, 192)
    blocks: tuple = (1, 1, 2, 2)
    fpn: int = 64
    num_landmarks: int = NUM_LANDMARKS
    num_attributes: int = NUM_ATTRIBUTES
    num_aux: int = 0        # auxiliary regression outputs (training aid, see train.py)

    def to_dict(self) -> dict:
        return asdict(self)


class FaceNet(nn.Module):
    """Landmarks + attributes + embedding from one encoder.

    ``forward(x)`` with x float [N, 3, 128, 128] in [0, 1] returns a dict:
    ``landmarks`` float [N, K, 2] pixel (x, y) at 128x128; ``heatmap`` float [N, K, 32, 32]
    (logits); ``attr_logits`` float [N, A]; ``embedding`` float [N, widths[-1] + widths[-2]]
    (global average pools of the last two stages, concatenated); ``aux`` float
    [N, num_aux] when ``num_aux`` > 0 (standardised renderer factors, a training aid).
    """

    def __init__(self, cfg: FaceConfig = FaceConfig()):
        super().__init__()
        w, b = tuple(cfg.widths), tuple(cfg.blocks)
        self.cfg = cfg
        self.stem = stage(12, w[0], b[0], stride=1)      # 64x64
        self.enc1 = stage(w[0], w[1], b[1])              # 32x32
        self.enc2 = stage(w[1], w[2], b[2])              # 16x16
        self.enc3 = stage(w[2], w[3], b[3])              # 8x8
        self.lat3 = nn.Conv2d(w[3], cfg.fpn, 1)
        self.lat2 = nn.Conv2d(w[2], cfg.fpn, 1)
        self.lat1 = nn.Conv2d(w[1], cfg.fpn, 1)
        self.lm_head = nn.Sequential(conv_bn(cfg.fpn, cfg.fpn), conv_bn(cfg.fpn, cfg.fpn),
                                     nn.Conv2d(cfg.fpn, cfg.num_landmarks, 1))
        emb = w[3] + w[2]
        self.hidden = nn.Sequential(nn.Linear(emb, 256), nn.ReLU(inplace=True))
        self.attr_head = nn.Linear(256, cfg.num_attributes)
        self.aux_head = nn.Linear(256, cfg.num_aux) if cfg.num_aux else None

    @property
    def embedding_dim(self) -> int:
        return int(self.cfg.widths[3] + self.cfg.widths[2])

    def forward(self, x: torch.Tensor) -> dict:
        s = F.pixel_unshuffle(x * 2.0 - 1.0, 2)
        e1 = self.enc1(self.stem(s))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        p = self.lat3(e3)
        p = self.lat2(e2) + _up(p, e2)
        p = self.lat1(e1) + _up(p, e1)
        heat = self.lm_head(p)
        emb = torch.cat([e3.float().mean((2, 3)), e2.float().mean((2, 3))], 1)
        hid = self.hidden(emb)
        out = {"landmarks": soft_argmax(heat.float(), NET_RES), "heatmap": heat,
               "attr_logits": self.attr_head(hid).float(), "embedding": emb}
        if self.aux_head is not None:
            out["aux"] = self.aux_head(hid).float()
        return out


#: RegionNet's default regions: (name, landmarks whose mean is the crop centre, half-size
#: (along, across the eye line) in units of the eye-centre distance, crop size (w, h) in
#: samples, attributes read from it). Sizes keep about one sample per pixel at 128x128,
#: where the eye centres are about 22 px apart.
REGIONS = (
    ("nose", ("nose_tip",), (0.5, 0.5), (24, 24), ("Big_Nose",)),
    ("brows", ("l_brow_peak", "r_brow_peak"), (1.0, 0.35), (44, 16), ("Arched_Eyebrows", "Bushy_Eyebrows")),
    ("lips", ("upper_lip_top", "lower_lip_bottom"), (0.75, 0.5), (32, 22), ("Big_Lips", "Wearing_Lipstick")),
    ("face", ("l_eye_center", "r_eye_center", "chin"), (1.4, 1.5), (48, 52), ("Chubby", "Young")),
)


@dataclass
class RegionConfig:
    """The crop regions (see REGIONS) and the widths of each region's CNN."""

    regions: tuple = REGIONS
    widths: tuple = (24, 48, 64)

    def to_dict(self) -> dict:
        return asdict(self)


def aligned_crops(img: torch.Tensor, lm: torch.Tensor, centre: list, half: tuple, size: tuple) -> torch.Tensor:
    """Crops of one face region in the eye-line frame, bilinearly resampled.

    img float [N, 3, H, W]; lm float [N, 39, 2] pixel (x, y) at H x W (pixel i spans
    [i, i + 1)); centre: landmark indices whose mean is the crop centre; half: half-size
    (along, across the eye line) in eye-centre distances; size: (w, h) of the output.
    Returns float [N, 3, h, w]. Aligning to the eye line removes roll and scale, which
    the small heads would otherwise have to learn.
    """
    n, _, h, w = img.shape
    d = lm[:, _EYE_CENTRES[1]] - lm[:, _EYE_CENTRES[0]]
    iod = d.norm(dim=1).clamp_min(1e-3)
    ex = d / iod[:, None]                                  # along the eye line
    ey = torch.stack([-ex[:, 1], ex[:, 0]], 1)             # across it
    c = lm[:, list(centre)].mean(1)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=img.dtype, device=img.device)
    theta = torch.stack([ex * (half[0] * iod)[:, None] * scale, ey * (half[1] * iod)[:, None] * scale,
                         c * scale - 1.0], 2)             # [N, 2, 3]: normalised source coordinates
    grid = F.affine_grid(theta, [n, 3, size[1], size[0]], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


class RegionNet(nn.Module):
    """Attribute logits from aligned region crops.

    ``forward(x, landmarks)`` with x float [N, 3, 128, 128] in [0, 1] and landmarks float
    [N, 39, 2] (pixel (x, y) at 128x128, the face net's) returns float [N, len(attributes)]
    logits in the order of :attr:`attributes` (names from ATTRIBUTE_NAMES).
    """

    def __init__(self, cfg: RegionConfig = RegionConfig()):
        super().__init__()
        self.cfg = cfg
        w = tuple(cfg.widths)
        self.regions = [(tuple(LANDMARK_NAMES.index(k) for k in lms), tuple(half), tuple(size))
                        for _, lms, half, size, _ in cfg.regions]
        self.attributes = tuple(a for *_, attrs in cfg.regions for a in attrs)
        self.attribute_ids = [ATTRIBUTE_NAMES.index(a) for a in self.attributes]
        self.heads = nn.ModuleList(
            nn.Sequential(conv_bn(3, w[0]), nn.MaxPool2d(2), conv_bn(w[0], w[1]), nn.MaxPool2d(2),
                          conv_bn(w[1], w[2]), conv_bn(w[2], w[2]), _AvgMaxPool(), nn.Linear(2 * w[2], len(attrs)))
            for *_, attrs in cfg.regions)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        x = x * 2.0 - 1.0
        return torch.cat([head(aligned_crops(x, landmarks, *region))
                          for head, region in zip(self.heads, self.regions)], 1)


class _AvgMaxPool(nn.Module):
    """[N, C, h, w] -> [N, 2C]: global mean and max (a thin brow edge is a max, a width a mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


def soft_argmax(heat: torch.Tensor, res: int) -> torch.Tensor:
    """Expected (x, y) under softmax(heat) over each map, in pixels of a ``res`` image.

    heat: float [N, K, h, w] -> float [N, K, 2]. Cell (i, j) of an h x w map covers
    pixels [j, j + 1) * res / w, so its centre is (j + 0.5) * res / w.
    """
    n, k, h, w = heat.shape
    p = torch.softmax(heat.reshape(n, k, h * w), -1).reshape(n, k, h, w)
    xs = (torch.arange(w, dtype=heat.dtype, device=heat.device) + 0.5) * (res / w)
    ys = (torch.arange(h, dtype=heat.dtype, device=heat.device) + 0.5) * (res / h)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


def _tuples(v):
    return tuple(_tuples(e) for e in v) if isinstance(v, (list, tuple)) else v


_KINDS = {"parser": (ParserNet, ParserConfig), "face": (FaceNet, FaceConfig), "regions": (RegionNet, RegionConfig)}


def build(kind: str, config: dict | None = None) -> nn.Module:
    """A fresh ``"parser"``, ``"face"`` or ``"regions"`` net from a config dict (None =
    defaults; JSON lists become the config's tuples)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown evaluator net kind {kind!r} (expected one of {sorted(_KINDS)})")
    net_cls, cfg_cls = _KINDS[kind]
    return net_cls(cfg_cls(**{k: _tuples(v) for k, v in (config or {}).items()}))


def num_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
