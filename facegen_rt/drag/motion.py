"""DragGAN's two per-step computations on the resized feature map: point tracking and
the motion-supervision (plus mask) loss.

Features are :class:`~facegen_rt.drag.resized.ResizedFeature` views of the block feature
resized to the image (only the pixels read are computed). Points are (x, y).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .geometry import disk_pixels, tracking_window
from .resized import ResizedFeature


@torch.no_grad()
def track_point(feat: ResizedFeature, ref: torch.Tensor, handle_xy: tuple[int, int],
                radius_px: int) -> tuple[int, int]:
    """Nearest-neighbour tracking: the pixel of the (2r+1)^2 window around the handle
    (clipped to the image) whose feature is nearest in L2 to ``ref``.

    Args:
        feat: the current resized feature (only the window is computed).
        ref: [C] the handle's frozen feature f_i = F0(p_i0).
        handle_xy: current (x, y) handle.
        radius_px: ``scaled_radius(r2, h)``.
    Returns:
        the new (x, y). Ties go to the first pixel in row-major order.
    """
    top, bottom, left, right = tracking_window(handle_xy, radius_px, feat.h, feat.w)
    patch = feat.patch(top, bottom, left, right)                        # [1, C, hh, ww]
    dist = torch.linalg.norm(patch - ref.reshape(1, -1, 1, 1), dim=1)  # [1, hh, ww]
    idx = int(torch.min(dist.view(1, -1), -1)[1])
    width = right - left
    return idx % width + left, idx // width + top


def motion_direction(handle_xy: Sequence[float], target_xy: Sequence[float]) -> torch.Tensor:
    """t - p as a float32 (dx, dy) tensor (DragGAN computes it in float32)."""
    return torch.tensor([target_xy[0] - handle_xy[0], target_xy[1] - handle_xy[1]],
                        dtype=torch.float32)


def motion_loss_one(feat: ResizedFeature, handle_xy: tuple[int, int], direction: torch.Tensor,
                    radius_px: int) -> Optional[torch.Tensor]:
    """One handle's motion-supervision term.

    ``L1(F(q).detach(), F(q + d))`` averaged over the disk pixels q and the C channels,
    d = direction / (|direction| + 1e-7), F(q + d) sampled bilinearly on the resized map
    (grid_sample, align_corners=True, zeros outside the image).

    Only the rectangle around the disk, one pixel wider on each side (|d| <= 1) and
    clipped to the image, is resized; sampling inside it equals sampling the whole map,
    because a sample outside the rectangle is outside the image, where both read zeros.

    Args:
        feat: the resized feature (with grad).
        direction: (dx, dy) float32 tensor, t - p.
    Returns:
        a scalar tensor, or None when the disk is empty (radius rounds to 0 below ~86^2
        images; DragGAN would produce NaN there, this skips the handle instead).
    """
    h, w = feat.h, feat.w
    rows, cols = disk_pixels(handle_xy, radius_px, h, w)
    if rows.numel() == 0:
        return None
    top, bottom = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, h)
    left, right = max(int(cols.min()) - 1, 0), min(int(cols.max()) + 2, w)
    patch = feat.patch(top, bottom, left, right)  # [1, C, ph, pw]
    d = direction / (torch.linalg.norm(direction) + 1e-7)
    gy = rows + d[1] - top  # sample positions on the rectangle
    gx = cols + d[0] - left
    ph, pw = bottom - top, right - left
    grid = torch.stack([gx / max(pw - 1, 1) * 2 - 1, gy / max(ph - 1, 1) * 2 - 1], dim=-1)
    shifted = F.grid_sample(patch, grid.reshape(1, 1, -1, 2).to(patch.device),
                            align_corners=True).squeeze(2)  # [1, C, K]
    centre = patch[:, :, (rows - top).to(patch.device), (cols - left).to(patch.device)]
    return F.l1_loss(centre.detach(), shifted)


def mask_loss(feat: torch.Tensor, feat0: torch.Tensor, m_fix: torch.Tensor) -> torch.Tensor:
    """``L1(F * M_fix, F0 * M_fix)``, the mean over all C*h*w elements.

    Args:
        feat, feat0: [1, C, h, w] current and reference resized features.
        m_fix: [h, w] float, 1 where the image must stay fixed.
    """
    m = m_fix.to(feat.device, feat.dtype)[None, None]
    return F.l1_loss(feat * m, feat0 * m)


def mask_term_active(m_fix: Optional[torch.Tensor]) -> bool:
    """DragGAN adds the mask term only when M_fix holds both a 0 and a 1 (a mask that is
    all editable or all fixed adds nothing)."""
    return m_fix is not None and bool(m_fix.min() == 0) and bool(m_fix.max() == 1)
