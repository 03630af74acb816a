"""Real-image editing: find a latent whose image matches a photo, then drag from it.

Optimization-based inversion (no encoder): Adam on w (one vector broadcast to every
layer) or w+ (one vector per layer), from the generator's average latent w_avg.

Loss: pixel MSE against the target in [-1, 1], plus ``pyramid_weight`` times the MSE of
2x, 4x and 8x average-pooled copies (a cheap coarse-structure term). No perceptual
network (LPIPS / VGG) is available to this package, and the generator's own features
cannot stand in for one: they exist only for a latent, never for the photo. Expect
faithful colours and layout, softer detail than an LPIPS inversion; w (not w+) keeps
the latent closer to the generator's range, which makes later drags better behaved.

The learning rate follows a cosine ramp-down over the last 75 % of the steps, with a
5 % warm-up, as in StyleGAN2's projector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class InversionResult:
    """ws: [1, num_ws, w_dim] found latent; loss: the final loss; losses: per step."""

    ws: torch.Tensor
    loss: float
    losses: list[float]


def image_to_tensor(image: Any, resolution: int) -> torch.Tensor:
    """A square image -> [1, 3, R, R] float32 in [-1, 1].

    Accepts a uint8 [H, W, 3] array/tensor (or a PIL image), or a float tensor
    [3, H, W] / [1, 3, H, W] already in [-1, 1]. Other sizes are resized to R (area down,
    bilinear up).
    """
    if not isinstance(image, torch.Tensor):
        image = torch.from_numpy(np.array(image))  # PIL images and arrays alike
    if image.dtype == torch.uint8:
        if image.dim() != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"drag: a uint8 image must be [H, W, 3], got {tuple(image.shape)}")
        x = image[..., :3].permute(2, 0, 1)[None].float() / 127.5 - 1
    elif image.dtype.is_floating_point:
        x = image.float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"drag: a float image must be [3, H, W] or [1, 3, H, W], "
                             f"got {tuple(image.shape)}")
    else:
        raise ValueError(f"drag: image dtype must be uint8 or float, got {image.dtype}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"drag: the image must be square, got {x.shape[-1]}x{x.shape[-2]}; "
                         "crop it first")
    if not torch.isfinite(x).all():
        raise ValueError("drag: the image has non-finite values")
    if x.shape[-1] > resolution:
        x = F.interpolate(x, [resolution, resolution], mode="area")
    elif x.shape[-1] < resolution:
        x = F.interpolate(x, [resolution, resolution], mode="bilinear", align_corners=False)
    return x


def _pyramid_loss(a: torch.Tensor, b: torch.Tensor, levels: int = 3) -> torch.Tensor:
    loss = a.new_zeros(())
    for _ in range(levels):
        if a.shape[-1] < 2:
            break
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        loss = loss + F.mse_loss(a, b)
    return loss


def invert_image(generator, image: Any, steps: int = 300, lr: float = 0.05,
                 w_plus: bool = False, pyramid_weight: float = 1.0, noise_mode: str = "const",
                 progress: bool = True) -> InversionResult:
    """Optimize a latent so that the generator reproduces ``image``.

    Args:
        generator: facegen_rt StyleGAN2 Generator (frozen here).
        image: see :func:`image_to_tensor`.
        steps: Adam iterations (one full generator forward and backward each).
        lr: peak learning rate.
        w_plus: optimize one vector per layer instead of one shared w.
        pyramid_weight: weight of the multi-scale term (0 = pixels only).
        progress: show a tqdm progress bar.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"drag: inversion steps must be an int >= 1, got {steps!r}")
    generator.requires_grad_(False)
    device = next(generator.parameters()).device
    R, num_ws = generator.img_resolution, generator.num_ws
    target = image_to_tensor(image, R).to(device)
    w_avg = getattr(generator.mapping, "w_avg", None)
    start = (w_avg.detach().clone() if w_avg is not None
             else torch.zeros(generator.w_dim, device=device))[None]  # [1, w_dim]
    w = (start[:, None].repeat(1, num_ws, 1) if w_plus else start).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    losses: list[float] = []
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc="inverting", unit="step")
    for i in iterator:
        t = i / steps
        ramp = min(1.0, (1.0 - t) / 0.25)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp = ramp * min(1.0, (i + 1) / max(0.05 * steps, 1.0))
        for group in opt.param_groups:
            group["lr"] = lr * ramp
        ws = w if w_plus else w[:, None].expand(1, num_ws, -1)
        img = generator.synthesis(ws, noise_mode=noise_mode)
        loss = F.mse_loss(img, target)
        if pyramid_weight:
            loss = loss + pyramid_weight * _pyramid_loss(img, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            iterator.set_postfix(loss=f"{losses[-1]:.4f}")
    ws = (w if w_plus else w[:, None].expand(1, num_ws, -1)).detach().clone()
    return InversionResult(ws=ws, loss=losses[-1], losses=losses)
