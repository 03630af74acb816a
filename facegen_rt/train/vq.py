"""Train the VQ-f4 first stage of a SCA-DM preset on the SynthFace train cache.

Recipe (no adversarial or perceptual loss, to fit a CPU budget):
    rec  = decoder(post_quant_conv(z + sg(e - z)))      # straight-through quantization
    loss = |rec - x|_1 + w_grad * |grad rec - grad x|_1 # edges stay sharp
           + |sg(z) - e|^2 + beta * |z - sg(e)|^2       # codebook + commitment
on random ``crop`` x ``crop`` patches (the autoencoder is convolutional; patches cost a
quarter of full images). The codebook starts from encoder outputs and codes unused for
``restart_every`` steps are restarted on random recent latents.

``--init VQ_BUNDLE`` instead fine-tunes only the decoder of a trained VQ (encoder,
codebook frozen, so diffusion latents stay valid); ``--into SCADM_BUNDLE`` then writes
a copy of that SCA-DM bundle with the new decoder.

CLI::

    python -m facegen_rt.train.vq --cache /tmp/sf_cache128 --out /tmp/scadm_run/vq \\
        --minutes 11 --seed 0 --log facegen_rt/assets/scadm_small/logs/vq.log
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from facegen_rt.models.sca_dm import VQModel, get_preset
from facegen_rt.weights import save_model

from . import Budget, EMA, Logger, count_params, images_to_tensor, lr_at
from .data_cache import ImageCache


def image_pool(cache: Optional[str], pairs: Optional[str]) -> np.ndarray:
    """The training images: a train cache's images and/or the pose-pair renders, as one
    read-only uint8 [N, H, W, 3] array (memmaps are concatenated lazily by index)."""
    arrays = []
    if cache:
        arrays.append(ImageCache(cache).images)
    if pairs:
        arrays.append(np.load(Path(pairs) / "pair_image.npy", mmap_mode="r"))
    if not arrays:
        raise ValueError("give --cache and/or --pairs")
    return arrays


def random_crops(pool: list, rng: np.random.Generator, batch: int, crop: int) -> torch.Tensor:
    """[batch, 3, crop, crop] in [-1, 1] from random items and positions (random h-flips)."""
    sizes = np.array([len(a) for a in pool])
    flat = np.sort(rng.integers(0, sizes.sum(), batch))
    res = pool[0].shape[1]
    out = np.empty((batch, crop, crop, 3), np.uint8)
    for j, i in enumerate(flat):
        k = int(np.searchsorted(np.cumsum(sizes), i, side="right"))
        i = i - (sizes[:k].sum() if k else 0)
        y, x = rng.integers(0, res - crop + 1, 2)
        patch = pool[k][i, y:y + crop, x:x + crop]
        out[j] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return images_to_tensor(out)


def image_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean |d/dx a - d/dx b| + |d/dy a - d/dy b| over [B, C, H, W]."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def quantize_train(vq: VQModel, z: torch.Tensor):
    """(z_q straight-through [B, D, h, w], codebook loss, commitment loss, indices [N])."""
    idx = vq.quantize.indices(z.detach()).flatten()
    e = vq.quantize.embedding(idx).view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    codebook = F.mse_loss(e, z.detach())
    commit = F.mse_loss(z, e.detach())
    return z + (e - z).detach(), codebook, commit, idx


def train_vq(args, log: Logger) -> VQModel:
    cfg = get_preset(args.preset)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pool = image_pool(args.cache, args.pairs)
    res = pool[0].shape[1]
    log(f"images: {' + '.join(str(len(a)) for a in pool)} at {res}^2 "
        f"(cache {args.cache}, pairs {args.pairs})")
    if res != cfg.image_size:
        raise ValueError(f"image resolution {res} != preset image_size {cfg.image_size}")
    vq = VQModel(cfg.vq)
    log(f"VQ {args.preset}: {count_params(vq)} parameters, codebook {cfg.vq.n_embed}x{cfg.vq.embed_dim}")
    opt = torch.optim.AdamW([p for n, p in vq.named_parameters()], lr=args.lr,
                            betas=(0.5, 0.9), weight_decay=0.0)
    ema = EMA(vq, args.ema)
    budget = Budget(args.minutes)
    n_embed = cfg.vq.n_embed
    usage = torch.zeros(n_embed)
    recent: list[torch.Tensor] = []
    step = 0
    sums = np.zeros(4)
    count = 0
    while not budget.done():
        x = random_crops(pool, rng, args.batch, args.crop)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup, budget.fraction())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            z = vq.quant_conv(vq.encoder(x)).float()
        if step == 0:  # codebook from the encoder's first outputs (spread like the latents)
            with torch.no_grad():
                flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
                pick = torch.randint(0, flat.shape[0], (n_embed,))
                vq.quantize.embedding.weight.copy_(flat[pick] + 0.01 * torch.randn(n_embed, z.shape[1]))
        zq, codebook, commit, idx = quantize_train(vq, z)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            rec = vq.decoder(vq.post_quant_conv(zq)).float()
        l1 = (rec - x).abs().mean()
        grad = image_gradient_l1(rec, x)
        loss = l1 + args.w_grad * grad + codebook + args.beta * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(vq)
        step += 1
        usage += torch.bincount(idx, minlength=n_embed).float()
        recent.append(z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])[::7])
        recent = recent[-8:]
        if step % args.restart_every == 0:  # restart dead codes on random recent latents
            dead = (usage == 0).nonzero().flatten()
            if len(dead):
                candidates = torch.cat(recent)
                pick = torch.randint(0, len(candidates), (len(dead),))
                with torch.no_grad():
                    vq.quantize.embedding.weight[dead] = candidates[pick]
            log(f"step {step}: {len(dead)} dead codes restarted, "
                f"{int((usage > 0).sum())}/{n_embed} in use")
            usage.zero_()
        sums += np.array([loss.item(), l1.item(), grad.item(), commit.item()])
        count += 1
        if step % args.log_every == 0:
            m = sums / count
            log(f"step {step} loss {m[0]:.4f} l1 {m[1]:.4f} grad {m[2]:.4f} commit {m[3]:.5f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {step / budget.elapsed():.2f} it/s")
            sums[:] = 0
            count = 0
    # The EMA's codebook lags the restarts; the shipped model takes the live codebook.
    ema.module.quantize.embedding.weight.data.copy_(vq.quantize.embedding.weight.data)
    log(f"done: {step} steps in {budget.elapsed():.0f} s")
    return ema.module


def finetune_decoder(args, log: Logger) -> VQModel:
    """Continue training only post_quant_conv + decoder of a trained VQ.

    The encoder, quant_conv and codebook stay frozen, so latents (and a diffusion model
    trained on them) are unchanged: the decoder sees exactly the quantized latents the
    pipeline decodes. Loss: L1 + w_grad * gradient L1, full images or crops.
    """
    from .scadm import load_vq_bundle

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pool = image_pool(args.cache, args.pairs)
    vq = load_vq_bundle(args.init)
    vq.train()
    trainable = list(vq.post_quant_conv.parameters()) + list(vq.decoder.parameters())
    for p in vq.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    log(f"decoder fine-tuning from {args.init}: {sum(p.numel() for p in trainable)} trainable "
        f"parameters; images {' + '.join(str(len(a)) for a in pool)}")
    opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.5, 0.9), weight_decay=0.0)
    ema = EMA(vq, args.ema)
    budget = Budget(args.minutes)
    step, sums, count = 0, np.zeros(3), 0
    while not budget.done():
        x = random_crops(pool, rng, args.batch, args.crop)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.lr, args.warmup, budget.fraction())
        with torch.no_grad():
            zq = vq.quantize(vq.quant_conv(vq.encoder(x)))[0]
        rec = vq.decoder(vq.post_quant_conv(zq))
        l1 = (rec - x).abs().mean()
        grad = image_gradient_l1(rec, x)
        loss = l1 + args.w_grad * grad
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(vq)
        step += 1
        sums += np.array([loss.item(), l1.item(), grad.item()])
        count += 1
        if step % args.log_every == 0:
            m = sums / count
            log(f"step {step} loss {m[0]:.4f} l1 {m[1]:.4f} grad {m[2]:.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {step / budget.elapsed():.2f} it/s")
            sums[:] = 0
            count = 0
    log(f"done: {step} steps in {budget.elapsed():.0f} s")
    return ema.module.eval()


def swap_vq(bundle: str, vq: VQModel, out: str, log: Logger) -> None:
    """Write a copy of SCA-DM bundle ``bundle`` with its VQ replaced by ``vq`` to ``out``."""
    from facegen_rt.weights import load_scadm, save_scadm

    modules, cfg, _ = load_scadm(bundle, dtype=torch.float32)
    path = save_scadm(out, cfg, modules["unet"], modules["style_encoder"], vq)
    settings = Path(bundle, "pipeline.json")  # how the pipeline reads the UNet (eps / v)
    if settings.is_file():
        Path(out, "pipeline.json").write_text(settings.read_text())
    log(f"wrote {path}: {bundle} with the fine-tuned VQ decoder")


@torch.no_grad()
def evaluate_vq(vq: VQModel, images: np.ndarray, n: int = 64) -> dict:
    """Full-image reconstruction L1 and PSNR (quantized decode, as at inference) on the
    last ``n`` of ``images`` (uint8 [N, H, W, 3])."""
    vq.eval()
    x = images_to_tensor(images[len(images) - n:])
    rec = torch.cat([vq.decode(vq.encode(x[i:i + 16])).clamp(-1, 1) for i in range(0, n, 16)])
    mse = ((rec - x) / 2).pow(2).mean().item()
    return {"l1": (rec - x).abs().mean().item(), "psnr": 10 * np.log10(1.0 / max(mse, 1e-12))}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m facegen_rt.train.vq", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="synthface128")
    p.add_argument("--cache", default=None, help="rendered train cache (data_cache layout)")
    p.add_argument("--pairs", default=None, help="directory of pose-pair renders (data_cache)")
    p.add_argument("--out", required=True, help="bundle directory for the trained VQ")
    p.add_argument("--minutes", type=float, default=11.0, help="wall-clock training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--w-grad", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--restart-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the convolutions")
    p.add_argument("--log", default=None)
    p.add_argument("--init", default=None,
                   help="fine-tune the decoder of this trained VQ bundle (encoder frozen)")
    p.add_argument("--into", default=None,
                   help="with --init: SCA-DM bundle whose VQ is replaced; the result goes to --out")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = Logger(args.log)
    log.header(["facegen_rt.train.vq", *argv], args.seed)
    if args.init:
        vq = finetune_decoder(args, log)
        if args.into:
            swap_vq(args.into, vq, args.out, log)
            path = args.out
        else:
            path = save_model(args.out, {"vq": vq}, get_preset(args.preset))
    else:
        vq = train_vq(args, log)
        path = save_model(args.out, {"vq": vq}, get_preset(args.preset))
    metrics = evaluate_vq(vq, image_pool(args.cache, args.pairs)[-1])
    log(f"saved {path}; reconstruction of 64 training images: L1 {metrics['l1']:.4f}, "
        f"PSNR {metrics['psnr']:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
