"""Point tracking, the motion-supervision loss and the lazily resized feature."""

import math

import pytest
import torch
import torch.nn.functional as F

from facegen_rt.drag.motion import (mask_loss, mask_term_active, motion_direction,
                                    motion_loss_one, track_point)
from facegen_rt.drag.resized import ResizedFeature, interpolation_matrix


def full(feat):
    """A ResizedFeature of a map that is already image-sized (no resizing)."""
    return ResizedFeature(feat, feat.shape[-2], feat.shape[-1])


def test_tracking_finds_a_planted_match():
    feat = torch.randn(1, 8, 40, 40)
    ref = torch.randn(8) * 5  # far from every random feature ...
    feat[0, :, 23, 17] = ref + 0.01  # ... except the planted one (row 23, col 17)
    assert track_point(full(feat), ref, (15, 20), radius_px=6) == (17, 23)
    # Outside the (2r+1)^2 window it cannot be found.
    assert track_point(full(feat), ref, (15, 10), radius_px=6) != (17, 23)


def test_tracking_clips_the_window_at_the_border():
    feat = torch.randn(1, 4, 20, 20)
    ref = torch.full((4,), 9.0)
    feat[0, :, 0, 19] = ref
    assert track_point(full(feat), ref, (17, 2), radius_px=3) == (19, 0)


def test_tracking_stays_put_on_its_own_feature():
    feat = torch.randn(1, 16, 32, 32)
    assert track_point(full(feat), feat[0, :, 9, 14].clone(), (14, 9), 3) == (14, 9)


def test_motion_loss_on_a_linear_map_is_the_directional_slope():
    """F_c(y, x) = a_c x + b_c y + k_c: bilinear sampling is exact, so the L1 term is
    mean_c |a_c dx + b_c dy| with d = (3, 4) / 5."""
    h = w = 24
    a, b, k = torch.randn(5), torch.randn(5), torch.randn(5)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    feat = (a[:, None, None] * xx + b[:, None, None] * yy + k[:, None, None])[None]
    feat.requires_grad_(True)
    loss = motion_loss_one(full(feat), (10, 12), motion_direction((10, 12), (13, 16)), 2)
    d = torch.tensor([3.0, 4.0]) / (5 + 1e-7)
    want = (a * d[0] + b * d[1]).abs().mean()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)
    loss.backward()  # the gradient flows into the sampled side only
    assert feat.grad is not None and feat.grad.abs().sum() > 0


def test_motion_loss_by_hand_with_zero_padding():
    """A handle at the border: the disk and the bilinear samples, written out by hand."""
    torch.manual_seed(0)
    h = w = 6
    feat = torch.randn(1, 3, h, w)
    handle, target = (0, 2), (0, 5)  # move down: d = (0, 1)
    radius = 1
    xx, yy = torch.meshgrid(torch.linspace(0, h, h), torch.linspace(0, w, w), indexing="ij")
    rows, cols = torch.where(((xx - handle[1]) ** 2 + (yy - handle[0]) ** 2) ** 0.5 < radius)
    terms = []
    for i, j in zip(rows.tolist(), cols.tolist()):
        y, x = i + 1.0, j + 0.0

        def px(r, c):
            return feat[0, :, r, c] if 0 <= r < h and 0 <= c < w else torch.zeros(3)
        y0, x0 = math.floor(y), math.floor(x)
        fy, fx = y - y0, x - x0
        sample = ((1 - fy) * (1 - fx) * px(y0, x0) + (1 - fy) * fx * px(y0, x0 + 1)
                  + fy * (1 - fx) * px(y0 + 1, x0) + fy * fx * px(y0 + 1, x0 + 1))
        terms.append((feat[0, :, i, j] - sample).abs())
    want = torch.stack(terms).mean()
    got = motion_loss_one(full(feat), handle, motion_direction(handle, target), radius)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_motion_loss_equals_the_dense_formulation():
    """Patch-only resizing gives the renderer's value on the fully resized map."""
    torch.manual_seed(1)
    feat = torch.randn(1, 6, 16, 16)
    h = w = 64
    dense = F.interpolate(feat, [h, w], mode="bilinear")
    lazy = ResizedFeature(feat, h, w)
    for handle, target in [((30, 20), (40, 25)), ((0, 63), (5, 50)), ((63, 1), (50, 0))]:
        direction = motion_direction(handle, target)
        got = motion_loss_one(lazy, handle, direction, 2)
        want = motion_loss_one(full(dense), handle, direction, 2)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_size,out_size", [(16, 64), (128, 256), (32, 32), (5, 13)])
def test_resized_patches_match_interpolate(in_size, out_size):
    feat = torch.randn(1, 3, in_size, in_size)
    dense = F.interpolate(feat, [out_size, out_size], mode="bilinear")
    lazy = ResizedFeature(feat, out_size, out_size)
    torch.testing.assert_close(lazy.patch(0, out_size, 0, out_size), dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lazy.patch(2, 7, 1, 4), dense[:, :, 2:7, 1:4], rtol=1e-5, atol=1e-5)
    assert interpolation_matrix(out_size, in_size).sum(1).sub(1).abs().max() < 1e-6


def test_mask_term():
    feat, feat0 = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    m_fix = torch.zeros(4, 4)
    m_fix[:2] = 1
    want = (feat - feat0)[:, :, :2].abs().sum() / feat.numel()
    torch.testing.assert_close(mask_loss(feat, feat0, m_fix), want)
    assert mask_term_active(m_fix)
    assert not mask_term_active(torch.ones(4, 4))   # all fixed: DragGAN adds nothing
    assert not mask_term_active(torch.zeros(4, 4))  # all editable
    assert not mask_term_active(None)
