"""Train the SCA-DM UNet and style encoder jointly on SynthFace, on top of a trained VQ.

Recipe:
* targets: pre-quantization VQ latents of train-cache items (LDM's encode_first_stage),
  computed once at the start and multiplied by ``scale_factor = 1 / std`` so the
  diffusion sees unit-variance latents (the factor is stored in the bundle's config);
* condition: the item's one-hot label map (SPADE) and style tokens from a reference:
  with probability ``p_pair`` the same identity re-rendered in another pose (its own
  label map goes to the style encoder), otherwise the item itself; references are
  shifted by a few pixels at random so the tokens cannot carry exact positions;
* classifier-free guidance dropout: with probability ``p_uncond`` a sample gets the
  official unconditional input (context zeros [19, 1280], segmentation zeros);
* loss: MSE at a uniform random timestep of the preset's 1000-step schedule against
  the noise (``--prediction eps``, the official parameterization) or against
  v = sqrt(abar) eps - sqrt(1 - abar) x0 (``--prediction v``). A network that outputs
  eps must reproduce its noisy input to ~1 % near t = T (x0 = (x - sqrt(1-abar) eps) /
  sqrt(abar) amplifies eps errors up to ~70x there); a short CPU run does not get that
  precise, while v stays well conditioned at every t. The bundle then carries
  ``pipeline.json`` {"prediction": "v"} and the pipeline converts v to eps for the
  samplers;
* ``--init BUNDLE`` starts the UNet and style encoder from a bundle's weights;
* AdamW with warmup and cosine decay over the wall-clock budget; EMA of both networks
  (the EMA weights are shipped).

CLI::

    python -m facegen_rt.train.scadm --cache /tmp/sf_cache128 --pairs /tmp/scadm_data/pairs \\
        --vq /tmp/scadm_run/vq --out facegen_rt/assets/scadm_small --minutes 44 --seed 0 \\
        --log facegen_rt/assets/scadm_small/logs/scadm.log
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegen_rt.models.sca_dm import MultiScaleStyleEncoder, SCADMUNet, get_preset
from facegen_rt.models.sca_dm.vq import VQModel
from facegen_rt.weights import load_model, save_scadm

from . import (EMA, Budget, Logger, count_params, differentiable_ops, images_to_tensor,
               labels_to_onehot, lr_at)
from .data_cache import ImageCache


def load_vq_bundle(path) -> VQModel:
    """The VQ of a bundle written by :mod:`facegen_rt.train.vq` (or a full SCA-DM bundle)."""
    from facegen_rt.models.sca_dm import SCADMConfig

    def build(config: dict, names: list[str]):
        cfg = SCADMConfig.from_dict(config)
        with torch.device("meta"):
            return {"vq": VQModel(cfg.vq)}

    modules, _, _ = load_model(path, build, strict=False, dtype=torch.float32)
    return modules["vq"].eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vq: VQModel, cache: ImageCache, n: int, work: Path, log: Logger,
                   vq_path) -> torch.Tensor:
    """[n, embed_dim, h, w] float32 pre-quantization latents of cache items 0..n-1, stored
    in ``work`` keyed by the VQ weights' hash (reused by a rerun)."""
    digest = hashlib.sha1(Path(vq_path, "model.safetensors").read_bytes()).hexdigest()[:12]
    path = work / f"latents_{digest}_{n}.pt"
    if path.is_file():
        log(f"latents: reusing {path}")
        return torch.load(path)
    t0 = time.time()
    out = []
    for s in range(0, n, 64):
        out.append(vq.encode(images_to_tensor(cache.images[s:min(n, s + 64)])))
        if (s // 64) % 20 == 0:
            log(f"latents: {min(n, s + 64)}/{n} encoded, {time.time() - t0:.0f} s")
    lat = torch.cat(out)
    work.mkdir(parents=True, exist_ok=True)
    torch.save(lat, path)
    log(f"latents: {n} encoded in {time.time() - t0:.0f} s -> {path}")
    return lat


def shift(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_shift: int):
    """Roll each image/label pair by the same random (dy, dx); [B, H, W, 3] / [B, H, W]."""
    images, labels = images.copy(), labels.copy()
    for j in range(len(images)):
        dy, dx = rng.integers(-max_shift, max_shift + 1, 2)
        images[j] = np.roll(images[j], (dy, dx), axis=(0, 1))
        labels[j] = np.roll(labels[j], (dy, dx), axis=(0, 1))
    return images, labels


def make_batch(cache: ImageCache, latents: torch.Tensor, rng: np.random.Generator, args):
    """(x0 [B, 3, h, w], seg [B, 19, H, W], ref image [B, 3, H, W], ref seg [B, 19, H, W],
    keep [B] bool: False where the condition is dropped for CFG)."""
    B = args.batch
    idx = np.sort(rng.integers(0, len(latents), B))
    labels = np.stack([cache.labels[i] for i in idx])
    ref_img = np.stack([cache.images[i] for i in idx])
    ref_lab = labels.copy()
    use_pair = (rng.random(B) < args.p_pair) & (idx < cache.n_pairs)
    for j in np.flatnonzero(use_pair):
        ref_img[j], ref_lab[j] = cache.pair_images[idx[j]], cache.pair_labels[idx[j]]
    if args.ref_shift:
        ref_img, ref_lab = shift(ref_img, ref_lab, rng, args.ref_shift)
    keep = torch.from_numpy(rng.random(B) >= args.p_uncond)
    return (latents[torch.from_numpy(idx)], labels_to_onehot(labels), images_to_tensor(ref_img),
            labels_to_onehot(ref_lab), keep)


def train(args, log: Logger):
    cfg = get_preset(args.preset)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cache = ImageCache(args.cache, args.pairs)
    log(cache.describe())
    work = Path(args.work)
    vq = load_vq_bundle(args.vq)
    n_lat = min(args.latents, cache.n)
    latents = encode_latents(vq, cache, n_lat, work, log, args.vq)
    std = float(latents.std())
    scale = 1.0 / std
    log(f"latents: mean {float(latents.mean()):.4f} std {std:.4f} -> scale_factor {scale:.5f}")
    latents = latents * scale
    cfg = dataclasses.replace(cfg, scale_factor=scale)

    unet = SCADMUNet(cfg.unet)
    style = MultiScaleStyleEncoder(cfg.style)
    if args.init:
        from facegen_rt.weights import load_scadm

        init, _, _ = load_scadm(args.init, dtype=torch.float32)
        unet.load_state_dict(init["unet"].state_dict())
        style.load_state_dict(init["style_encoder"].state_dict())
        log(f"initialised UNet and style encoder from {args.init}")
    log(f"UNet {count_params(unet)} parameters, style encoder {count_params(style)}, "
        f"VQ {count_params(vq)}")
    params = list(unet.parameters()) + list(style.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    ema_u, ema_s = EMA(unet, args.ema), EMA(style, args.ema)
    abar = cfg.schedule.alphas_cumprod().float()
    T = len(abar)
    budget = Budget(args.minutes)
    step, acc, n_acc = 0, 0.0, 0
    last_save = time.time()
    with differentiable_ops(autocast=args.bf16):
        while not budget.done():
            x0, seg, ref, ref_seg, keep = make_batch(cache, latents, rng, args)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, budget.fraction())
            t = torch.randint(0, T, (args.batch,))
            noise = torch.randn_like(x0)
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                ctx = style(ref, ref_seg).float()
                k = keep.float()
                ctx = ctx * k.view(-1, 1, 1)            # dropped rows: context zeros
                seg_in = seg * k.view(-1, 1, 1, 1)      # and segmentation zeros
                eps = unet(xt, t, ctx, seg_in).float()
            if args.prediction == "v":
                target = a.sqrt() * noise - (1 - a).sqrt() * x0
            else:
                target = noise
            loss = F.mse_loss(eps, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            ema_u.update(unet)
            ema_s.update(style)
            step += 1
            acc += loss.item()
            n_acc += 1
            if step % args.log_every == 0:
                log(f"step {step} loss {acc / n_acc:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                    f"{step / budget.elapsed():.3f} it/s ({budget.elapsed() / 60:.1f} min)")
                acc, n_acc = 0.0, 0
            if time.time() - last_save > 60 * args.save_minutes:
                save_scadm(work / "checkpoint", cfg, ema_u.module, ema_s.module, vq)
                write_pipeline_config(work / "checkpoint", args.prediction)
                last_save = time.time()
    log(f"done: {step} steps ({step * args.batch} samples) in {budget.elapsed():.0f} s")
    return cfg, ema_u.module, ema_s.module, vq


def write_pipeline_config(bundle, prediction: str) -> None:
    """``pipeline.json`` beside a bundle: how the pipeline must read the UNet's output."""
    import json

    Path(bundle, "pipeline.json").write_text(json.dumps({"prediction": prediction}) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m facegen_rt.train.scadm",
                                description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="synthface128")
    p.add_argument("--cache", required=True, help="rendered train cache (data_cache layout)")
    p.add_argument("--pairs", default=None, help="directory of the pose-pair renders")
    p.add_argument("--vq", required=True, help="bundle directory of the trained VQ")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--work", default="/tmp/scadm_run/work", help="latents and checkpoints")
    p.add_argument("--minutes", type=float, default=44.0, help="wall-clock training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latents", type=int, default=8000, help="train items to encode")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--p-uncond", type=float, default=0.15)
    p.add_argument("--p-pair", type=float, default=0.5)
    p.add_argument("--ref-shift", type=int, default=6)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--log", default=None)
    p.add_argument("--prediction", default="eps", choices=["eps", "v"],
                   help="what the UNet learns to output (the samplers always get eps)")
    p.add_argument("--init", default=None, help="bundle to start the UNet and style encoder from")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = Logger(args.log)
    log.header(["facegen_rt.train.scadm", *argv], args.seed)
    cfg, unet, style, vq = train(args, log)
    path = save_scadm(args.out, cfg, unet, style, vq)
    write_pipeline_config(args.out, args.prediction)
    log(f"saved {path} ({Path(path).stat().st_size / 2**20:.2f} MiB), prediction {args.prediction}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
