"""The drag feature: which synthesis block, and how it is brought to image size.

DragGAN tracks and supervises on the output of synthesis block index 5 (``feature_idx
= 5``), the 128^2 block "b128", for its 256^2, 512^2 and 1024^2 generators alike, after
resizing it bilinearly (``align_corners=False``) to the image size.

:func:`resolve_feature_block` keeps that rule for any generator: the block at
resolution 128 when the generator has one (index 5 whenever img_resolution >= 128);
otherwise, for smaller generators, the block whose resolution is nearest to 128 in
log2 (ties go to the larger block), which is the last block. An explicit index
(DragGAN's ``feature_idx``, negative counts from the end) or a name "b<res>" overrides it.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

#: DragGAN's feature block resolution (``feature_idx = 5``).
DEFAULT_FEATURE_RESOLUTION = 128

FeatureBlock = Union[int, str, None]


def block_resolutions(generator) -> list[int]:
    """[4, 8, ..., R] of ``generator.synthesis``; TypeError if it is not a StyleGAN2
    generator with per-block features."""
    synthesis = getattr(generator, "synthesis", None)
    resolutions = getattr(synthesis, "block_resolutions", None)
    if synthesis is None or not resolutions or not hasattr(synthesis, "blocks"):
        raise TypeError("drag: the generator must be a facegen_rt StyleGAN2 Generator "
                        "(with .synthesis.block_resolutions and up_to_block support), got "
                        f"{type(generator).__name__}")
    return list(resolutions)


def resolve_feature_block(generator, feature_block: FeatureBlock = None) -> int:
    """Index (0-based, non-negative) of the synthesis block whose output is the drag feature.

    Args:
        feature_block: None (the 128^2 block, or the nearest; see module docstring),
            an int index (DragGAN's feature_idx; negative counts from the end) or "b<res>".
    Raises:
        ValueError: the generator has no such block.
    """
    resolutions = block_resolutions(generator)
    n = len(resolutions)
    if feature_block is None:
        target = math.log2(DEFAULT_FEATURE_RESOLUTION)
        # min over (distance, -resolution): nearest in log2, ties to the larger block.
        best = min(range(n), key=lambda i: (abs(math.log2(resolutions[i]) - target),
                                             -resolutions[i]))
        return best
    if isinstance(feature_block, str):
        name = feature_block.strip()
        if not (name.startswith("b") and name[1:].isdigit()) or int(name[1:]) not in resolutions:
            raise ValueError(f"drag: the generator has no synthesis block {feature_block!r}; "
                             f"its blocks are {['b%d' % r for r in resolutions]}")
        return resolutions.index(int(name[1:]))
    if isinstance(feature_block, bool) or not isinstance(feature_block, int):
        raise TypeError(f"drag: feature_block must be None, an int index or 'b<res>', "
                        f"got {feature_block!r}")
    if not -n <= feature_block < n:
        raise ValueError(f"drag: feature_block={feature_block} is out of range: the generator "
                         f"has {n} synthesis blocks ({['b%d' % r for r in resolutions]})")
    return feature_block % n


def ws_used_up_to(generator, block_index: int) -> int:
    """How many leading w vectors blocks 0..block_index read (the rest are not used)."""
    used = 0
    for block in generator.synthesis.blocks()[:block_index + 1]:
        used += block.num_conv
    # The block's own ToRGB reads one more, but the feature forward skips ToRGB.
    return used


def resize_features(feat: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[N, C, hf, wf] -> [N, C, h, w], bilinear, align_corners=False (DragGAN's resize)."""
    if feat.shape[-2:] == (h, w):
        return feat
    return F.interpolate(feat, [h, w], mode="bilinear")


def feature_at(feat_resized: torch.Tensor, xy: tuple[int, int]) -> torch.Tensor:
    """[1, C, h, w] resized feature -> [C] at integer pixel (x, y)."""
    x, y = xy
    return feat_resized[0, :, y, x]


def synth_features(generator, ws: torch.Tensor, block_index: int, noise_mode: str = "const",
                   fused_modconv: bool = False, dtype: Optional[torch.dtype] = None
                   ) -> torch.Tensor:
    """Run synthesis blocks 0..block_index only (no ToRGB, no image) -> [N, C, r, r] float32."""
    feats = generator.synthesis(ws, up_to_block=block_index, noise_mode=noise_mode,
                                fused_modconv=fused_modconv, dtype=dtype)
    return feats[-1].float()
