"""``facegen-rt drag``: one DragGAN edit from the command line, without the browser.

It loads the bundled SynthFace generator (or ``--weights``), renders the latent of
``--seed``, places the points, runs the drag until the handles arrive (DragGAN's stop
rule) or ``--steps`` run out, with a progress bar, and writes to ``--out``:

- ``before.png`` and ``after.png``, the generator's images;
- ``edit.png``, the two side by side with the points drawn: red = handle where it
  started, green = where tracking left it, blue = target;
- ``drag.json``: the settings, each point's start, end and target, and every step's
  latency.

It prints the step latency (first, median, p90) and the total. With no ``--point``, the
edit is the drag-accuracy protocol's (``facegen_rt.eval.drag_accuracy``): the bundled
landmark model finds the face's landmarks, and one of them (drawn with ``--seed``) is
dragged 10-30 px.

Examples::

    facegen-rt drag
    facegen-rt drag --seed 3 --point 120,160:135,150 --steps 100 --mask lower
    facegen-rt drag --weights ffhq.pkl --point 260,300:300,300 --out my_edit
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

PROG = "facegen-rt drag"
MASKS = ("none", "lower", "upper")


def add_generator_arguments(p: argparse.ArgumentParser) -> None:
    """--weights, --format and --threads (the drag commands: drag and serve)."""
    p.add_argument("--weights", default=None,
                   help="generator file: a facegen_rt .safetensors bundle, an NVlabs .pkl or a "
                        "rosinality .pt (default: the bundled SynthFace generator)")
    p.add_argument("--format", default="auto", choices=("auto", "bundle", "nvlabs", "rosinality"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def generator_from_args(args: argparse.Namespace, prog: str):
    """Apply --threads and load --weights / --format; None, after saying why on stderr,
    when the file is missing or not a generator."""
    from facegen_rt.weights import load_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return load_generator(args.weights, fmt=args.format)
    except (FileNotFoundError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG,
                                description="One DragGAN edit, without the browser: "
                                            "before/after PNGs and the step latency.",
                                epilog="Points are pixels of the generator's image: x = column, "
                                       "y = row, from the top left.")
    add_generator_arguments(p)
    p.add_argument("--seed", type=int, default=0,
                   help="latent seed (DragGAN's w0_seed); also draws the default edit")
    p.add_argument("--psi", type=float, default=0.7, help="truncation psi")
    p.add_argument("--point", action="append", default=None, metavar="HX,HY:TX,TY",
                   help="a handle and its target; repeat for several points")
    p.add_argument("--mask", default="none",
                   help="editable region: none, lower, upper (half of the image), or a "
                        "grayscale PNG of the image's size, white = editable")
    p.add_argument("--steps", type=int, default=200, help="most steps to run")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--out", default="drag_out", help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_point(spec: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """'HX,HY:TX,TY' -> ((hx, hy), (tx, ty)); ValueError naming the expected form."""
    try:
        handle, target = spec.split(":")
        hx, hy = (float(v) for v in handle.split(","))
        tx, ty = (float(v) for v in target.split(","))
    except ValueError:
        raise ValueError(f"--point {spec!r}: expected HX,HY:TX,TY (pixels, x = column, "
                         f"y = row)") from None
    return (hx, hy), (tx, ty)


def editable_mask(spec: str, res: int) -> Optional[torch.Tensor]:
    """The editable region [res, res] float (1 = editable) of --mask, or None for 'none'."""
    if spec == "none":
        return None
    if spec in ("lower", "upper"):
        m = torch.zeros(res, res)
        if spec == "lower":
            m[res // 2:] = 1
        else:
            m[:res // 2] = 1
        return m
    from PIL import Image, UnidentifiedImageError

    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--mask must be one of {', '.join(MASKS)} or a PNG file; "
                         f"{spec!r} is neither")
    try:
        with Image.open(path) as im:
            gray = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"--mask {spec}: not a readable image ({exc})") from None
    if gray.shape != (res, res):
        raise ValueError(f"--mask {spec}: the mask is {gray.shape[1]}x{gray.shape[0]}, the "
                         f"generator's images are {res}x{res}")
    return torch.from_numpy((gray >= 128).astype(np.float32))


def default_point(image_uint8: torch.Tensor, seed: int, lower_half: bool):
    """The drag-accuracy protocol's edit on this image: (handle, target, landmark name)."""
    from facegen_rt.data.synthface.landmarks import LANDMARK_NAMES
    from facegen_rt.eval.drag_accuracy import pick_edit
    from facegen_rt.eval.evaluators import load_evaluators

    landmarks = load_evaluators().landmarks(image_uint8[None])[0].numpy().astype(np.float64)
    k, target = pick_edit(np.random.default_rng(seed), landmarks, image_uint8.shape[0],
                          lower_half)
    return (float(landmarks[k, 0]), float(landmarks[k, 1])), target, LANDMARK_NAMES[k]


def _mark(img: np.ndarray, xy, colour) -> None:
    """A 5x5 square of ``colour`` centred on pixel ``xy`` (clipped to the image)."""
    x, y = int(round(xy[0])), int(round(xy[1]))
    h, w = img.shape[:2]
    img[max(y - 2, 0):min(y + 3, h), max(x - 2, 0):min(x + 3, w)] = colour


def edit_picture(before: np.ndarray, after: np.ndarray, points: list[dict]) -> np.ndarray:
    """[H, 2W, 3] uint8: before | after, with start (red), end (green), target (blue)."""
    left, right = before.copy(), after.copy()
    for p in points:
        for img in (left, right):
            _mark(img, p["target"], (40, 90, 255))
            _mark(img, p["handle_start"], (230, 30, 30))
        _mark(right, p["handle_end"], (30, 200, 60))
    return np.concatenate([left, right], axis=1)


def drag_main(argv=None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from PIL import Image

    from facegen_rt.drag import DragSession

    if args.steps < 1:
        print(f"{PROG}: --steps must be >= 1", file=sys.stderr)
        return 2
    G = generator_from_args(args, PROG)
    if G is None:
        return 2
    try:
        points = [parse_point(s) for s in args.point or []]
        res = int(G.img_resolution)
        mask = editable_mask(args.mask, res)
        options = {} if args.lr is None else {"lr": args.lr}
        session = DragSession(G, seed=args.seed, psi=args.psi, **options)
        before = session.render_uint8()
        chosen = None
        if not points:
            handle, target, chosen = default_point(before, args.seed, args.mask == "lower")
            points = [(handle, target)]
        for h, t in points:
            session.add_point(h, t)
        session.set_mask(mask)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    placed = session.points  # handles rounded to pixels, in the order given
    if chosen is not None:
        print(f"edit: landmark {chosen} at {placed[0].handle} -> target "
              f"({placed[0].target[0]:.1f}, {placed[0].target[1]:.1f})")

    t0 = time.perf_counter()
    step_ms, last = [], [t0]

    def clock(_result) -> None:  # runs after every step
        now = time.perf_counter()
        step_ms.append((now - last[0]) * 1e3)
        last[0] = now

    results = session.run(args.steps, callback=clock, progress=not args.no_progress)
    drag_s = time.perf_counter() - t0
    after = session.render_uint8()
    final = results[-1]
    records = [{"handle_start": list(p.handle), "target": list(p.target),
                "handle_end": list(final.handles[p.id]),
                "distance_end": round(float(final.distances[p.id]), 3)} for p in placed]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    before_np, after_np = before.numpy(), after.numpy()
    Image.fromarray(before_np).save(out / "before.png")
    Image.fromarray(after_np).save(out / "after.png")
    Image.fromarray(edit_picture(before_np, after_np, records)).save(out / "edit.png")
    info = {"generator": args.weights or "bundled SynthFace generator", "resolution": res,
            "seed": args.seed, "psi": args.psi, "lr": session.lr, "mask": args.mask,
            "landmark": chosen, "points": records, "steps": len(results),
            "done": bool(final.done), "threads": torch.get_num_threads(),
            "step_ms": [round(ms, 3) for ms in step_ms], "drag_s": round(drag_s, 4)}
    (out / "drag.json").write_text(json.dumps(info, indent=2) + "\n")

    # Every step's latency is in drag.json; a 200-line listing would bury the summary.
    ms = np.array(step_ms)
    print(f"{len(results)} steps, {'arrived' if final.done else 'stopped at --steps'}; step "
          f"latency: first {ms[0]:.1f} ms, median {np.median(ms):.1f} ms "
          f"({1e3 / np.median(ms):.1f} it/s), p90 {np.percentile(ms, 90):.1f} ms; "
          f"total {drag_s * 1e3:.1f} ms")
    for r in records:
        print(f"handle {tuple(r['handle_start'])} -> {tuple(r['handle_end'])}, target "
              f"({r['target'][0]:.1f}, {r['target'][1]:.1f}), {r['distance_end']:.1f} px left")
    for name in ("before.png", "after.png", "edit.png", "drag.json"):
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(drag_main())
