"""``facegen-rt synth``: render a SynthFace dataset to a directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from .dataset import SPLITS
from .render import MAX_RES, MIN_RES
from .writer import write_dataset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegen-rt synth",
                                description="Render SynthFace images with label maps, landmarks, "
                                            "attributes and captions.")
    p.add_argument("--n", type=int, required=True, help="number of images (>= 1)")
    p.add_argument("--res", type=int, default=128, help=f"square resolution, {MIN_RES}..{MAX_RES} (default 128)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed, 0 <= seed < 2**32 (default 0)")
    p.add_argument("--split", choices=SPLITS, default="train", help="which split's streams to render")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def synth_main(argv=None) -> int:
    """Entry point; ``argv`` excludes the program and subcommand names. Returns 0."""
    p = _parser()
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if not MIN_RES <= args.res <= MAX_RES:
        p.error(f"--res must be in [{MIN_RES}, {MAX_RES}], got {args.res}")
    if not 0 <= args.seed < 2 ** 32:
        p.error(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out exists and is not a directory: {args.out}")
    out = write_dataset(args.n, args.res, args.out, seed=args.seed, progress=not args.no_progress,
                        split=args.split)
    print(f"wrote {args.n} samples to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(synth_main())
