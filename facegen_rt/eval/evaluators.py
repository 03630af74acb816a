"""The bundled evaluators: loading and a high-level API.

::

    ev = load_evaluators()              # or the module functions, which share one instance
    ev.parse(images)      -> int64 [N, H, W] class ids (CelebAMask-HQ order, 19 classes)
    ev.landmarks(images)  -> float32 [N, 39, 2] pixel (x, y) at the input resolution
    ev.attributes(images) -> float32 [N, 32] probabilities (ATTRIBUTE_NAMES order)
    ev.embed(images)      -> float32 [N, D] features for FD-SF / KID

``images`` is uint8 [N, H, W, 3] (numpy or torch, or one [H, W, 3] image) or float
[N, 3, H, W] in [0, 1]. All three nets run at 128x128: other sizes are resized to 128 with
antialiased bilinear filtering, parser logits are upsampled bilinearly back to H x W
before the argmax, and landmarks are scaled by W / 128 and H / 128. So a 256x256 image
is parsed from its 128x128 reduction with sub-pixel edges recovered by the logit
interpolation (the report measures it separately). The parser averages eight test-time
passes (PARSER_TTA: the pixel phases of its 2x2 cells, each also mirrored), at 8x the
cost of one.

Attributes: the face net's global head gives all 32; the fine geometric ones (nose
width, brow arch and thickness, lip fullness, lipstick, chubbiness, age) are then taken
from the region heads (:class:`~facegen_rt.eval.nets.RegionNet`), which read crops cut
at the face net's landmarks and aligned to the eye line.

Embedding: the global average pools of the face net's last two encoder stages
(8x8 and 16x16), concatenated, not normalised (FaceNet.embedding_dim values).

Weights: ``facegen_rt/assets/evaluators/{parser,face,regions}.safetensors`` with their JSON
configs (architecture and the training record); see :mod:`facegen_rt.eval.train`.

Held-out item ranges (the train split is never used for evaluation): the report reads
held-out items 0..999, training-time validation items 500000.., tests 1000000 and up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.synthface import NUM_CLASSES
from ..data.synthface.classes import CLASS_ID
from . import nets

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "evaluators"
KINDS = ("parser", "face", "regions")
REPORT_HELDOUT_START = 0
TEST_HELDOUT_START = 1_000_000


def asset_paths(asset_dir: Union[str, Path] = ASSET_DIR) -> dict:
    """{kind: weights path} of the bundled evaluators."""
    return {k: Path(asset_dir) / f"{k}.safetensors" for k in KINDS}


def assets_present(asset_dir: Union[str, Path] = ASSET_DIR) -> bool:
    """True when every evaluator's weights and config exist."""
    return all(p.is_file() and p.with_suffix(".json").is_file() for p in asset_paths(asset_dir).values())


def load_net(kind: str, asset_dir: Union[str, Path] = ASSET_DIR) -> tuple[nn.Module, dict]:
    """(net in eval mode with fp32 weights, its config dict) of evaluator ``kind``."""
    from ..weights.safetensors_io import load_model
    path = asset_paths(asset_dir)[kind]
    mods, config, _ = load_model(path, lambda cfg, names: {"net": nets.build(cfg["kind"], cfg["arch"])},
                                 dtype=torch.float32)
    if config.get("kind") != kind:
        raise ValueError(f"{path}: config kind {config.get('kind')!r} is not {kind!r}")
    return mods["net"].eval(), config


def as_float_images(images) -> torch.Tensor:
    """uint8 [N, H, W, 3] / [H, W, 3] or float [N, 3, H, W] in [0, 1] -> float32 [N, 3, H, W]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        x = images if images.dim() == 4 else images.unsqueeze(0)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [N, H, W, 3], got {tuple(images.shape)}")
        return x.permute(0, 3, 1, 2).float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"float images must be [N, 3, H, W] in [0, 1], got {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("float images contain NaN or infinite values")
    return images.float()


#: parser test-time passes (dx, dy, mirrored): the four one-pixel phases, each also mirrored
PARSER_TTA = tuple((dx, dy, m) for m in (False, True) for dy in (0, 1) for dx in (0, 1))
#: channel order that undoes a mirror: the left and right classes trade places
_MIRROR_CLASSES = list(range(NUM_CLASSES))
for _a, _b in (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")):
    _MIRROR_CLASSES[CLASS_ID[_a]], _MIRROR_CLASSES[CLASS_ID[_b]] = CLASS_ID[_b], CLASS_ID[_a]


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """out[..., i, j] = x[..., i + dy, j + dx] for |dx|, |dy| <= 1, edges replicated."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _to_net_res(x: torch.Tensor) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (nets.NET_RES, nets.NET_RES):
        return x
    return F.interpolate(x, size=(nets.NET_RES, nets.NET_RES), mode="bilinear", align_corners=False,
                         antialias=True).clamp_(0, 1)


class Evaluators:
    """The parser, the face net (landmarks, attributes, embedding) and the region
    attribute heads, loaded lazily.

    Args:
        asset_dir: where ``parser``, ``face`` and ``regions`` ``.safetensors`` live.
        batch: images per forward pass.
    """

    def __init__(self, asset_dir: Union[str, Path] = ASSET_DIR, batch: int = 64):
        self.asset_dir, self.batch = Path(asset_dir), int(batch)
        self._nets: dict = {}
        self.configs: dict = {}

    def net(self, kind: str) -> nn.Module:
        if kind not in self._nets:
            self._nets[kind], self.configs[kind] = load_net(kind, self.asset_dir)
        return self._nets[kind]

    def _prior_correction(self) -> torch.Tensor:
        """[1, 19, 1, 1] to add to the parser's logits: -log of its training class weights.

        The parser was trained with per-class loss weights w_c (rare classes up), which
        makes its softmax estimate p(c | x) * w_c up to a constant and so over-predicts
        small classes along their borders. Subtracting log w_c removes that factor (the
        standard logit adjustment); it follows from the recorded training recipe and is
        not fitted to any data.
        """
        self.net("parser")
        weights = self.configs["parser"].get("training", {}).get("hyper", {}).get("class_weights")
        if not weights:
            return torch.zeros(1, NUM_CLASSES, 1, 1)
        return -torch.tensor(weights, dtype=torch.float32).log().view(1, -1, 1, 1)

    def _parser_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Parser log-probabilities float32 [N, 19, 128, 128] of float [N, 3, 128, 128]
        images, averaged over the test-time passes of PARSER_TTA: every one-pixel phase of
        the net's 2x2 cells, each also mirrored. A cell straddling an edge is decided
        from a different pixel grouping in each phase, so their average places edges
        better than any one of them."""
        net, total = self.net("parser"), 0.0
        for dx, dy, mirror in PARSER_TTA:
            xs = _shift(x.flip(-1) if mirror else x, dx, dy)
            lp = net(xs.contiguous(memory_format=torch.channels_last)).float().log_softmax(1)
            lp = _shift(lp, -dx, -dy)
            total = total + (lp.flip(-1)[:, _MIRROR_CLASSES] if mirror else lp)
        return total / len(PARSER_TTA)

    @torch.no_grad()
    def parse_logits(self, images) -> torch.Tensor:
        """float32 [N, 19, H, W] class logits at the input resolution: test-time averaged
        log-probabilities (:meth:`_parser_log_probs`), prior-corrected (see
        :meth:`_prior_correction`)."""
        x = as_float_images(images)
        outs = []
        correction = self._prior_correction()
        for s in range(0, x.shape[0], self.batch):
            logits = self._parser_log_probs(_to_net_res(x[s:s + self.batch])) + correction
            if logits.shape[-2:] != x.shape[-2:]:
                logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(logits.contiguous())
        return torch.cat(outs) if outs else torch.empty(0, 19, *x.shape[-2:])

    @torch.no_grad()
    def parse(self, images) -> torch.Tensor:
        """int64 [N, H, W] class ids at the input resolution."""
        x = as_float_images(images)
        out = []
        for s in range(0, x.shape[0], self.batch):   # argmax per chunk keeps memory flat at 256^2+
            out.append(self.parse_logits(x[s:s + self.batch]).argmax(1))
        return torch.cat(out) if out else torch.empty(0, *x.shape[-2:], dtype=torch.long)

    @torch.no_grad()
    def analyze(self, images, attributes: bool = True) -> dict:
        """One face-net pass and the region heads at its landmarks: {"landmarks" float32
        [N, 39, 2] (input pixels), "attributes" float32 [N, 32] probabilities, "embedding"
        float32 [N, D]}. ``attributes=False`` leaves out the attributes and so skips the
        region heads (landmarks and embedding do not need them)."""
        x = as_float_images(images)
        net = self.net("face")
        regions = self.net("regions") if attributes else None
        lms, ats, embs = [], [], []
        for s in range(0, x.shape[0], self.batch):
            x128 = _to_net_res(x[s:s + self.batch])
            o = net(x128.contiguous(memory_format=torch.channels_last))
            lm = o["landmarks"].float()
            if regions is not None:
                at = torch.sigmoid(o["attr_logits"].float())
                at[:, regions.attribute_ids] = torch.sigmoid(regions(x128, lm).float())
                ats.append(at)
            lms.append(lm)
            embs.append(o["embedding"].float())
        h, w = x.shape[-2:]
        scale = torch.tensor([w / nets.NET_RES, h / nets.NET_RES])
        out = {"landmarks": torch.cat(lms) * scale, "embedding": torch.cat(embs)}
        if attributes:
            out["attributes"] = torch.cat(ats)
        return out

    def landmarks(self, images) -> torch.Tensor:
        """float32 [N, 39, 2] pixel (x, y) in the input's resolution (LANDMARK_NAMES order)."""
        return self.analyze(images, attributes=False)["landmarks"]

    def attributes(self, images) -> torch.Tensor:
        """float32 [N, 32] attribute probabilities (ATTRIBUTE_NAMES order)."""
        return self.analyze(images)["attributes"]

    def embed(self, images) -> torch.Tensor:
        """float32 [N, D] embedding for FD-SF and KID."""
        return self.analyze(images, attributes=False)["embedding"]


_DEFAULT: Optional[Evaluators] = None


def load_evaluators(asset_dir: Union[str, Path, None] = None) -> Evaluators:
    """The shared default instance (bundled assets), or a new one for ``asset_dir``."""
    global _DEFAULT
    if asset_dir is not None:
        return Evaluators(asset_dir)
    if _DEFAULT is None:
        _DEFAULT = Evaluators()
    return _DEFAULT


def parse(images) -> torch.Tensor:
    """Class ids int64 [N, H, W]; see :meth:`Evaluators.parse`."""
    return load_evaluators().parse(images)


def landmarks(images) -> torch.Tensor:
    """Landmarks float32 [N, 39, 2]; see :meth:`Evaluators.landmarks`."""
    return load_evaluators().landmarks(images)


def attributes(images) -> torch.Tensor:
    """Attribute probabilities float32 [N, 32]; see :meth:`Evaluators.attributes`."""
    return load_evaluators().attributes(images)


def embed(images) -> torch.Tensor:
    """Embedding float32 [N, D]; see :meth:`Evaluators.embed`."""
    return load_evaluators().embed(images)
