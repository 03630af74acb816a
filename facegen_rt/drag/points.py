"""Drag points and the checks on user input (points, masks, point ids)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch


class UnknownPointError(KeyError):
    """A point id that the session does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass
class DragPoint:
    """One handle/target pair, in (x, y) pixels of the generator's image.

    handle: the current handle (integer pixel; moves as tracking follows the content).
    target: where the handle should go (float pixels allowed).
    origin: where the handle was last placed by the user (``reset(keep_points=True)``
        returns the handle there).
    """

    id: int
    handle: tuple[int, int]
    target: tuple[float, float]
    origin: tuple[int, int]

    def distance(self) -> float:
        """|target - handle| in pixels."""
        return math.hypot(self.target[0] - self.handle[0], self.target[1] - self.handle[1])


def check_xy(name: str, xy: Any, h: int, w: int) -> tuple[float, float]:
    """Validate an (x, y) pair inside the h x w image: two finite numbers with
    0 <= x <= w - 1 and 0 <= y <= h - 1. Returns them as floats."""
    if isinstance(xy, torch.Tensor):
        xy = xy.detach().cpu().tolist()
    if isinstance(xy, (str, bytes)) or not isinstance(xy, Sequence) and not hasattr(xy, "__len__"):
        raise ValueError(f"drag: {name} must be an (x, y) pair, got {xy!r}")
    try:
        values = [float(v) for v in xy]
    except (TypeError, ValueError):
        raise ValueError(f"drag: {name} must be an (x, y) pair of numbers, got {xy!r}") from None
    if len(values) != 2:
        raise ValueError(f"drag: {name} must be an (x, y) pair, got {len(values)} values")
    x, y = values
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"drag: {name} has a non-finite coordinate: ({x}, {y})")
    if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
        raise ValueError(f"drag: {name} ({x:g}, {y:g}) is outside the {w}x{h} image "
                         f"(x in [0, {w - 1}], y in [0, {h - 1}])")
    return x, y


def round_xy(xy: tuple[float, float]) -> tuple[int, int]:
    """Handles live on integer pixels: Python round (halves to even), as DragGAN rounds
    the handle when it reads its reference feature."""
    return round(xy[0]), round(xy[1])


def check_mask(mask: Any, h: int, w: int) -> torch.Tensor:
    """Editable-region mask -> float32 [h, w] in [0, 1] (1 = editable).

    Accepts a bool or numeric tensor / array of shape [h, w] (or [1, h, w], [1, 1, h, w]).
    """
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"drag: mask must be a [{h}, {w}] tensor or array, "
                             f"got {type(mask).__name__}") from None
    m = mask.detach()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if tuple(m.shape) != (h, w):
        raise ValueError(f"drag: mask must have shape ({h}, {w}) (the image size), "
                         f"got {tuple(mask.shape)}")
    if m.dtype == torch.bool:
        return m.float().cpu()
    if not (m.dtype.is_floating_point or m.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise ValueError(f"drag: mask must be bool or numeric, got {m.dtype}")
    m = m.float().cpu()
    if not torch.isfinite(m).all():
        raise ValueError("drag: mask has non-finite values")
    if m.min() < 0 or m.max() > 1:
        raise ValueError(f"drag: mask values must lie in [0, 1], got [{float(m.min()):g}, "
                         f"{float(m.max()):g}]")
    return m
