"""One SynthFace sample: image, labels, landmarks, attributes, caption and parts.

``sample(seed, index, res)`` draws ``z = sample_z(seed, index)`` and returns
``sample_from_z(z, res)``; there is no other source of randomness (the caption rng is
seeded from a hash of z), so the same (seed, index, res) always gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import classes as C
from .attributes import attribute_vector, attributes_from_factors
from .captions import make_caption
from .factors import PAIR_STREAM, Factors, factors_from_z, sample_z, with_new_pose_expression
from .landmarks import landmarks
from .layout import make_layout
from .render import check_res, render, render_with_edges

#: classes of each part crop
PART_CLASSES = {
    "hair": (C.HAIR,),
    "face": (C.SKIN, C.NOSE, C.L_EYE, C.R_EYE, C.L_BROW, C.R_BROW, C.MOUTH, C.U_LIP, C.L_LIP),
    "clothes": (C.CLOTH,),
}


@dataclass
class SynthSample:
    """A rendered face and its annotations.

    image: uint8 [H, W, 3] RGB; label: uint8 [H, W] class ids (classes.CLASS_NAMES);
    landmarks: float32 [K, 2] pixel (x, y) (landmarks.LANDMARK_NAMES);
    attributes: {name: bool} (attributes.ATTRIBUTE_NAMES); caption: str;
    parts: {"hair" | "face" | "clothes": (crop uint8 [h, w, 3], mask bool [h, w]) or None
    when the part has no pixel (e.g. hair of a bald face)}; z: float64 [Z_DIM];
    factors: the Factors it was rendered from; seed/index: its stream (None if built from z);
    edges: (other, conf), each uint8 [H, W], the edge labels of ``render_with_edges`` when
    asked for, else None.
    """

    image: np.ndarray
    label: np.ndarray
    landmarks: np.ndarray
    attributes: dict
    caption: str
    parts: dict
    z: np.ndarray
    factors: Factors
    seed: int | None = None
    index: int | None = None
    edges: tuple | None = None

    @property
    def res(self) -> int:
        return int(self.image.shape[0])

    def attribute_vector(self) -> np.ndarray:
        """float32 [NUM_ATTRIBUTES] of 0/1."""
        return attribute_vector(self.attributes)


def part_crops(image: np.ndarray, label: np.ndarray) -> dict:
    """{part: (image crop, bool mask)} cropped to each part's bounding box, or None."""
    out = {}
    for name, cls in PART_CLASSES.items():
        mask = np.isin(label, cls)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            out[name] = None
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out[name] = (image[r0:r1, c0:c1].copy(), mask[r0:r1, c0:c1].copy())
    return out


def _caption_rng(z: np.ndarray) -> np.random.Generator:
    digest = hashlib.blake2b(np.ascontiguousarray(z, "<f8").tobytes(), digest_size=8).digest()
    return np.random.default_rng([int.from_bytes(digest, "little"), 3])


def sample_from_z(z, res: int, edges: bool = False) -> SynthSample:
    """Render the face of latent ``z`` (float [Z_DIM]) at ``res`` x ``res``; ``edges``
    also keeps the edge labels (same image and label bytes either way)."""
    res = check_res(res)
    z = np.asarray(z, np.float64).reshape(-1).copy()
    f = factors_from_z(z)
    lay = make_layout(f)
    if edges:
        image, label, other, conf = render_with_edges(f, res, layout=lay)
    else:
        image, label = render(f, res, layout=lay)
    attrs = attributes_from_factors(f)
    return SynthSample(image=image, label=label, landmarks=landmarks(lay, res), attributes=attrs,
                       caption=make_caption(attrs, f, _caption_rng(z)),
                       parts=part_crops(image, label), z=z, factors=f,
                       edges=(other, conf) if edges else None)


def sample(seed: int, index: int, res: int, edges: bool = False) -> SynthSample:
    """The sample of stream (seed, index): ``sample_from_z(sample_z(seed, index), res, edges)``."""
    s = sample_from_z(sample_z(seed, index), res, edges)
    s.seed, s.index = int(seed), int(index)
    return s


def render_pair(seed: int, index: int, res: int) -> tuple:
    """(a, b): ``a = sample(seed, index, res)`` and a re-render ``b`` of the same identity
    and accessories with pose and expression coordinates of z re-drawn from the stream
    (seed, index, PAIR_STREAM)."""
    a = sample(seed, index, res)
    z2 = with_new_pose_expression(a.z, np.random.default_rng([int(seed), int(index), PAIR_STREAM]))
    b = sample_from_z(z2, res)
    b.seed, b.index = int(seed), int(index)
    return a, b
