"""Drag accuracy on a generator: random single-point landmark edits, scored by the
bundled landmark model (DragGAN's face-landmark protocol, one point per edit).

Edit i (latent seed i, truncation 0.7, the session's defaults otherwise):
  1. render the image and find its 39 landmarks with the bundled landmark model;
  2. pick a landmark k at random (ears excluded: hair often hides them) as the handle,
     and a target 10-30 px away in a random direction, inside the image;
  3. drag for at most ``max_steps`` steps (the session stops when the tracked handle is
     within DragGAN's stop distance);
  4. find landmark k again on the final image. MD = |landmark k - target| in pixels.

MD at the start is |landmark k (first image) - target|; the report gives the mean MD
before and after, and the fall in percent. With ``--mask lower`` only the lower half of
the image is editable (DragGAN's mask term), handles and targets are drawn in the lower
half, and the mean absolute pixel change of the upper half (0-255) is reported too.

CLI::

    python -m facegen_rt.eval.drag_accuracy --n 100 --mask none --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from facegen_rt.data.synthface.landmarks import LANDMARK_NAMES
from facegen_rt.drag import DragSession
from facegen_rt.drag.points import round_xy
from facegen_rt.weights import load_generator

from .evaluators import Evaluators, load_evaluators

HANDLE_LANDMARKS = tuple(i for i, n in enumerate(LANDMARK_NAMES) if "ear" not in n)
MARGIN = 8  # targets stay this many pixels inside the image


def pick_edit(rng: np.random.Generator, landmarks: np.ndarray, res: int,
              lower_half: bool) -> tuple[int, tuple[float, float]]:
    """(landmark index, target (x, y)) with |target - landmark| uniform in [10, 30] px."""
    lo, hi = MARGIN, res - 1 - MARGIN
    y_min = res / 2 + MARGIN if lower_half else lo
    choices = [k for k in HANDLE_LANDMARKS
               if lo <= landmarks[k, 0] <= hi and y_min <= landmarks[k, 1] <= hi]
    if not choices:
        raise ValueError("no landmark inside the allowed area")
    for _ in range(1000):
        k = int(rng.choice(choices))
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(10, 30)
        x, y = landmarks[k] + dist * np.array([np.cos(angle), np.sin(angle)])
        if lo <= x <= hi and y_min <= y <= hi:
            return k, (float(x), float(y))
    raise ValueError("no target found inside the allowed area")


def run_edit(G, ev: Evaluators, index: int, max_steps: int, lower_half: bool,
             seed: int = 0) -> dict:
    """One edit (see the module doc); returns its record."""
    res = G.img_resolution
    session = DragSession(G, seed=index)
    before = session.render_uint8()
    lm0 = ev.landmarks(before[None])[0].numpy().astype(np.float64)
    k, target = pick_edit(np.random.default_rng([seed, index]), lm0, res, lower_half)
    handle = round_xy((float(lm0[k, 0]), float(lm0[k, 1])))  # inside the image: pick_edit
    session.add_point(handle, target)
    if lower_half:
        mask = torch.zeros(res, res)
        mask[res // 2:] = 1
        session.set_mask(mask)
    t0 = time.perf_counter()
    results = session.run(max_steps)
    seconds = time.perf_counter() - t0
    after = session.render_uint8()
    lm1 = ev.landmarks(after[None])[0].numpy().astype(np.float64)
    record = {
        "index": index, "landmark": LANDMARK_NAMES[k], "handle": list(handle),
        "target": list(target), "md_start": float(np.hypot(*(lm0[k] - target))),
        "md_end": float(np.hypot(*(lm1[k] - target))),
        "tracked_end": results[-1].distances[0] if results else None,
        "steps": len(results), "done": bool(results and results[-1].done),
        "seconds_per_step": seconds / max(len(results), 1),
    }
    if lower_half:
        diff = (after.float() - before.float()).abs()
        record["upper_change"] = float(diff[:res // 2].mean())
        record["lower_change"] = float(diff[res // 2:].mean())
    return record


def summarize(records: list[dict], mask: str) -> dict:
    start = float(np.mean([r["md_start"] for r in records]))
    end = float(np.mean([r["md_end"] for r in records]))
    out = {"mask": mask, "n": len(records), "md_start": start, "md_end": end,
           "fall_percent": 100.0 * (1 - end / start),
           "median_md_end": float(np.median([r["md_end"] for r in records])),
           "done_fraction": float(np.mean([r["done"] for r in records])),
           "median_steps": float(np.median([r["steps"] for r in records])),
           "median_iterations_per_s": 1.0 / float(np.median([r["seconds_per_step"] for r in records]))}
    if mask == "lower":
        out["upper_half_change"] = float(np.mean([r["upper_change"] for r in records]))
        out["lower_half_change"] = float(np.mean([r["lower_change"] for r in records]))
    return out


def markdown(summaries: list[dict], generator: str) -> str:
    lines = [f"# Drag accuracy: {generator}", "",
             "Random single-point landmark edits (facegen_rt/eval/drag_accuracy.py); MD = "
             "|landmark - target| in pixels at 256^2, landmarks from the bundled landmark model.",
             "", "| editable mask | edits | MD start | MD end | fall | median MD end | stopped "
             "by rule | median steps | it/s (median) | upper-half change (0-255) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        upper = f"{s['upper_half_change']:.2f} (lower half {s['lower_half_change']:.2f})" \
            if "upper_half_change" in s else "-"
        lines.append(f"| {s['mask']} | {s['n']} | {s['md_start']:.2f} | {s['md_end']:.2f} | "
                     f"{s['fall_percent']:.1f} % | {s['median_md_end']:.2f} | "
                     f"{100 * s['done_fraction']:.0f} % | {s['median_steps']:.0f} | "
                     f"{s['median_iterations_per_s']:.1f} | {upper} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facegen_rt.eval.drag_accuracy",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--mask", choices=("none", "lower"), default="none")
    p.add_argument("--weights", default=None, help="generator (default: the bundled one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the landmark/target draws")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON and markdown")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_generator(args.weights)
    ev = load_evaluators()
    lower = args.mask == "lower"
    records = [run_edit(G, ev, i, args.max_steps, lower, args.seed)
               for i in tqdm(range(args.n), desc=f"drag edits (mask {args.mask})", unit="edit")]
    summary = summarize(records, args.mask)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.weights or "bundled SynthFace generator"
    doc = {"generator": name, "max_steps": args.max_steps, "seed": args.seed,
           "threads": torch.get_num_threads(), "summary": summary, "edits": records}
    (out / f"drag_accuracy_{args.mask}.json").write_text(json.dumps(doc, indent=1) + "\n")
    summaries = [json.loads(f.read_text())["summary"]
                 for f in sorted(out.glob("drag_accuracy_*.json"))]
    (out / "drag_accuracy.md").write_text(markdown(summaries, name))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
