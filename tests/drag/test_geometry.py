"""Radius scaling (banker's rounding), the linspace-grid disk, windows, stop distance."""

import pytest
import torch

from facegen_rt.drag import disk_pixels, scaled_radius, stop_distance, tracking_window


@pytest.mark.parametrize("r,h,want", [
    (3, 512, 3), (3, 1024, 6), (12, 256, 6), (12, 512, 12), (12, 128, 3),
    (3, 256, 2),    # 1.5 -> 2 (even)
    (5, 256, 2),    # 2.5 -> 2 (even), not 3
    (7, 256, 4),    # 3.5 -> 4 (even)
    (3, 128, 1),    # 0.75 -> 1
    (1, 256, 0),    # 0.5 -> 0 (even)
])
def test_scaled_radius_uses_bankers_rounding(r, h, want):
    assert scaled_radius(r, h) == want


def test_stop_distance():
    assert stop_distance(128) == 2 and stop_distance(256) == 2 and stop_distance(512) == 2
    assert stop_distance(1024) == 4


def official_disk(y, x, radius, h, w):
    """The renderer's construction, written out: a meshgrid of linspace(0, h, h)."""
    xx, yy = torch.meshgrid(torch.linspace(0, h, h), torch.linspace(0, w, w), indexing="ij")
    distance = ((xx - y) ** 2 + (yy - x) ** 2) ** 0.5
    return torch.where(distance < radius)


@pytest.mark.parametrize("x,y", [(0, 0), (5, 3), (100, 120), (200, 200), (255, 255), (254, 1)])
@pytest.mark.parametrize("radius", [1, 2, 6])
def test_disk_matches_the_linspace_grid(x, y, radius):
    h = w = 256
    rows, cols = disk_pixels((x, y), radius, h, w)
    want_rows, want_cols = official_disk(y, x, radius, h, w)
    assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)


def test_disk_quirk_sits_up_left_of_far_handles():
    """Grid coordinate i * 256/255 runs ahead of i, so far from the origin the disk covers
    pixels above/left of the handle more than below/right of it."""
    rows, cols = disk_pixels((200, 200), 2, 256, 256)
    assert rows.float().mean() < 200 and cols.float().mean() < 200
    naive = {(i, j) for i in range(197, 204) for j in range(197, 204)
             if (i - 200) ** 2 + (j - 200) ** 2 < 4}
    assert set(zip(rows.tolist(), cols.tolist())) != naive
    # Even near the origin: row 1 sits at 1.004 on the grid, 1.988 < 2 from row 3
    # (3.012), so (row 1, col 3) is in the disk although it is exactly 2 px away.
    rows, cols = disk_pixels((3, 3), 2, 256, 256)
    assert (1, 3) in set(zip(rows.tolist(), cols.tolist()))
    assert (5, 3) not in set(zip(rows.tolist(), cols.tolist()))


def test_disk_radius_zero_is_empty():
    rows, cols = disk_pixels((10, 10), 0, 64, 64)
    assert rows.numel() == 0 and cols.numel() == 0


def test_tracking_window_is_clipped():
    assert tracking_window((10, 20), 6, 256, 256) == (14, 27, 4, 17)
    assert tracking_window((2, 254), 6, 256, 256) == (248, 256, 0, 9)
