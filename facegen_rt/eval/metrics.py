"""Metrics shared by every pipeline's evaluation.

Conventions: images are float tensors [N, C, H, W] (RGB for colour metrics) with an
explicit ``data_range`` where it matters; label maps are integer [N, H, W] class ids;
landmarks are float [N, K, 2] pixel (x, y); features are float [N, D]. Statistics are
computed in float64. Functions accept torch tensors or numpy arrays.

Segmentation (mIoU)
    The headline number is the standard dataset-level mIoU: one confusion matrix over
    all pixels of all images, IoU_c = TP / (TP + FP + FN) per class, averaged over the
    classes whose union is non-empty (a class absent from both predictions and targets
    of the whole set is left out rather than counted as 0 or 1). :func:`per_image_miou`
    is the per-image variant: the mean IoU over the classes present in either map of
    that image.
Distribution distances
    FD-SF is the Fréchet distance between Gaussians fitted to evaluator embeddings
    (:func:`frechet_distance`); KID is the unbiased polynomial-kernel MMD^2 averaged over
    random subsets, as in Bińkowski et al. 2018 (:func:`kernel_inception_distance`).
Landmarks
    MD (as in DragGAN): mean Euclidean distance in pixels. NME: the error divided by the
    image's inter-ocular distance, the distance between the outer eye corners
    (``l_eye_outer``, ``r_eye_outer``; the 300-W convention), averaged over landmarks and
    images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthface.landmarks import LANDMARK_INDEX

IOD_LANDMARKS = ("l_eye_outer", "r_eye_outer")


def _t(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t if dtype is None else t.to(dtype)


# ------------------------------------------------------------------ segmentation

def confusion_matrix(pred, target, num_classes: int) -> torch.Tensor:
    """Pixel confusion matrix, int64 [C, C]: rows = target class, columns = predicted class.

    pred, target: integer [..., H, W] of the same shape, values in [0, C).
    """
    p, t = _t(pred).long(), _t(target).long()
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    p, t = p.reshape(-1), t.reshape(-1)
    if p.numel() and (min(int(p.min()), int(t.min())) < 0 or max(int(p.max()), int(t.max())) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(cm) -> np.ndarray:
    """IoU per class from a confusion matrix [C, C]: float64 [C], NaN where the class is
    in neither predictions nor targets."""
    cm = _t(cm).double()
    tp = torch.diagonal(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return iou.numpy()


def miou(cm) -> float:
    """Mean IoU over the classes with a non-empty union (see the module docstring)."""
    return float(np.nanmean(iou_per_class(cm)))


def dataset_miou(pred, target, num_classes: int) -> float:
    """Dataset-level mIoU of pred, target integer [N, H, W] (one confusion matrix)."""
    return miou(confusion_matrix(pred, target, num_classes))


def per_image_miou(pred, target, num_classes: int) -> np.ndarray:
    """Per-image mIoU, float64 [N]: the mean IoU over classes present in either map."""
    p, t = _t(pred), _t(target)
    if p.shape != t.shape or p.dim() != 3:
        raise ValueError(f"pred and target must both be [N, H, W], got {tuple(p.shape)} and {tuple(t.shape)}")
    return np.array([miou(confusion_matrix(p[i], t[i], num_classes)) for i in range(p.shape[0])])


# ------------------------------------------------------------------ SSIM

def gaussian_window1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian window, float64 [size]."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2-D Gaussian window, float64 [size, size] (outer product of the 1-D one)."""
    g = gaussian_window1d(size, sigma)
    return g[:, None] * g[None, :]


def ssim(x, y, data_range: float = 1.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), per image.

    x, y: float [N, C, H, W] (H, W >= window) on a range of width ``data_range`` (1 for
    [0, 1] images, 255 for [0, 255]). Local means, variances and covariance use an
    ``window`` x ``window`` Gaussian of std ``sigma`` over 'valid' positions only (no
    padding), C1 = (k1 L)^2, C2 = (k2 L)^2. Returns float64 [N]: the SSIM map averaged
    over channels and positions.
    """
    a, b = _t(x, torch.float64), _t(y, torch.float64)
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"x and y must both be [N, C, H, W], got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ValueError(f"images must be at least {window} x {window}, got {tuple(a.shape[-2:])}")
    c = a.shape[1]
    g = gaussian_window1d(window, sigma).to(a.device)
    gx, gy = g.view(1, 1, 1, -1).expand(c, 1, 1, window), g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def filt(z):   # the 2-D Gaussian is separable: two 1-D passes, 'valid' positions only
        return F.conv2d(F.conv2d(z, gx, groups=c), gy, groups=c)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a ** 2
    sbb = filt(b * b) - mu_b ** 2
    sab = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.mean((1, 2, 3))


# ------------------------------------------------------------------ region colour

def srgb_to_lab(rgb) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE L*a*b* (D65 white), float64, channel last: [..., 3] -> [..., 3]."""
    c = _t(rgb, torch.float64)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
    d = 6.0 / 29.0
    f = torch.where(xyz > d ** 3, xyz.clamp_min(0) ** (1.0 / 3.0), xyz / (3 * d * d) + 4.0 / 29.0)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def region_mean_colors(images, labels, num_classes: int):
    """Mean colour of each label region.

    images: float [N, 3, H, W]; labels: integer [N, H, W]. Returns (means float64
    [N, C, 3], NaN for an empty region; counts int64 [N, C]).
    """
    img, lab = _t(images, torch.float64), _t(labels).long()
    n = img.shape[0]
    if lab.shape != (n, *img.shape[-2:]):
        raise ValueError(f"labels must be [N, H, W] = {(n, *img.shape[-2:])}, got {tuple(lab.shape)}")
    oh = F.one_hot(lab.reshape(n, -1), num_classes).double()          # [N, HW, C]
    counts = oh.sum(1)                                                  # [N, C]
    sums = torch.einsum("npc,nkp->nck", oh, img.reshape(n, 3, -1))      # [N, C, 3]
    means = sums / counts.clamp_min(1)[..., None]
    means[counts == 0] = float("nan")
    return means, counts.long()


def region_color_distance(images_a, images_b, labels_a, labels_b=None, num_classes: int = 19,
                          space: str = "lab") -> torch.Tensor:
    """Per-region colour distance between two image sets.

    images_a, images_b: float [N, 3, H, W] RGB in [0, 1]; labels_a (and labels_b, default
    labels_a): integer [N, H, W] regions of each image. The mean colour of region c is
    taken in each image; the distance is Euclidean in CIE Lab (delta E 1976) for
    ``space="lab"`` or in RGB [0, 1] for ``"rgb"``. Returns float64 [N, C], NaN where the
    region is empty in either image. Average with ``torch.nanmean``.
    """
    if space not in ("lab", "rgb"):
        raise ValueError(f"space must be 'lab' or 'rgb', got {space!r}")
    ma, _ = region_mean_colors(images_a, labels_a, num_classes)
    mb, _ = region_mean_colors(images_b, labels_a if labels_b is None else labels_b, num_classes)
    if space == "lab":
        ma, mb = srgb_to_lab(ma), srgb_to_lab(mb)
    return (ma - mb).norm(dim=-1)


# ------------------------------------------------------------------ distribution distances

def _stats(feats) -> tuple[np.ndarray, np.ndarray]:
    f = _t(feats, torch.float64).numpy()
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``.

    mu: [D]; sigma: [D, D] symmetric PSD. The trace term uses the symmetric form
    (equal to tr((S1 S2)^1/2)) so only symmetric eigendecompositions are needed.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    r1 = _sqrtm_psd(s1)
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_distance(feats_a, feats_b) -> float:
    """FD-SF: Fréchet distance between Gaussians fitted to features [Na, D] and [Nb, D]
    (means and unbiased covariances)."""
    return frechet_distance_from_stats(*_stats(feats_a), *_stats(feats_b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x . y / D + coef0) ** degree`` for x [n, D], y [m, D] -> [n, m]."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 with the polynomial kernel; x [m, D], y [n, D], m, n >= 2."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x, degree, coef0), polynomial_kernel(y, y, degree, coef0), \
        polynomial_kernel(x, y, degree, coef0)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(feats_a, feats_b, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID on evaluator embeddings: mean and std of the unbiased polynomial-kernel MMD^2
    (degree 3, ``x . y / D + 1``) over ``num_subsets`` random subsets of
    ``min(subset_size, Na, Nb)`` rows of each set, drawn without replacement.

    feats: float [Na, D], [Nb, D]. Returns (mean, std); the mean can be slightly
    negative since the estimator is unbiased.
    """
    a, b = _t(feats_a, torch.float64).numpy(), _t(feats_b, torch.float64).numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be [Na, D] and [Nb, D], got {a.shape} and {b.shape}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 rows in each set")
    rng = np.random.default_rng(seed)
    vals = np.array([mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)],
                                   b[rng.choice(b.shape[0], m, replace=False)]) for _ in range(num_subsets)])
    return float(vals.mean()), float(vals.std())


# ------------------------------------------------------------------ landmarks

def landmark_distances(pred, target) -> torch.Tensor:
    """Euclidean errors in pixels, float64 [N, K], of pred, target float [N, K, 2]."""
    p, t = _t(pred, torch.float64), _t(target, torch.float64)
    if p.shape != t.shape or p.shape[-1] != 2:
        raise ValueError(f"pred and target must both be [..., K, 2], got {tuple(p.shape)} and {tuple(t.shape)}")
    return (p - t).norm(dim=-1)


def mean_distance(pred, target) -> float:
    """MD: mean Euclidean distance in pixels over all points (DragGAN's metric).
    pred, target: float [N, K, 2] (or [K, 2])."""
    return float(landmark_distances(pred, target).mean())


def inter_ocular_distance(landmarks) -> torch.Tensor:
    """Distance between the outer eye corners, float64 [N], of landmarks [N, 39, 2]."""
    lm = _t(landmarks, torch.float64)
    i, j = (LANDMARK_INDEX[n] for n in IOD_LANDMARKS)
    return (lm[:, i] - lm[:, j]).norm(dim=-1)


def normalized_mean_error(pred, target) -> float:
    """NME: mean over images and landmarks of error / that image's inter-ocular distance
    (of the target landmarks). pred, target: float [N, 39, 2]. A fraction (x 100 = %)."""
    d = landmark_distances(pred, target)
    return float((d / inter_ocular_distance(target)[:, None]).mean())


# ------------------------------------------------------------------ attributes

def attribute_accuracy(probs, targets, threshold: float = 0.5) -> tuple[float, np.ndarray]:
    """Binary attribute accuracy.

    probs: float [N, A] probabilities (predicted positive when > threshold); targets:
    [N, A] of 0/1. Returns (mean over attributes of the per-attribute accuracy,
    per-attribute accuracy float64 [A]).
    """
    p, t = _t(probs, torch.float64), _t(targets, torch.float64)
    if p.shape != t.shape or p.dim() != 2:
        raise ValueError(f"probs and targets must both be [N, A], got {tuple(p.shape)} and {tuple(t.shape)}")
    per = ((p > threshold).double() == (t > 0.5).double()).double().mean(0).numpy()
    return float(per.mean()), per
