"""``facegen-rt generate``: SCA-DM face synthesis from a label map.

With no arguments it loads the bundled SynthFace model, takes the bundled example mask
(``facegen_rt/assets/examples/mask_0.png``) and the bundled example face as style
reference, and writes PNGs to ./facegen_out. It shows a progress bar and prints the
latency of every step and the total.

Examples::

    facegen-rt generate
    facegen-rt generate --mask my_labels.png --reference face.png --reference-mask face_labels.png
    facegen-rt generate --reference base.png --reference donor.png --regions hair,skin
    facegen-rt generate --steps 20 --sampler dpmpp2m --guidance 2 --seed 3 --dtype bf16
    facegen-rt generate --model student_dir --sampler lcm --steps 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facegen-rt generate",
                                description="SCA-DM semantic face synthesis from a label map.")
    p.add_argument("--mask", default=None,
                   help="label PNG of class ids 0..18 (default: the bundled example mask)")
    p.add_argument("--reference", action="append", default=None,
                   help="style reference image; repeat for several (the first is the base)")
    p.add_argument("--reference-mask", action="append", default=None,
                   help="label PNG of each reference, in the same order (default: the "
                        "bundled parser labels them)")
    p.add_argument("--regions", default=None,
                   help="comma-separated regions taken from the last reference (e.g. "
                        "hair,skin); or region=index pairs (hair=1,eyes=2)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: 50; 4 with --sampler lcm)")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpmpp2m", "lcm"],
                   help="lcm: multi-step consistency sampling of a distilled student "
                        "(1, 2, 4 or 8 steps)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's recommended "
                        "scale from its pipeline.json, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1, help="samples per mask")
    p.add_argument("--backend", default="auto", choices=["auto", "reference", "cpu", "triton"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--out", default="facegen_out", help="output directory")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_regions(spec: Optional[str], n_refs: int) -> Optional[dict]:
    """"hair,skin" -> {hair: n_refs - 1, skin: n_refs - 1}; "hair=1,eyes=2" -> as given."""
    if not spec:
        return None
    out: dict = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            name, idx = item.split("=", 1)
            try:
                out[name.strip()] = int(idx)
            except ValueError:
                raise SystemExit(f"--regions: {item!r} must be region=reference_index") from None
        else:
            out[item] = n_refs - 1
    return out


def generate_main(argv=None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from facegen_rt.pipelines.semantic import (SemanticPipeline, bundled_example,
                                               bundled_example_mask)

    try:
        pipe = SemanticPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                                backend=args.backend)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mask = args.mask or bundled_example_mask(0)
    refs = args.reference
    ref_masks = args.reference_mask
    if refs is None:
        example = pipe.default_reference or bundled_example(pipe.image_size)
        if example is None:
            print("error: no --reference given and the model has no bundled example", file=sys.stderr)
            return 2
        refs, ref_masks = [example[0]], [example[1]]
    if ref_masks is not None and len(ref_masks) != len(refs):
        print(f"error: {len(ref_masks)} --reference-mask for {len(refs)} --reference", file=sys.stderr)
        return 2
    regions = parse_regions(args.regions, len(refs))
    if regions and len(refs) < 2:
        print("error: --regions needs at least two references (the base first)", file=sys.stderr)
        return 2
    try:
        result = pipe.generate(mask, reference=list(refs),
                               reference_mask=list(ref_masks) if ref_masks else None,
                               region_sources=regions, sampler=args.sampler,
                               steps=(args.steps if args.steps is not None
                                      else 4 if args.sampler == "lcm" else 50),
                               guidance=args.guidance, eta=args.eta, seed=args.seed,
                               batch=args.batch, progress=not args.no_progress)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = result.save(args.out)
    lat = np.array(result.step_latency) * 1e3
    for i, ms in enumerate(lat):
        print(f"step {i + 1:3d}/{len(lat)}: {ms:8.1f} ms")
    print(f"setup (style tokens + caches): {result.setup_s * 1e3:.1f} ms; "
          f"sampling: {lat.sum():.1f} ms (median step {np.median(lat):.1f} ms); "
          f"VQ decode: {result.decode_s * 1e3:.1f} ms; total: {result.total_s * 1e3:.1f} ms")
    info = dict(result.info, step_ms=[round(float(x), 3) for x in lat],
                total_ms=round(result.total_s * 1e3, 3), images=[str(p) for p in paths])
    Path(args.out, "generate.json").write_text(json.dumps(info, indent=2) + "\n")
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(generate_main())
