"""Distil an SCA-DM bundle into a few-step consistency student (LCM recipe).

CLI::

    python -m facegen_rt.distill.train --teacher facegen_rt/assets/scadm_small \\
        --cache /tmp/sf_cache128 --pairs /tmp/scadm_data/pairs --out /tmp/student \\
        --minutes 45 --seed 0 --mode lora --guidance 1.5 4.5 --threads 2

    # a smoke run on a random tiny teacher and random data, no files needed:
    python -m facegen_rt.distill.train --teacher preset:tiny --random-data 8 \\
        --max-steps 20 --out /tmp/student_tiny

Writes into ``--out``:
    model.safetensors, config.json, pipeline.json (+ guidance_embed.safetensors)
                        the student bundle (:mod:`facegen_rt.distill.student`);
    checkpoint/         resumable training state (``--resume`` continues from it);
    distill.json        command lines, seed, data, budget, steps, losses of every run;
    logs/distill.log    the log (also printed; a tqdm bar shows the running loss).

Stops at ``--minutes`` of wall clock for this invocation or ``--max-steps`` total
steps, whichever comes first. Sample the student with
``facegen-rt generate --model OUT --sampler lcm --steps 4``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facegen_rt.train import Logger, count_params

from .scadm import CacheSource, SCADMTask, random_source
from .student import save_student
from .trainer import STATE_JSON, DistillConfig, Distiller

PROG = "facegen_rt.distill.train"


def load_teacher(spec: str, seed: int):
    """(config, {"unet", "style_encoder", "vq"}, prediction, guidance, description) of
    a bundle directory or ``preset:NAME`` (randomly initialised with ``seed``)."""
    from facegen_rt.models.sca_dm import build_scadm, get_preset
    from facegen_rt.weights import load_scadm

    if spec.startswith("preset:"):
        cfg = get_preset(spec.split(":", 1)[1])
        torch.manual_seed(seed)
        info = {"preset": cfg.name, "init": f"random, seed {seed}"}
        return cfg, build_scadm(cfg), "eps", 1.0, info
    path = Path(spec)
    modules, cfg, _ = load_scadm(path, dtype=torch.float32)
    if "vq" not in modules:
        raise ValueError(f"teacher bundle {path} has no VQ first stage")
    settings = path / "pipeline.json"
    doc = json.loads(settings.read_text()) if settings.is_file() else {}
    if doc.get("consistency"):
        raise ValueError(f"{path} is already a distilled student; give its teacher")
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    return (cfg, modules, doc.get("prediction", "eps"), float(doc.get("guidance", 1.0)),
            {"path": str(path), "sha256": digest})


def make_source(args, cfg, modules, log):
    if args.random_data:
        return random_source(cfg, args.random_data, args.seed)
    if not args.cache:
        raise SystemExit("give --cache (a rendered SynthFace train cache) or --random-data N")
    from facegen_rt.train.data_cache import ImageCache, build_cache
    from facegen_rt.train.scadm import encode_latents

    if args.render and not Path(args.cache, "meta.json").is_file():
        build_cache(args.cache, args.render, cfg.image_size, args.data_seed, log=log)
    cache = ImageCache(args.cache, args.pairs)
    if cache.res != cfg.image_size:
        raise SystemExit(f"cache resolution {cache.res} != the teacher's {cfg.image_size}")
    if args.teacher.startswith("preset:"):
        raise SystemExit("a preset teacher has no trained VQ: use --random-data with it")
    n = min(args.latents, cache.n)
    lat = encode_latents(modules["vq"], cache, n, Path(args.work or Path(args.out, "work")), log,
                         args.teacher)
    return CacheSource(cache, lat * cfg.scale_factor, args.p_pair, args.ref_shift, args.p_uncond)


def recipe(args) -> DistillConfig:
    lo, hi = (args.guidance + args.guidance)[:2] if len(args.guidance) == 1 else args.guidance
    embed = {"on": True, "off": False, "auto": lo != hi}[args.guidance_embedding]
    return DistillConfig(
        mode=args.mode, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_target=args.lora_target, grid_steps=args.grid_steps, skip=args.skip,
        guidance_min=float(lo), guidance_max=float(hi), guidance_embedding=embed,
        huber_c=args.huber_c, ema_decay=args.ema, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, clip=args.clip, batch=args.batch, seed=args.seed,
        bf16=args.bf16).validate()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n")[0])
    p.add_argument("--teacher", required=True, help="SCA-DM bundle directory, or preset:NAME")
    p.add_argument("--out", required=True, help="student bundle directory to write")
    p.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget of this run")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this many steps in total")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    d = p.add_argument_group("data")
    d.add_argument("--cache", default=None, help="rendered SynthFace train cache")
    d.add_argument("--pairs", default=None, help="directory of the pose-pair renders")
    d.add_argument("--render", type=int, default=0, help="render a cache of N items if absent")
    d.add_argument("--data-seed", type=int, default=0, help="SynthFace seed when rendering")
    d.add_argument("--latents", type=int, default=8000, help="cache items to encode")
    d.add_argument("--work", default=None, help="where encoded latents are kept (OUT/work)")
    d.add_argument("--random-data", type=int, default=0, help="N random items (smoke runs)")
    d.add_argument("--p-pair", type=float, default=0.5)
    d.add_argument("--ref-shift", type=int, default=6)
    d.add_argument("--p-uncond", type=float, default=0.0)
    r = p.add_argument_group("recipe")
    r.add_argument("--mode", default="full", choices=["full", "lora"])
    r.add_argument("--lora-rank", type=int, default=8)
    r.add_argument("--lora-alpha", type=float, default=None)
    r.add_argument("--lora-target", default="all", choices=["all", "attention"])
    r.add_argument("--grid-steps", type=int, default=50, help="teacher DDIM grid N")
    r.add_argument("--skip", type=int, default=1, help="skipping step k in grid points")
    r.add_argument("--guidance", type=float, nargs="+", default=[1.0, 5.0],
                   help="guidance scale: one value (fixed) or MIN MAX (drawn per sample)")
    r.add_argument("--guidance-embedding", default="auto", choices=["auto", "on", "off"],
                   help="feed the scale to the student (auto: on for a range)")
    r.add_argument("--huber-c", type=float, default=0.001)
    r.add_argument("--ema", type=float, default=0.95, help="target network EMA decay")
    r.add_argument("--lr", type=float, default=None, help="default 1e-4 full, 1e-3 lora")
    r.add_argument("--warmup", type=int, default=100)
    r.add_argument("--weight-decay", type=float, default=0.0)
    r.add_argument("--clip", type=float, default=1.0)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--bf16", action="store_true", help="bf16 autocast of the UNet calls")
    o = p.add_argument_group("output")
    o.add_argument("--log-every", type=int, default=25)
    o.add_argument("--save-minutes", type=float, default=5.0)
    o.add_argument("--threads", type=int, default=0)
    o.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if len(args.guidance) > 2:
        p.error("--guidance takes one value or MIN MAX")
    if args.lr is None:
        args.lr = 1e-4 if args.mode == "full" else 1e-3
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt = out / "checkpoint"
    if (ckpt / STATE_JSON).is_file() and not args.resume:
        print(f"error: {ckpt} holds a checkpoint; pass --resume to continue it or choose "
              "another --out", file=sys.stderr)
        return 2
    log = Logger(out / "logs" / "distill.log")
    log.header([PROG, *argv], args.seed)
    command = "python -m " + " ".join(shlex.quote(a) for a in [PROG, *argv])
    cfg_recipe = recipe(args)
    cfg, modules, prediction, teacher_guidance, teacher_info = load_teacher(args.teacher, args.seed)
    source = make_source(args, cfg, modules, log)
    log(f"teacher {teacher_info}; prediction {prediction}; data: {source.description}")

    from facegen_rt.sampling import NoiseSchedule

    schedule = NoiseSchedule.from_config(cfg.schedule)
    task = SCADMTask(modules["unet"], modules["style_encoder"], prediction, schedule.alphas_cumprod)
    dist = Distiller(task, source, schedule, cfg_recipe)
    if args.resume and (ckpt / STATE_JSON).is_file():
        record = out / "distill.json"
        if record.is_file() and json.loads(record.read_text()).get("teacher") != teacher_info:
            print(f"error: {ckpt} was distilled from another teacher (see {record})",
                  file=sys.stderr)
            return 2
        dist.load_checkpoint(ckpt)
        log(f"resumed from {ckpt} at step {dist.step}")
    start_step, t0 = dist.step, time.time()
    log(f"recipe {dataclasses.asdict(cfg_recipe)}; trainable {dist.trainable_count()} of "
        f"{count_params(dist.student)} parameters")
    dist.run(args.max_steps, 60.0 * args.minutes, progress=not args.no_progress, log=log,
             log_every=args.log_every, checkpoint=ckpt, save_every_s=60.0 * args.save_minutes)
    seconds = time.time() - t0

    lo, hi = cfg_recipe.guidance_min, cfg_recipe.guidance_max
    default_g = (min(max(teacher_guidance, lo), hi) if cfg_recipe.guidance_embedding else 1.0)
    consistency = {"sampler": cfg_recipe.sampler_options(), "guidance_range": [lo, hi],
                   "skip": cfg_recipe.skip, "mode": cfg_recipe.mode, "steps": 4,
                   "teacher": teacher_info.get("path", teacher_info.get("preset"))}
    save_student(out, cfg, dist.export(), modules["style_encoder"], modules["vq"],
                 prediction=prediction, consistency=consistency, default_guidance=default_g)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
    log(f"done: steps {start_step} -> {dist.step} in {seconds:.0f} s; student bundle {out} "
        f"({size:.2f} MiB)")
    write_record(out / "distill.json", command, args, cfg_recipe, teacher_info, source,
                 dist, start_step, seconds, size)
    return 0


def write_record(path: Path, command: str, args, recipe_cfg: DistillConfig, teacher: dict,
                 source, dist: Distiller, start_step: int, seconds: float, size_mib: float):
    """distill.json: everything needed to rerun and judge the run (appends on resume)."""
    doc = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    doc["runs"].append({"command": command, "seed": args.seed, "start_step": start_step,
                        "end_step": dist.step, "seconds": round(seconds, 1),
                        "budget": {"minutes": args.minutes, "max_steps": args.max_steps},
                        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    losses = np.array(dist.losses)
    k = min(50, len(losses))
    doc.update({
        "command": command, "seed": args.seed, "teacher": teacher, "data": source.description,
        "budget": {"minutes": args.minutes, "max_steps": args.max_steps},
        "recipe": dataclasses.asdict(recipe_cfg), "steps": dist.step,
        "train_seconds": round(dist.elapsed, 1), "threads": torch.get_num_threads(),
        "loss": {"first_mean": float(losses[:k].mean()) if k else None,
                 "last_mean": float(losses[-k:].mean()) if k else None, "window": k},
        "student": {"trainable_parameters": dist.trainable_count(),
                    "bundle_mib": round(size_mib, 3)},
    })
    path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
