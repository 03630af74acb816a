"""Known-answer tests of facegen_rt.eval.metrics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegen_rt.eval import metrics as M

C = 19


def _labels(n=3, h=37, w=41):
    return torch.randint(0, C, (n, h, w))


# ------------------------------------------------------------------ mIoU

def test_miou_identical_is_one():
    lab = _labels()
    assert M.dataset_miou(lab, lab, C) == 1.0
    np.testing.assert_array_equal(M.per_image_miou(lab, lab, C), 1.0)


def test_miou_shuffled_is_low():
    lab = _labels(4, 64, 64)
    shuffled = lab.reshape(-1)[torch.randperm(lab.numel())].reshape(lab.shape)
    assert M.dataset_miou(shuffled, lab, C) < 0.1
    assert M.per_image_miou(shuffled, lab, C).max() < 0.1


def test_miou_known_value():
    # target: left half 0, right half 1; prediction: one column of class 1 too many
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[..., 2:] = 1
    p = t.clone()
    p[..., 1] = 1
    # class 0: TP 4, union 8 -> 0.5; class 1: TP 8, union 12 -> 2/3
    assert M.dataset_miou(p, t, 3) == pytest.approx((0.5 + 2 / 3) / 2)
    cm = M.confusion_matrix(p, t, 3)
    assert cm.sum() == 16 and cm[0, 1] == 4
    assert math.isnan(M.iou_per_class(cm)[2])     # absent everywhere: left out, not 0


def test_miou_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        M.confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), C)
    with pytest.raises(ValueError, match="class ids"):
        M.confusion_matrix(torch.full((2, 2), C), torch.zeros(2, 2), C)


# ------------------------------------------------------------------ SSIM

def _ssim_reference(x, y, data_range):
    """Straightforward float64 SSIM: explicit loops over valid window positions."""
    n, c, h, w = x.shape
    g = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.zeros(n)
    for i in range(n):
        vals = []
        for ch in range(c):
            a, b = x[i, ch], y[i, ch]
            for r in range(h - 10):
                for s in range(w - 10):
                    pa, pb = a[r:r + 11, s:s + 11], b[r:r + 11, s:s + 11]
                    ma, mb = (win * pa).sum(), (win * pb).sum()
                    va = (win * (pa - ma) ** 2).sum()
                    vb = (win * (pb - mb) ** 2).sum()
                    cov = (win * (pa - ma) * (pb - mb)).sum()
                    vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
        out[i] = np.mean(vals)
    return out


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_matches_float64_reference(data_range):
    x = torch.rand(2, 3, 19, 23, dtype=torch.float64) * data_range
    y = (x + 0.2 * data_range * torch.randn_like(x)).clamp(0, data_range)
    got = M.ssim(x.float(), y.float(), data_range=data_range).numpy()
    ref = _ssim_reference(x.numpy(), y.numpy(), data_range)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_ssim_identical_is_one_and_drops_with_noise():
    x = torch.rand(3, 3, 48, 48)
    np.testing.assert_allclose(M.ssim(x, x).numpy(), 1.0, atol=1e-12)
    s1 = M.ssim(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))
    s2 = M.ssim(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))
    assert (s1 < 1).all() and (s2 < s1).all()
    # the same image on a [0, 255] scale gives the same SSIM when data_range follows it
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    np.testing.assert_allclose(M.ssim(x * 255, y * 255, data_range=255).numpy(), M.ssim(x, y).numpy(),
                               atol=1e-10)


def test_ssim_rejects_small_images():
    with pytest.raises(ValueError, match="at least 11"):
        M.ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))


# ------------------------------------------------------------------ region colour

def test_region_color_distance():
    img = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    lab = torch.randint(0, 4, (2, 16, 16))
    lab[:, 0, 0] = 3
    d = M.region_color_distance(img, img, lab, num_classes=C)
    assert d.shape == (2, C)
    assert torch.nanmean(d) == 0 and torch.isnan(d[:, 4:]).all()
    # a constant RGB offset moves every region's mean by exactly that offset
    shifted = img.clone()
    shifted[:, 0] += 0.1
    d = M.region_color_distance(img, shifted, lab, num_classes=C, space="rgb")
    np.testing.assert_allclose(d[:, :4].numpy(), 0.1, atol=1e-12)


def test_lab_white_and_black():
    np.testing.assert_allclose(M.srgb_to_lab(torch.ones(3)).numpy(), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(M.srgb_to_lab(torch.zeros(3)).numpy(), [0, 0, 0], atol=1e-9)


# ------------------------------------------------------------------ FD and KID

def test_fd_closed_form_commuting():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert M.frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, abs=1e-10)


def test_fd_closed_form_general():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # tr sqrt(S1 S2) from the eigenvalues of the (non-symmetric) product
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert M.frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_from_samples():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(m, 4 I): |m|^2 + 4 * (1 - 2)^2
    y = 2 * torch.randn(20000, 4, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0, 0, 2])
    assert M.frechet_distance(x, y) == pytest.approx(5 + 4, rel=0.05)


def test_kid():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(600, 16, generator=g)
    y = torch.randn(600, 16, generator=g)
    same, std = M.kernel_inception_distance(x, y, num_subsets=20, subset_size=300)
    assert abs(same) < 3 * std + 1e-3
    # the very same rows: the unbiased estimate is -2 (mean k(x, x) - mean k(x, y)) / (m - 1)
    # per subset, i.e. about 0 on the scale of the kernel values over the subset size
    ident, _ = M.kernel_inception_distance(x, x, num_subsets=10, subset_size=600)
    kxx = M.polynomial_kernel(x.double().numpy(), x.double().numpy())
    assert -2 * np.diag(kxx).mean() / 599 <= ident <= 0
    shifted, _ = M.kernel_inception_distance(x, y + 0.5, num_subsets=20, subset_size=300)
    assert shifted > 0.05 and shifted > 10 * abs(same)


def test_mmd_matches_definition():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 1

    def k(a, b):
        return (a @ b / 3 + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / 35
    assert M.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


# ------------------------------------------------------------------ landmarks and attributes

def test_landmark_distance_exact():
    lm = torch.rand(5, 39, 2) * 128
    assert M.mean_distance(lm, lm) == 0
    assert M.mean_distance(lm + torch.tensor([3.0, 4.0]), lm) == pytest.approx(5.0, abs=1e-5)
    iod = M.inter_ocular_distance(lm)
    assert M.normalized_mean_error(lm + torch.tensor([3.0, 4.0]), lm) == pytest.approx(
        float((5.0 / iod).mean()), rel=1e-6)


def test_attribute_accuracy():
    t = torch.randint(0, 2, (10, 32)).float()
    mean, per = M.attribute_accuracy(t * 0.8 + 0.1, t)
    assert mean == 1.0 and per.shape == (32,)
    wrong = t.clone()
    wrong[:5, 0] = 1 - wrong[:5, 0]        # half of attribute 0 flipped
    mean, per = M.attribute_accuracy(wrong, t)
    assert per[0] == 0.5 and (per[1:] == 1).all() and mean == pytest.approx(1 - 0.5 / 32)
