"""Train the bundled evaluators on the SynthFace *train* split (never the held-out one).

One command per evaluator, reproducible from its seed::

    python -m facegen_rt.eval.train parser  --minutes 30 --seed 0
    python -m facegen_rt.eval.train face    --minutes 30 --seed 1
    python -m facegen_rt.eval.train regions --minutes 20 --seed 2

``regions`` (the region-crop attribute heads) trains on crops cut at the true landmarks,
each moved by Gaussian noise (``lm_jitter`` pixels) to stand in for the face net's
error; its validation crops at the bundled face net's predicted landmarks, as
:class:`~facegen_rt.eval.evaluators.Evaluators` does.

Steps of a run:

1. A training cache: items ``0..n-1`` of the train split rendered once at 128x128 into
   uint8 ``.npy`` memmaps (``--cache``, default /tmp/facegen_synthface_cache128), with a
   pool of ``--workers`` processes. It is reused by later runs with the same n / seed.
2. A validation set of held-out items ``VAL_START..VAL_START + --val-n - 1``, used only
   to log progress; nothing is selected with it. The evaluator report and tests read
   other held-out items (see :mod:`facegen_rt.eval.evaluators`).
3. AdamW with a linear warm-up and a cosine decay driven by the elapsed fraction of the
   ``--minutes`` wall-clock budget (or of ``--steps`` when given), on batches with the
   random geometric and photometric distortions of :mod:`facegen_rt.eval.augment`,
   under bf16 autocast (``--no-bf16`` for fp32).
4. The weights and a JSON config (architecture, command, seed, data, minutes, steps,
   final validation numbers) go to ``<out>/<kind>.safetensors`` / ``.json``, the log to
   ``<out>/logs/<kind>.log``.

The budget counts from the start of training (after the cache and the validation set are
ready) and includes validation passes. Wall-clock budgeting means the step count, and so
the exact weights, depend on the machine's speed and load; the step count reached is
recorded, and ``--steps N`` replays a run with a fixed schedule.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthface import NUM_ATTRIBUTES, NUM_CLASSES, NUM_LANDMARKS, sample, split_index
from . import augment, metrics, nets

#: first held-out item index used for training-time validation logs
VAL_START = 500_000
DEFAULT_CACHE = Path(os.environ.get("FACEGEN_EVAL_CACHE", "/tmp/facegen_synthface_cache128"))
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "evaluators"
RES = nets.NET_RES


# ------------------------------------------------------------------ data

#: the renderer's edge labels, which _render_one returns last when asked
EDGE_LABELS = ("edge_other", "edge_conf")


def _render_one(args):
    seed, stream, res, edges = args
    s = sample(seed, stream, res, edges=edges)
    out = (s.image, s.label, s.landmarks, s.attribute_vector().astype(np.uint8))
    return out + s.edges if s.edges is not None else out


def _array_specs(n: int, res: int, edges: bool = False) -> dict:
    """{name: (shape, dtype)} of n rendered items, in the order _render_one returns them."""
    specs = {"image": ((n, res, res, 3), np.uint8), "label": ((n, res, res), np.uint8),
             "landmarks": ((n, NUM_LANDMARKS, 2), np.float32), "attributes": ((n, NUM_ATTRIBUTES), np.uint8)}
    if edges:
        specs.update({k: ((n, res, res), np.uint8) for k in EDGE_LABELS})
    return specs


def _cache_arrays(root: Path, n: int, res: int, mode: str) -> dict:
    shapes = _array_specs(n, res)
    if mode == "w+":
        return {k: np.lib.format.open_memmap(root / f"{k}.npy", mode="w+", dtype=dt, shape=shp)
                for k, (shp, dt) in shapes.items()}
    return {k: np.load(root / f"{k}.npy", mmap_mode=mode) for k in shapes}


def render_arrays(n: int, res: int, seed: int, split: str, start: int = 0, workers: int = 2,
                  out: dict | None = None, log=None, edges: bool = False) -> dict:
    """Render items ``start..start + n - 1`` of ``split``: {"image" uint8 [n, res, res, 3],
    "label" uint8 [n, res, res], "landmarks" float32 [n, 39, 2], "attributes" uint8 [n, 32]}
    (into ``out``'s arrays when given); ``edges`` adds the renderer's edge labels
    "edge_other" and "edge_conf", uint8 [n, res, res] (see ``synthface.render_with_edges``)."""
    specs = _array_specs(n, res, edges)
    out = {} if out is None else out
    for key, (shape, dtype) in specs.items():
        if key not in out:
            out[key] = np.empty(shape, dtype)
    jobs = [(seed, split_index(split, start + i), res, edges) for i in range(n)]
    keys = tuple(specs)
    t0 = time.time()

    def put(i, r):
        for key, a in zip(keys, r, strict=True):
            out[key][i] = a
        if log is not None and ((i + 1) % 2000 == 0 or i + 1 == n):
            log(f"rendered {i + 1}/{n} ({split}) in {time.time() - t0:.0f} s")

    if workers <= 1 or n < 64:
        for i, job in enumerate(jobs):
            put(i, _render_one(job))
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for i, r in enumerate(pool.imap(_render_one, jobs, chunksize=32)):
                put(i, r)
    return out


def _renderer_fingerprint(seed: int, res: int) -> str:
    """Hash of the first four train items as rendered now: a renderer change, which
    leaves n, res and seed alone, must not reuse a cache of the old pictures."""
    h = hashlib.blake2b(digest_size=8)
    for i in range(4):
        for a in _render_one((seed, split_index("train", i), res, False)):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def build_cache(root, n: int, res: int = RES, seed: int = 0, workers: int = 2, log=print) -> dict:
    """The train-split cache under ``root`` (rendered on first use, and again whenever
    the renderer's output changed), as read-only memmaps."""
    root = Path(root)
    meta = {"n": int(n), "res": int(res), "seed": int(seed), "split": "train",
            "renderer": _renderer_fingerprint(seed, res)}
    done = root / "meta.json"
    if done.is_file() and json.loads(done.read_text()) == meta:
        return _cache_arrays(root, n, res, "r")
    root.mkdir(parents=True, exist_ok=True)
    if done.exists():
        done.unlink()
    arrs = _cache_arrays(root, n, res, "w+")
    render_arrays(n, res, seed, "train", workers=workers, out=arrs, log=log)
    for a in arrs.values():
        a.flush()
    done.write_text(json.dumps(meta))
    return _cache_arrays(root, n, res, "r")


def to_batch(arrs: dict, idx: np.ndarray) -> dict:
    """Tensors of cache rows ``idx``: image float [B, 3, H, W] in [0, 1], label int64
    [B, H, W], landmarks float [B, K, 2], attributes float [B, A]."""
    idx = np.sort(idx)   # memmap reads in order
    return {"image": augment.from_uint8(arrs["image"][idx]),
            "label": torch.from_numpy(np.asarray(arrs["label"][idx]).astype(np.int64)),
            "landmarks": torch.from_numpy(np.asarray(arrs["landmarks"][idx], np.float32)),
            "attributes": torch.from_numpy(np.asarray(arrs["attributes"][idx]).astype(np.float32))}


# ------------------------------------------------------------------ losses

def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per class over the whole batch, averaged over the classes present in
    the targets. It weighs a 12-pixel eyebrow like the background, as mIoU does.
    logits float [B, C, H, W]; target int64 [B, H, W]."""
    p = logits.softmax(1)
    oh = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    inter = (p * oh).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + oh.sum((0, 2, 3))
    present = oh.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return (1 - dice)[present].mean()


def class_weights(labels: np.ndarray, power: float, lo: float, hi: float) -> torch.Tensor:
    """Cross-entropy class weights ``clamp((median freq / freq_c) ** power, lo, hi)``,
    float [C], from label maps uint8 [n, H, W]. Without them the eyes, brows and lips
    (0.1 % of the pixels each) are learnt only after thousands of steps."""
    freq = np.bincount(np.asarray(labels).ravel(), minlength=NUM_CLASSES).astype(np.float64)
    freq = np.maximum(freq / freq.sum(), 1e-6)
    w = (np.median(freq) / freq) ** power
    return torch.tensor(np.clip(w, lo, hi), dtype=torch.float32)


def boundary_mask(label: torch.Tensor) -> torch.Tensor:
    """bool [B, H, W]: pixels whose 3x3 neighbourhood holds more than one class.
    label int64 [B, H, W]."""
    lf = label[:, None].float()
    return (F.max_pool2d(lf, 3, 1, 1) != -F.max_pool2d(-lf, 3, 1, 1))[:, 0]


def parser_loss(net, batch, cfg) -> torch.Tensor:
    """Class- and boundary-weighted cross-entropy + soft Dice. Once the classes are
    found (a few hundred steps), nearly every remaining error sits on a region edge, so
    edge pixels weigh ``1 + boundary_weight``."""
    logits = net(batch["image"]).float()
    y = batch["label"]
    ce = F.cross_entropy(logits, y, reduction="none")
    w = torch.ones_like(ce) if cfg.get("_class_weights") is None else cfg["_class_weights"][y]
    w = w * (1.0 + cfg.get("boundary_weight", 0.0) * boundary_mask(y).float())
    return (ce * w).sum() / w.sum() + cfg["dice_weight"] * soft_dice_loss(logits, y)


def splat_target(lm: torch.Tensor, h: int, w: int, res: int) -> torch.Tensor:
    """Bilinear splat of points into heatmap cells: lm float [B, K, 2] pixels of a ``res``
    image -> float [B, K, h * w] summing to 1 (cell centres at (j + 0.5) * res / w)."""
    gx = (lm[..., 0] * (w / res) - 0.5).clamp(0, w - 1 - 1e-4)
    gy = (lm[..., 1] * (h / res) - 0.5).clamp(0, h - 1 - 1e-4)
    x0, y0 = gx.floor(), gy.floor()
    fx, fy = gx - x0, gy - y0
    t = torch.zeros(*lm.shape[:2], h * w, dtype=lm.dtype)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = ((y0 + dy).clamp(max=h - 1) * w + (x0 + dx).clamp(max=w - 1)).long()
        t.scatter_add_(2, idx[..., None], wt[..., None])
    return t


def face_loss(net, batch, cfg) -> torch.Tensor:
    out = net(batch["image"])
    # landmark error in pixels (smooth L1 keeps the early, far-off phase stable)
    lm = F.smooth_l1_loss(out["landmarks"], batch["landmarks"], beta=1.0)
    # a direct heatmap target speeds up the start of soft-argmax training
    heat = out["heatmap"].float()
    b, k, h, w = heat.shape
    tgt = splat_target(batch["landmarks"], h, w, RES)
    hm = -(tgt * heat.reshape(b, k, h * w).log_softmax(-1)).sum(-1).mean()
    at = F.binary_cross_entropy_with_logits(out["attr_logits"], batch["attributes"])
    loss = lm + cfg["heatmap_weight"] * hm + cfg["attr_weight"] * at
    if "aux" in out and "aux" in batch:
        loss = loss + cfg["aux_weight"] * F.smooth_l1_loss(out["aux"], batch["aux"], beta=0.5)
    return loss


def region_loss(net, batch, cfg) -> torch.Tensor:
    lm = batch["landmarks"] + cfg["lm_jitter"] * torch.randn_like(batch["landmarks"])
    return F.binary_cross_entropy_with_logits(net(batch["image"], lm), batch["attributes"][:, net.attribute_ids])


LOSSES = {"parser": parser_loss, "face": face_loss, "regions": region_loss}


def factor_table(seed: int, n: int) -> tuple[tuple, np.ndarray]:
    """(names, float32 [n, F]): every scalar float factor of train items 0..n-1, from z
    alone (no rendering). Regressing them is an auxiliary task of the face net: a binary
    attribute such as ``nose_width > 0.128`` is learnt far faster with the width itself
    as a target."""
    from ..data.synthface import factors_from_z, sample_z
    from dataclasses import fields
    rows, names = [], None
    for i in range(n):
        f = factors_from_z(sample_z(seed, split_index("train", i)))
        if names is None:
            names = tuple(x.name for x in fields(f) if isinstance(getattr(f, x.name), float))
        rows.append([getattr(f, a) for a in names])
    return names, np.asarray(rows, np.float32)


# ------------------------------------------------------------------ validation

VAL_DISTORTIONS = ("clean", "blur")
# Validation chunk size. A chunk's distortion is seeded by its first index, so the region
# heads' validation crops line up with predicted_landmarks only at the same chunking.
VAL_BATCH = 64


@torch.no_grad()
def predicted_landmarks(val: dict, face_net, batch: int = VAL_BATCH) -> dict:
    """{distortion: float [n, 39, 2]}: ``face_net``'s landmarks on the validation images."""
    return {dist: torch.cat([face_net(augment.distort(dist, augment.from_uint8(val["image"][s:s + batch]), seed=s))
                             ["landmarks"].float() for s in range(0, val["image"].shape[0], batch)])
            for dist in VAL_DISTORTIONS}


@torch.no_grad()
def validate(kind: str, net, val: dict, bf16: bool, batch: int = VAL_BATCH) -> dict:
    """Validation numbers on the held-out validation arrays (clean and blurred); the
    region heads read ``val["predicted_landmarks"]`` (see :func:`predicted_landmarks`)."""
    net.eval()
    res = {}
    for dist in VAL_DISTORTIONS:
        outs = []
        for s in range(0, val["image"].shape[0], batch):
            x = augment.distort(dist, augment.from_uint8(val["image"][s:s + batch]), seed=s)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                if kind == "regions":
                    o = net(x, val["predicted_landmarks"][dist][s:s + batch])
                else:
                    o = net(x.contiguous(memory_format=torch.channels_last))
            outs.append(o.float().argmax(1) if kind == "parser" else
                        torch.sigmoid(o.float()) if kind == "regions" else
                        {"lm": o["landmarks"].float(), "at": torch.sigmoid(o["attr_logits"].float())})
        if kind == "regions":
            truth = np.asarray(val["attributes"])[:, net.attribute_ids]
            acc = 100 * metrics.attribute_accuracy(torch.cat(outs), truth)[1]
            res.update({f"{a}_{dist}": float(v) for a, v in zip(net.attributes, acc)})
        elif kind == "parser":
            res[f"miou_{dist}"] = 100 * metrics.dataset_miou(torch.cat(outs), val["label"].astype(np.int64),
                                                            NUM_CLASSES)
        else:
            lm = torch.cat([o["lm"] for o in outs])
            at = torch.cat([o["at"] for o in outs])
            res[f"nme_{dist}"] = 100 * metrics.normalized_mean_error(lm, val["landmarks"])
            res[f"attr_acc_{dist}"] = 100 * metrics.attribute_accuracy(at, val["attributes"])[0]
    net.train()
    return {k: round(v, 3) for k, v in res.items()}


# ------------------------------------------------------------------ training

DEFAULTS = {
    # the parser sees fewer distortions (aug_p) and no rescaling (scale_p = 0: a nearest-
    # neighbour label resample moves edges by up to half a pixel, which is the whole
    # error budget of a 12-pixel eyebrow)
    "parser": {"lr": 8e-3, "batch": 16, "weight_decay": 1e-4, "dice_weight": 1.0, "geo_p": 0.5,
               "scale_p": 0.0, "aug_p": 0.25, "boundary_weight": 4.0,
               "class_weight_power": 1.0, "class_weight_range": (0.2, 50.0),
               "crop_p": 0.5, "crop_size": 64, "crop_jitter": 12, "bn_recalib_batches": 40},
    "face": {"lr": 5e-3, "batch": 16, "weight_decay": 1e-4, "attr_weight": 4.0, "heatmap_weight": 0.5,
             "aux_weight": 1.0, "geo_p": 0.5, "scale_p": 0.2, "aug_p": 0.5, "bn_recalib_batches": 0},
    # lm_jitter: about the face net's landmark error (MD 0.27 px on held-out images)
    "regions": {"lr": 2e-3, "batch": 128, "weight_decay": 1e-4, "lm_jitter": 0.4, "geo_p": 0.5,
                "scale_p": 0.2, "aug_p": 0.5, "bn_recalib_batches": 0},
}


class Logger:
    """Prints and appends to a log file, each line prefixed with the elapsed seconds."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", buffering=1)

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")


class ThreadTuner:
    """Picks the torch thread count by measurement, again and again.

    On a shared machine two OpenMP threads can be several times slower than one (each
    barrier waits for a descheduled thread), while on a quiet one two are nearly twice
    as fast. Every ``period`` steps the first ``probe`` steps run with each candidate
    count in turn; the rest of the period uses the one with the lowest median step time.
    Thread counts change only the summation order, not the training recipe.
    """

    def __init__(self, choices=(1, 2), period: int = 200, probe: int = 4):
        self.choices, self.period, self.probe = tuple(choices), period, probe
        self.best, self.times = self.choices[-1], {c: [] for c in self.choices}

    def threads_for(self, step: int) -> int:
        p = step % self.period
        if p < self.probe * len(self.choices):
            return self.choices[p // self.probe]
        if p == self.probe * len(self.choices):
            self.best = min(self.choices, key=lambda c: float(np.median(self.times[c])))
            self.times = {c: [] for c in self.choices}
        return self.best

    def record(self, step: int, threads: int, seconds: float) -> None:
        if step % self.period < self.probe * len(self.choices):
            self.times[threads].append(seconds)


def lr_at(frac: float, base: float, warm: float = 0.03) -> float:
    """Linear warm-up over the first ``warm`` of the run, then cosine to 2 % of base."""
    if frac < warm:
        return base * (0.1 + 0.9 * frac / warm)
    f = min(1.0, (frac - warm) / (1 - warm))
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * f)))


def face_crops(img: torch.Tensor, label: torch.Tensor, lm: torch.Tensor, size: int, jitter: int,
               g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` x ``size`` crops around each face (the landmarks' mean, moved by up to
    ``jitter`` pixels), kept inside the image. img float [B, 3, H, W], label int64
    [B, H, W], lm float [B, K, 2] -> (float [B, 3, size, size], int64 [B, size, size])."""
    b, _, h, w = img.shape
    c = lm.mean(1).round().long() + torch.randint(-jitter, jitter + 1, (b, 2), generator=g)
    x0 = (c[:, 0] - size // 2).clamp(0, w - size)
    y0 = (c[:, 1] - size // 2).clamp(0, h - size)
    ims = torch.stack([img[i, :, y0[i]:y0[i] + size, x0[i]:x0[i] + size] for i in range(b)])
    labs = torch.stack([label[i, y0[i]:y0[i] + size, x0[i]:x0[i] + size] for i in range(b)])
    return ims, labs


def make_batch(kind: str, arrs: dict, idx: np.ndarray, g: torch.Generator, cfg: dict, crop: bool = False) -> dict:
    """An augmented training batch of cache rows ``idx``; ``crop`` (parser only) cuts
    face-centred crops of ``cfg['crop_size']`` before the photometric distortions."""
    b = to_batch(arrs, idx)
    if "_aux" in cfg:
        b["aux"] = cfg["_aux"][np.sort(idx)]
    img, lab, lm = augment.random_geometric(b["image"], b["label"] if kind == "parser" else None,
                                            b["landmarks"], g, p=cfg["geo_p"], scale_p=cfg["scale_p"])
    if crop:
        img, lab = face_crops(img, lab, lm, cfg["crop_size"], cfg["crop_jitter"], g)
    aug = dict(augment.TRAIN_AUG, p=cfg["aug_p"])
    b["image"] = augment.random_photometric(img, g, aug).contiguous(memory_format=torch.channels_last)
    if kind == "parser":
        b["label"] = lab
    else:
        b["landmarks"] = lm
    return b


@torch.no_grad()
def recalibrate_bn(net, kind: str, arrs: dict, cfg: dict, batches: int, g: torch.Generator, bf16: bool) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over ``batches`` full-frame
    training batches: crop steps shift the statistics away from what whole images give."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None          # cumulative average
    net.train()
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=g)))
    for _ in range(batches):
        idx = rng.choice(arrs["image"].shape[0], cfg["batch"], replace=False)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            net(make_batch(kind, arrs, idx, g, cfg)["image"])
    for m in bns:
        m.momentum = 0.1
    net.eval()


def train(args) -> Path:
    kind = args.kind
    out_dir = Path(args.out)
    log = Logger(out_dir / "logs" / f"{kind}.log")
    cfg = dict(DEFAULTS[kind])
    for k in ("lr", "batch"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    tuner = ThreadTuner() if args.threads == 0 else None
    torch.set_num_threads(args.threads or 2)
    cmd = "python -m facegen_rt.eval.train " + " ".join(shlex.quote(a) for a in args.argv)
    log(f"command: {cmd}")
    log(f"kind={kind} seed={args.seed} minutes={args.minutes} steps={args.steps} n_train={args.n_train} "
        f"data=SynthFace train split (dataset seed {args.data_seed}, items 0..{args.n_train - 1}) "
        f"val=held-out items {VAL_START}..{VAL_START + args.val_n - 1} bf16={args.bf16} "
        f"threads={args.threads} hyper={ {k: v for k, v in cfg.items() if not k.startswith('_')} }")
    log(f"machine: {platform.platform()} cpus={os.cpu_count()} torch={torch.__version__} "
        f"load={os.getloadavg()}")
    arrs = build_cache(args.cache, args.n_train, RES, args.data_seed, args.workers, log)
    if kind == "parser":
        cw = class_weights(arrs["label"][:2000], cfg["class_weight_power"], *cfg["class_weight_range"])
        cfg["class_weights"] = [round(float(v), 4) for v in cw]
        log(f"class weights (from train items 0..1999): {cfg['class_weights']}")
        cfg["_class_weights"] = torch.tensor(cfg["class_weights"])
    arch = json.loads(args.arch) if args.arch else {}
    if kind == "face" and cfg["aux_weight"] > 0:
        names, table = factor_table(args.data_seed, args.n_train)
        mu, sd = table.mean(0), table.std(0) + 1e-6
        cfg["_aux"] = torch.from_numpy((table - mu) / sd)
        cfg["aux_factors"] = list(names)
        arch["num_aux"] = len(names)
        log(f"auxiliary targets: {len(names)} standardised factors {list(names)}")
    val = render_arrays(args.val_n, RES, args.data_seed, "heldout", start=VAL_START, workers=args.workers)
    if kind == "regions":
        from .evaluators import load_net
        val["predicted_landmarks"] = predicted_landmarks(val, load_net("face", args.landmarks_from)[0])
        log(f"validation crops at the landmarks of the face net in {args.landmarks_from}")
    net = nets.build(kind, arch).to(memory_format=torch.channels_last)
    log(f"net: {type(net).__name__} {net.cfg.to_dict()} params={nets.num_params(net)}")
    decay = [p for n_, p in net.named_parameters() if p.dim() > 1]
    no_decay = [p for n_, p in net.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"], betas=(0.9, 0.99))
    loss_fn = LOSSES[kind]
    g = torch.Generator().manual_seed(args.seed)
    order_rng = np.random.default_rng(args.seed)
    # the loop stops early enough for the BatchNorm pass and the final validation to fit
    budget = args.minutes * 60.0 - min(90.0, 0.1 * args.minutes * 60.0)
    t0 = time.time()
    step, seen, epoch, pos = 0, 0, 0, 0
    perm = order_rng.permutation(args.n_train)
    run_loss, run_n, last_log, last_val = 0.0, 0, t0, t0
    history = []
    while True:
        elapsed = time.time() - t0
        frac = step / args.steps if args.steps else elapsed / budget
        if frac >= 1.0 or elapsed >= budget:
            break
        lr = lr_at(frac, cfg["lr"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        # crop steps (parser): face-centred crops carry the small classes at 4x the
        # density of full frames; (128 / crop)^2 times more of them cost the same
        crop = kind == "parser" and cfg.get("crop_p", 0) > 0 and float(torch.rand(1, generator=g)) < cfg["crop_p"]
        nb = cfg["batch"] * (RES // cfg["crop_size"]) ** 2 if crop else cfg["batch"]
        if pos + nb > args.n_train:
            perm, pos, epoch = order_rng.permutation(args.n_train), 0, epoch + 1
        idx = perm[pos:pos + nb]
        pos += nb
        ts = time.time()
        threads = tuner.threads_for(step) if tuner else args.threads
        torch.set_num_threads(threads)
        batch = make_batch(kind, arrs, idx, g, cfg, crop=crop)
        with torch.autocast("cpu", torch.bfloat16, enabled=args.bf16):
            loss = loss_fn(net, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if tuner:
            tuner.record(step, threads, time.time() - ts)
        step, seen = step + 1, seen + len(idx)
        run_loss, run_n = run_loss + float(loss.detach()), run_n + 1
        now = time.time()
        if now - last_log >= args.log_every:
            log(f"step {step} seen {seen} epoch {epoch} lr {lr:.2e} loss {run_loss / run_n:.4f} "
                f"({(now - t0) / seen * 1e3:.0f} ms/img, threads {threads}, load {os.getloadavg()[0]:.1f})")
            run_loss, run_n, last_log = 0.0, 0, now
        if now - last_val >= args.val_every:
            v = validate(kind, net, val, args.bf16)
            history.append({"minutes": round((time.time() - t0) / 60, 2), "step": step, **v})
            log(f"val step {step}: {v} ({time.time() - now:.0f} s)")
            last_val = time.time()
    if cfg.get("bn_recalib_batches"):
        recalibrate_bn(net, kind, arrs, cfg, cfg["bn_recalib_batches"], g, args.bf16)
        log(f"BatchNorm statistics re-estimated on {cfg['bn_recalib_batches']} full-frame batches")
    minutes = (time.time() - t0) / 60
    final = validate(kind, net, val, args.bf16)
    history.append({"minutes": round((time.time() - t0) / 60, 2), "step": step, **final})
    log(f"done: {step} steps, {seen} images ({epoch} full epochs), {minutes:.2f} min; final val {final}")
    net.eval()
    config = {"kind": kind, "arch": net.cfg.to_dict(), "input": "float [N, 3, 128, 128] RGB in [0, 1]"
              + (" and the face net's landmarks float [N, 39, 2]" if kind == "regions" else ""),
              "training": {"command": cmd, "seed": args.seed, "data": {
                  "split": "train", "dataset_seed": args.data_seed, "items": [0, args.n_train - 1],
                  "count": args.n_train, "res": RES},
                  "validation": {"split": "heldout", "items": [VAL_START, VAL_START + args.val_n - 1],
                                 "note": "logged only; not used to pick weights"},
                  "minutes_budget": args.minutes, "minutes_used": round(minutes, 2), "steps": step,
                  "images_seen": seen, "bf16_autocast": args.bf16,
                  "hyper": {k: v for k, v in cfg.items() if not k.startswith("_")},
                  "augment": {"train": dict(augment.TRAIN_AUG, p=cfg["aug_p"]), "geometric_p": cfg["geo_p"],
                              "scale_p": cfg["scale_p"]},
                  "final_validation": final, "history": history,
                  "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}"}}
    from ..weights.safetensors_io import save_model
    path = save_model(out_dir / f"{kind}.safetensors", {"net": net}, config)
    log(f"saved {path} ({path.stat().st_size / 2**20:.2f} MiB)")
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facegen_rt.eval.train", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=tuple(LOSSES), help="parser (19-class face parsing), face "
                   "(landmarks + attributes + embedding) or regions (attribute heads on region crops)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget (default 30)")
    p.add_argument("--steps", type=int, default=None, help="fixed step count for the schedule (still "
                   "capped by --minutes)")
    p.add_argument("--seed", type=int, default=0, help="seed of init, batch order and augmentation")
    p.add_argument("--n-train", type=int, default=32000, help="train-split items in the cache")
    p.add_argument("--data-seed", type=int, default=0, help="SynthFace dataset seed")
    p.add_argument("--val-n", type=int, default=256, help="held-out validation items (logs only)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache directory")
    p.add_argument("--out", type=Path, default=ASSET_DIR, help="where weights, config and log go")
    p.add_argument("--landmarks-from", type=Path, default=ASSET_DIR, help="regions: folder of the face "
                   "net whose landmarks the validation crops are cut at")
    p.add_argument("--workers", type=int, default=2, help="render processes for the cache")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = pick 1 or 2 by measuring, "
                   "see ThreadTuner)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--arch", type=str, default=None, help="JSON overrides of the net config")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32")
    p.add_argument("--log-every", type=float, default=60.0, help="seconds between loss lines")
    p.add_argument("--val-every", type=float, default=300.0, help="seconds between validations")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
