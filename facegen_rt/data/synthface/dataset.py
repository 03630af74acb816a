"""A torch Dataset of SynthFace samples rendered on the fly.

Splits are disjoint by construction: item ``i`` of the "train" split is stream
``(seed, i)`` and item ``i`` of the "heldout" split is stream ``(seed, HELDOUT_OFFSET + i)``;
the train split refuses ``n > HELDOUT_OFFSET``, so no (seed, index) stream, and hence
no z, is shared. Evaluators must only ever read "heldout" for testing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .factors import HELDOUT_OFFSET
from .render import check_res
from .sample import SynthSample, sample

SPLITS = ("train", "heldout")


def split_index(split: str, i: int) -> int:
    """Stream index of item ``i`` of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return i if split == "train" else HELDOUT_OFFSET + i


def to_tensors(s: SynthSample) -> dict:
    """Tensors of a sample: image float32 [3, H, W] in [-1, 1]; label int64 [H, W];
    landmarks float32 [K, 2] (pixels); attributes float32 [A] (0/1); z float32 [Z_DIM];
    caption str; index int."""
    img = torch.from_numpy(s.image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
    return {
        "image": img,
        "label": torch.from_numpy(s.label.astype(np.int64)),
        "landmarks": torch.from_numpy(s.landmarks),
        "attributes": torch.from_numpy(s.attribute_vector()),
        "z": torch.from_numpy(s.z.astype(np.float32)),
        "caption": s.caption,
        "index": s.index,
    }


class SynthFaceDataset(Dataset):
    """``n`` SynthFace samples at ``res`` x ``res`` from dataset seed ``seed``.

    ``__getitem__(i)`` returns the dict of :func:`to_tensors` for stream
    ``(seed, split_index(split, i))``. ``transform``, if given, is applied to that dict.
    """

    def __init__(self, n: int, res: int, seed: int = 0, split: str = "train", transform=None):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n > HELDOUT_OFFSET:
            raise ValueError(f"n must be <= {HELDOUT_OFFSET} so that splits stay disjoint")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.n, self.res, self.seed, self.split = int(n), check_res(res), int(seed), split
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def stream_index(self, i: int) -> int:
        """The (seed, index) stream index behind item ``i``."""
        return split_index(self.split, i)

    def sample(self, i: int) -> SynthSample:
        """The full SynthSample of item ``i`` (numpy arrays, parts, factors)."""
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} samples")
        return sample(self.seed, self.stream_index(i % self.n), self.res)

    def __getitem__(self, i: int) -> dict:
        item = to_tensors(self.sample(int(i)))
        return self.transform(item) if self.transform is not None else item
