"""Image distortions: fixed-strength ones for the robustness report, random ones for training.

All functions take and return images as float [N, 3, H, W] in [0, 1] (RGB) unless said
otherwise; outputs are clamped to [0, 1]. Randomness always comes from an explicit
``torch.Generator`` so that runs replay exactly.

Fixed-strength distortions of the evaluator report (:data:`REPORT_DISTORTIONS`):

==========  ================================================================
blur        Gaussian blur, sigma 1.0 px (kernel radius ceil(3 sigma), reflect padding)
noise       additive Gaussian noise, sigma 0.03 (of the [0, 1] range), seeded
jpeg50      JPEG round trip at quality 50 through Pillow (4:2:0 chroma, Pillow's default)
jitter      brightness, contrast and saturation factors each 1 - 0.1 or 1 + 0.1, sign
            drawn per image and factor from a seeded generator (no hue shift)
==========  ================================================================
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ITU-R BT.601 luma weights, as in the usual colour-jitter definitions
_LUMA = (0.299, 0.587, 0.114)


def _check(img: torch.Tensor) -> None:
    if not isinstance(img, torch.Tensor) or not img.is_floating_point():
        raise TypeError("images must be a floating torch.Tensor in [0, 1]")
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"images must have shape [N, 3, H, W], got {tuple(img.shape)}")


def gaussian_kernel1d(sigma: float, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian, float [2r + 1] with r = ceil(3 sigma) (at least 1)."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(img: torch.Tensor, sigma) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding.

    img: float [N, 3, H, W]; sigma: a float, or float [N] (one sigma per image; 0 = no blur).
    """
    _check(img)
    sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    if sig.numel() == 1:
        sig = sig.expand(img.shape[0])
    out = img.clone()
    for i, s in enumerate(sig.tolist()):
        if s <= 1e-3:
            continue
        k = gaussian_kernel1d(s, img.dtype).to(img.device)
        r = (k.numel() - 1) // 2
        x = img[i:i + 1]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        out[i:i + 1] = x
    return out


def gaussian_noise(img: torch.Tensor, sigma, generator: torch.Generator) -> torch.Tensor:
    """img + sigma * N(0, 1), clamped. sigma: float or float [N] (per image)."""
    _check(img)
    sig = torch.as_tensor(sigma, dtype=img.dtype).reshape(-1, 1, 1, 1)
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype).to(img.device)
    return (img + sig.to(img.device) * noise).clamp_(0.0, 1.0)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3] (rounded)."""
    return (img.detach().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] (or [H, W, 3]) -> float [N, 3, H, W] in [0, 1]."""
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[None]
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3], got {a.dtype} {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div_(255.0)


def jpeg(img: torch.Tensor, quality) -> torch.Tensor:
    """JPEG encode + decode through Pillow. quality: int or ints [N] (1..95)."""
    _check(img)
    q = np.broadcast_to(np.asarray(quality, np.int64).reshape(-1), (img.shape[0],))
    arr = to_uint8(img)
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(arr[i]).save(buf, format="JPEG", quality=int(q[i]))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return from_uint8(out).to(img.device, img.dtype)


def _gray(img: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)


def color_jitter(img: torch.Tensor, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0) -> torch.Tensor:
    """Colour jitter with given factors (each a float or float [N]), applied in the order
    brightness, contrast, saturation, hue.

    brightness b: ``img * b``; contrast c: blend with the image's mean luma,
    ``m + c (img - m)``; saturation s: blend with the pixel's luma, ``g + s (img - g)``;
    hue h: rotation of the chroma plane of YIQ by ``2 pi h`` (h in turns, 0 = none).
    """
    _check(img)
    n = img.shape[0]

    def per_image(v):
        return torch.as_tensor(v, dtype=img.dtype).reshape(-1).expand(n).reshape(n, 1, 1, 1).to(img.device)

    b, c, s, h = per_image(brightness), per_image(contrast), per_image(saturation), per_image(hue)
    x = (img * b).clamp(0, 1)
    m = _gray(x).mean((2, 3), keepdim=True)
    x = (m + c * (x - m)).clamp(0, 1)
    g = _gray(x)
    x = (g + s * (x - g)).clamp(0, 1)
    if bool((h != 0).any()):
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                              dtype=img.dtype, device=img.device)
        yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
        cos, sin = torch.cos(2 * math.pi * h), torch.sin(2 * math.pi * h)
        i2 = cos * yiq[:, 1:2] - sin * yiq[:, 2:3]
        q2 = sin * yiq[:, 1:2] + cos * yiq[:, 2:3]
        yiq = torch.cat([yiq[:, :1], i2, q2], 1)
        x = torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)
    return x


# ---------------------------------------------------------------- report distortions

REPORT_STRENGTHS = {"blur_sigma": 1.0, "noise_sigma": 0.03, "jpeg_quality": 50, "jitter": 0.1}


def _jitter_fixed(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    a = REPORT_STRENGTHS["jitter"]
    signs = torch.randint(0, 2, (3, img.shape[0]), generator=g).to(img.dtype) * 2 - 1
    return color_jitter(img, 1 + a * signs[0], 1 + a * signs[1], 1 + a * signs[2])


#: name -> f(images float [N, 3, H, W], generator) -> distorted images; fixed strengths
REPORT_DISTORTIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "blur": lambda x, g: gaussian_blur(x, REPORT_STRENGTHS["blur_sigma"]),
    "noise": lambda x, g: gaussian_noise(x, REPORT_STRENGTHS["noise_sigma"], g),
    "jpeg50": lambda x, g: jpeg(x, REPORT_STRENGTHS["jpeg_quality"]),
    "jitter": _jitter_fixed,
}


def distort(name: str, img: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Apply report distortion ``name`` ("clean" = identity) with a seeded generator."""
    if name == "clean":
        return img
    if name not in REPORT_DISTORTIONS:
        raise ValueError(f"unknown distortion {name!r}; known: clean, {', '.join(REPORT_DISTORTIONS)}")
    return REPORT_DISTORTIONS[name](img, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- training augmentation

#: ranges of the random training distortions; each is applied to an image with probability p
TRAIN_AUG = {"p": 0.5, "blur_sigma": (0.0, 1.5), "noise_sigma": (0.0, 0.05), "jpeg_quality": (40, 95),
             "brightness": 0.15, "contrast": 0.15, "saturation": 0.15, "hue": 0.02}


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def random_photometric(img: torch.Tensor, g: torch.Generator, cfg: dict = TRAIN_AUG) -> torch.Tensor:
    """Random colour jitter, blur, noise and JPEG, each on a random subset of the batch
    (probability ``cfg['p']`` per image and distortion), in that order."""
    n, p = img.shape[0], cfg["p"]

    def pick():
        return torch.rand(n, generator=g) < p

    on = pick()
    if bool(on.any()):
        def f(key):
            return torch.where(on, _uniform(g, n, 1 - cfg[key], 1 + cfg[key]), torch.ones(n, dtype=torch.float64))
        hue = torch.where(on, _uniform(g, n, -cfg["hue"], cfg["hue"]), torch.zeros(n, dtype=torch.float64))
        img = color_jitter(img, f("brightness"), f("contrast"), f("saturation"), hue)
    on = pick()
    if bool(on.any()):
        img = gaussian_blur(img, torch.where(on, _uniform(g, n, *cfg["blur_sigma"]), torch.zeros(n, dtype=torch.float64)))
    on = pick()
    if bool(on.any()):
        img = gaussian_noise(img, torch.where(on, _uniform(g, n, *cfg["noise_sigma"]), torch.zeros(n, dtype=torch.float64)), g)
    on = pick()
    if bool(on.any()):
        lo, hi = cfg["jpeg_quality"]
        q = torch.randint(lo, hi + 1, (n,), generator=g)
        idx = torch.nonzero(on).flatten()
        img = img.clone()
        img[idx] = jpeg(img[idx], q[idx].numpy())
    return img


def random_geometric(img: torch.Tensor, label: torch.Tensor | None, lm: torch.Tensor | None,
                     g: torch.Generator, p: float = 0.5, shift: int = 4, scale: float = 0.05,
                     scale_p: float = 0.2):
    """Random integer shift (exact: image and label move together, edges replicated) and,
    for a fraction ``scale_p`` of the shifted images, a mild scale about the centre
    (bilinear image, nearest label, exact landmarks).

    img: float [N, 3, H, W]; label: int64 [N, H, W] or None; lm: float [N, K, 2] pixel
    (x, y) or None. Returns (img, label, lm) transformed the same way.
    """
    n, _, h, w = img.shape
    on = torch.rand(n, generator=g) < p
    dx = torch.randint(-shift, shift + 1, (n,), generator=g) * on
    dy = torch.randint(-shift, shift + 1, (n,), generator=g) * on
    sc = torch.where(on & (torch.rand(n, generator=g) < scale_p), _uniform(g, n, 1 - scale, 1 + scale).float(),
                     torch.ones(n))
    img = img.clone()
    label = None if label is None else label.clone()
    lm = None if lm is None else lm.clone()
    for i in torch.nonzero(on).flatten().tolist():
        s, tx, ty = float(sc[i]), int(dx[i]), int(dy[i])
        if s != 1.0:
            # output pixel centre u maps to source centre c + (u - c) / s
            theta = torch.tensor([[1 / s, 0, 0], [0, 1 / s, 0]], dtype=img.dtype).unsqueeze(0)
            grid = F.affine_grid(theta, (1, 3, h, w), align_corners=False)
            img[i:i + 1] = F.grid_sample(img[i:i + 1], grid, mode="bilinear", padding_mode="border",
                                         align_corners=False)
            if label is not None:
                label[i:i + 1] = F.grid_sample(label[i:i + 1, None].float(), grid, mode="nearest",
                                               padding_mode="border", align_corners=False)[:, 0].long()
            if lm is not None:
                c = torch.tensor([w / 2, h / 2], dtype=lm.dtype)
                lm[i] = c + (lm[i] - c) * s
        img[i] = _shift(img[i], tx, ty)
        if label is not None:
            label[i] = _shift(label[i][None], tx, ty)[0]
        if lm is not None:
            lm[i] += torch.tensor([tx, ty], dtype=lm.dtype)
    return img, label, lm


def _shift(x: torch.Tensor, tx: int, ty: int) -> torch.Tensor:
    """Move content of x [C, H, W] by (tx, ty) pixels, replicating the edges."""
    _, h, w = x.shape
    rows = (torch.arange(h) - ty).clamp(0, h - 1)
    cols = (torch.arange(w) - tx).clamp(0, w - 1)
    return x[:, rows][:, :, cols]
