"""Pixel geometry of a DragGAN step: radii scaled with resolution, the motion-supervision
disk, the tracking window and the stop threshold.

Coordinates in this package are (x, y) = (column, row) pixel indices of the generator's
image (``img_resolution`` square). DragGAN's renderer stores [row, col]; the functions
here take (x, y) and index tensors as [..., row, col].

Three details of the official renderer (XingangPan/DragGAN viz/renderer.py) are kept on
purpose because they decide parity:

* radii are scaled by Python's ``round``, which rounds halves to even
  (``round(1.5) == 2``, ``round(2.5) == 2``, ``round(0.5) == 0``);
* the disk of radius r1 is selected on a grid built from ``linspace(0, h, h)``, whose
  spacing is h / (h - 1), not 1: pixel (row i, col j) is in the disk when
  ``hypot(i * h/(h-1) - y, j * w/(w-1) - x) < r1_px``. The disk therefore sits slightly
  up-left of the handle, more so far from the origin;
* the stop threshold is ``max(2 / 512 * h, 2)`` pixels.
"""

from __future__ import annotations

import math

import torch

#: The resolution DragGAN's radii r1, r2 are expressed at.
BASE_RESOLUTION = 512


def scaled_radius(r: float, h: int) -> int:
    """``round(r / 512 * h)`` with Python's banker's rounding (DragGAN's radius scaling).

    Examples: r1=3 at h=256 -> round(1.5) = 2; r2=12 at h=256 -> 6; r1=3 at h=1024 -> 6.
    """
    return round(r / BASE_RESOLUTION * h)


def stop_distance(h: int) -> float:
    """Every handle within this many pixels of its target stops the drag."""
    return max(2 / BASE_RESOLUTION * h, 2)


def disk_pixels(handle_xy: tuple[int, int], radius_px: int, h: int, w: int,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of the motion-supervision disk around a handle, on DragGAN's linspace grid.

    Args:
        handle_xy: (x, y) integer handle position.
        radius_px: disk radius in pixels (``scaled_radius(r1, h)``); strict ``<``.
        h, w: image height and width.
    Returns:
        (rows, cols): two int64 tensors [K] in row-major order (the order of
        ``torch.where`` on the [h, w] grid), possibly empty (radius 0).
    """
    x, y = handle_xy
    # Build only the rows/cols that can qualify (the grid point coordinate is
    # i * h / (h - 1), within radius of y), then test them on the official grid values.
    rows = _candidates(y, radius_px, h, device)
    cols = _candidates(x, radius_px, w, device)
    gy = torch.linspace(0, h, h, device=device)[rows]
    gx = torch.linspace(0, w, w, device=device)[cols]
    dist = ((gy[:, None] - y) ** 2 + (gx[None, :] - x) ** 2) ** 0.5
    ii, jj = torch.where(dist < radius_px)
    return rows[ii], cols[jj]


def _candidates(center: float, radius: int, size: int, device) -> torch.Tensor:
    """Indices i with |i * size/(size-1) - center| possibly < radius (one spare each side)."""
    scale = size / (size - 1) if size > 1 else 1.0
    lo = max(int(math.floor((center - radius) / scale)) - 1, 0)
    hi = min(int(math.ceil((center + radius) / scale)) + 1, size - 1)
    return torch.arange(lo, hi + 1, device=device)


def tracking_window(handle_xy: tuple[int, int], radius_px: int, h: int, w: int
                    ) -> tuple[int, int, int, int]:
    """The (2r+1)^2 search window clipped to the image: (top, bottom, left, right),
    half-open, as DragGAN slices ``feat[:, :, top:bottom, left:right]``."""
    x, y = handle_xy
    return (max(y - radius_px, 0), min(y + radius_px + 1, h),
            max(x - radius_px, 0), min(x + radius_px + 1, w))
