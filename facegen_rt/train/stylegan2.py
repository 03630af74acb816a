"""Train the bundled StyleGAN2 generator by regression onto the SynthFace renderer.

SynthFace maps a standard-normal vector z [64] to a face deterministically
(:func:`facegen_rt.data.synthface.factors_from_z`), so a generator can learn that map
directly, with no discriminator:

    z  ~ N(0, I),   z_s = sqrt(64) * z / |z|          # on the sphere the mapping sees
    loss = |G(z_s) - render(world(z_s))|_1 + |pool4 G(z_s) - pool4 render(world(z_s))|_1

The mapping network normalizes z to unit second moment, so targets are rendered from
that same normalized vector: nothing the renderer reads is hidden from G.

The generator's world (:func:`generator_factors`) is SynthFace with what a 2-core,
one-hour budget cannot learn held fixed: one texture-noise pattern for every face (the
per-identity noise is a hash of z, unlearnable by regression), no accessories (glasses,
hat, earrings, necklace) and solid clothes. Face shape, features, skin, hair, clothes
colour, background, pose and expression all vary as in SynthFace.

Two phases: first the blocks up to 64^2 learn the layout on 64^2 renders (about 5x
more images per second), then the whole generator trains at full resolution. The
coarse (4x pooled) term weights the face layout, which drag editing moves, over
texture. Training images come fresh from the renderer at every step, never from the
held-out split. The shipped weights are an EMA of the live ones.

``--feature-weight w`` weights the full-resolution L1 by 1 + w on the eyes, brows, nose
and lips (from the render's label map, dilated by two pixels). ``--init BUNDLE`` starts
from a trained generator, so a second stage can continue with other loss weights.

CLI (the bundled model's command is in ``facegen_rt/assets/stylegan2/README.md``)::

    python -m facegen_rt.train.stylegan2 --out /tmp/g256 --minutes 60 --seed 0 \\
        --log facegen_rt/assets/stylegan2/logs/train.log
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from facegen_rt.data.synthface.classes import CLASS_ID
from facegen_rt.data.synthface.factors import Z_DIM, Factors, factors_from_z
from facegen_rt.data.synthface.render import MIN_RES, render
from facegen_rt.models.stylegan2 import Generator, StyleGAN2Config, get_preset
from facegen_rt.weights import load_generator, save_model

from . import EMA, Budget, Logger, count_params, images_to_tensor, lr_at

PRESET = "synthface256"
# Distinct from every SynthFace dataset stream (those seed default_rng([seed, index])).
RNG_TAG = 0x5F47
# What --feature-weight emphasizes: the small parts that drag edits move and the
# landmark model reads, dilated so that their edges count too.
FEATURE_IDS = [CLASS_ID[n] for n in ("l_eye", "r_eye", "l_brow", "r_brow", "nose", "mouth",
                                     "u_lip", "l_lip")]
FEATURE_DILATION = 2


def generator_factors(z: np.ndarray) -> Factors:
    """The generator's world: SynthFace's factors of z with one texture pattern, no
    accessories and solid clothes (see the module doc)."""
    return dataclasses.replace(factors_from_z(z), texture_seed=0, glasses=False,
                               sunglasses=False, hat=False, earrings=False, necklace=False,
                               cloth_pattern="solid")


def sphere_z(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, Z_DIM] float64 standard-normal draws scaled to norm sqrt(Z_DIM)."""
    z = rng.standard_normal((n, Z_DIM))
    return z * np.sqrt(Z_DIM) / np.linalg.norm(z, axis=1, keepdims=True)


def render_batch(z: np.ndarray, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of latents z [n, Z_DIM]: images float32 [n, 3, res, res] in [-1, 1] and
    a feature mask float32 [n, 1, res, res] (1 on FEATURE_CLASSES, dilated by
    FEATURE_DILATION pixels of the render). Below the renderer's smallest size both are
    rendered at that size and area-downsampled (the mask to coverage fractions)."""
    size = max(res, MIN_RES)
    renders = [render(generator_factors(zi), size) for zi in z]
    images = images_to_tensor(np.stack([r[0] for r in renders]))
    labels = torch.from_numpy(np.stack([r[1] for r in renders])).long()
    mask = torch.isin(labels, torch.tensor(FEATURE_IDS)).float()[:, None]
    mask = F.max_pool2d(mask, 2 * FEATURE_DILATION + 1, stride=1, padding=FEATURE_DILATION)
    if size != res:
        images = F.interpolate(images, size=(res, res), mode="area")
        mask = F.interpolate(mask, size=(res, res), mode="area")
    return images, mask


def partial_image(G: Generator, z: torch.Tensor, res: int) -> torch.Tensor:
    """The skip architecture's image after the block at ``res``: [N, 3, res, res].

    (It is the part of the final image that those blocks produce: later blocks upsample
    it and add their own ToRGB output.)"""
    ws = G.mapping(z, None, update_emas=True)
    x = img = None
    w_idx = 0
    for block in G.synthesis.blocks()[:G.synthesis.block_index(res) + 1]:
        block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
        w_idx += block.num_conv
        x, img = block(x, img, block_ws, torch.float32, noise_mode="const", fused_modconv=True)
    return img


def regression_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor,
                    feature_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L1 at full resolution plus L1 of 4x average-pooled images; fake, real [N, 3, R, R].

    With ``feature_weight`` w > 0 the full-resolution term weights each pixel by
    1 + w * mask (mask [N, 1, R, R] from :func:`render_batch`), normalized by the mean
    weight: eyes, brows, nose and lips cover a few percent of the image, so an unweighted
    L1 lets a short training leave them blurred, and drag edits and landmarks need them.
    """
    if feature_weight > 0:
        weight = 1.0 + feature_weight * mask
        full = ((fake - real).abs() * weight).mean() / weight.mean()
    else:
        full = (fake - real).abs().mean()
    coarse = (F.avg_pool2d(fake, 4) - F.avg_pool2d(real, 4)).abs().mean()
    return full + coarse, {"l1": full.item(), "l1_coarse": coarse.item()}


def _phase(G: Generator, opt, ema: EMA, rng, log: Logger, res: int, batch: int, lr: float,
           minutes: float, steps: int, args) -> int:
    """Train on ``res`` x ``res`` images for ``minutes`` (or ``steps``, if set); returns steps."""
    budget = Budget(minutes)
    full = res == G.img_resolution
    step, sums, count = 0, np.zeros(3), 0
    while not budget.done() and not (steps and step >= steps):
        z = sphere_z(rng, batch)
        real, mask = render_batch(z, res)
        progress = max(budget.fraction(), step / steps if steps else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, args.warmup, progress, final=0.05)
        zt = torch.from_numpy(z).float()
        fake = G(zt, update_emas=True, fused_modconv=True) if full else partial_image(G, zt, res)
        loss, parts = regression_loss(fake, real, mask, args.feature_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(G)
        step += 1
        sums += (loss.item(), parts["l1"], parts["l1_coarse"])
        count += 1
        if step % args.log_every == 0:
            m = sums / count
            log(f"[{res}^2] step {step} loss {m[0]:.4f} l1 {m[1]:.4f} l1_coarse {m[2]:.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {step * batch / budget.elapsed():.1f} img/s")
            sums[:], count = 0, 0
        if full and args.checkpoint_every and step % args.checkpoint_every == 0:
            save_model(Path(args.out) / "checkpoint", {"G": ema.module}, G.config)
    log(f"[{res}^2] done: {step} steps ({step * batch} images) in {budget.elapsed():.0f} s")
    return step


def train(args, log: Logger, config: Optional[StyleGAN2Config] = None) -> Generator:
    """Phase 1 (``args.coarse_fraction`` of the budget, at ``args.coarse_res``), then the
    full resolution; ``args.steps`` caps each phase's steps (0 = time only). Returns the
    EMA generator. ``config`` overrides ``args.preset``."""
    cfg = config or get_preset(args.preset)
    if cfg.z_dim != Z_DIM:
        raise ValueError(f"preset {args.preset!r} has z_dim {cfg.z_dim}; SynthFace needs {Z_DIM}")
    if args.coarse_res not in cfg.block_resolutions:
        raise ValueError(f"--coarse-res {args.coarse_res} is not a block resolution of "
                         f"{cfg.name}: {cfg.block_resolutions}")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng([RNG_TAG, args.seed])
    G = Generator(cfg).train()
    if args.init:
        G.load_state_dict(load_generator(args.init).state_dict())
        log(f"initialized from {args.init}")
    log(f"generator {cfg.name}: {count_params(G)} parameters, {cfg.img_resolution}^2, "
        f"channels {[cfg.channels(r) for r in cfg.block_resolutions]}")
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.9, 0.99))
    ema = EMA(G, args.ema)
    if args.coarse_fraction > 0:
        _phase(G, opt, ema, rng, log, args.coarse_res, args.coarse_batch, args.coarse_lr,
               args.minutes * args.coarse_fraction, args.steps, args)
    _phase(G, opt, ema, rng, log, cfg.img_resolution, args.batch, args.lr,
           args.minutes * (1 - args.coarse_fraction), args.steps, args)
    return ema.module


@torch.no_grad()
def evaluate(G: Generator, n: int = 64, seed: int = 12345) -> dict:
    """Mean L1 (in [-1, 1] units) and PSNR of G(z) vs its targets on fresh latents."""
    rng = np.random.default_rng([RNG_TAG, seed, 1])
    z = sphere_z(rng, n)
    l1, psnr = [], []
    for i in range(0, n, 8):
        real, _ = render_batch(z[i:i + 8], G.img_resolution)
        fake = G(torch.from_numpy(z[i:i + 8]).float(), noise_mode="const").clamp(-1, 1)
        l1.append((fake - real).abs().mean().item())
        mse = ((fake - real) / 2).square().mean(dim=(1, 2, 3))
        psnr.extend((-10 * torch.log10(mse)).tolist())
    return {"l1": float(np.mean(l1)), "psnr_db": float(np.mean(psnr)), "n": n}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m facegen_rt.train.stylegan2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--preset", default=PRESET)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=0,
                   help="stop each phase after this many steps (0 = budget only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--coarse-res", type=int, default=64)
    p.add_argument("--coarse-fraction", type=float, default=0.6,
                   help="share of the budget spent at --coarse-res (0 = none)")
    p.add_argument("--coarse-batch", type=int, default=16)
    p.add_argument("--coarse-lr", type=float, default=5e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--log", default=None, help="also append the log to this file")
    p.add_argument("--feature-weight", type=float, default=0.0,
                   help="extra L1 weight on eyes, brows, nose and lips (0: plain L1)")
    p.add_argument("--init", default=None,
                   help="start from this generator bundle (e.g. to continue with new loss "
                        "weights; pass --coarse-fraction 0 to skip the coarse phase)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    log = Logger(args.log)
    log.header(["facegen_rt.train.stylegan2"] + list(sys.argv[1:] if argv is None else argv),
               args.seed)
    G = train(args, log)
    path = save_model(args.out, {"G": G}, G.config)
    log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    log(f"held-out fit: {evaluate(G)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
