"""``facegen-rt export MODEL --format onnx [--fused] [--dynamic-batch] [--opset N] --out DIR``.

Examples:
    facegen-rt export sca-dm --format onnx --preset tiny --dynamic-batch --out /tmp/scadm
    facegen-rt export sca-dm --format onnx --fused --out /tmp/scadm-fused   # bundled model
    facegen-rt export stylegan2 --format onnx --preset small --drag-features 64 --out /tmp/sg2

Bad arguments exit with a message naming the argument (unknown MODEL, unsupported
--opset, an existing --out without --force, ...).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

FORMATS = ("onnx",)


def parser() -> argparse.ArgumentParser:
    from facegen_rt.export.onnx import DEFAULT_OPSET, MODELS, SUPPORTED_OPSETS

    p = argparse.ArgumentParser(prog="facegen-rt export", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("model", metavar="MODEL", help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--format", default="onnx",
                   help="onnx (TensorRT engines are built from the ONNX files: see "
                        "export/tensorrt/README.md)")
    p.add_argument("--fused", action="store_true",
                   help="facegen ops as single nodes in domain 'facegen' with local-function "
                        "bodies (default: portable, standard ops only)")
    p.add_argument("--both", action="store_true",
                   help="write both flavours (<graph>.portable.onnx, <graph>.fused.onnx)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    p.add_argument("--opset", default=str(DEFAULT_OPSET),
                   help=f"default-domain opset: {', '.join(map(str, SUPPORTED_OPSETS))} "
                        f"(default {DEFAULT_OPSET}; 23 emits Attention and GroupNormalization)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="write into an existing --out")
    p.add_argument("--weights", default=None, help="SCA-DM bundle folder, or StyleGAN2 .pkl/.pt")
    p.add_argument("--preset", default=None, help="random-init config preset (e.g. tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed of a random initialisation")
    p.add_argument("--graphs", default=None, help="comma-separated subset of the graphs")
    p.add_argument("--drag-features", type=int, default=None, metavar="RES",
                   help="stylegan2: also output the features of the block at resolution RES")
    return p


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.format not in FORMATS:
        raise SystemExit(f"facegen-rt export: --format {args.format!r} is not supported; "
                         f"use onnx (TensorRT engines are built from ONNX with "
                         "export/tensorrt/build_engine.py)")
    from facegen_rt.export.onnx import export_model

    flavours = ("portable", "fused") if args.both else (("fused",) if args.fused else ("portable",))
    try:
        top = export_model(args.model, args.out, flavours=flavours,
                           dynamic_batch=args.dynamic_batch, batch=args.batch, opset=args.opset,
                           weights=args.weights, preset=args.preset, seed=args.seed,
                           feature_res=args.drag_features, force=args.force,
                           graphs=args.graphs.split(",") if args.graphs else None)
    except ValueError as exc:
        raise SystemExit(f"facegen-rt export: {exc}") from None
    n = sum(len(v) for v in top["flavours"].values())
    print(f"wrote {n} graph(s) and manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(export_main())
