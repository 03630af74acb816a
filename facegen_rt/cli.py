"""The `facegen-rt` command. Each subcommand lives in its own module; this file only
routes arguments, so importing it stays cheap."""

from __future__ import annotations

import argparse
import importlib
import sys

from facegen_rt.runtime.allocator import retain_freed_memory

# subcommand -> (module, function taking argv, help)
COMMANDS = {
    "info": ("facegen_rt.info", "main", "versions, and every op backend's availability"),
    "synth": ("facegen_rt.data.synthface.cli", "synth_main",
              "render SynthFace images with labels: --n N --res R --out DIR"),
    "generate": ("facegen_rt.pipelines.generate_cli", "generate_main",
                 "mask-controlled face generation with SCA-DM (see --help)"),
    "export": ("facegen_rt.export.cli", "export_main", "export a model to ONNX (see --help)"),
    "drag": ("facegen_rt.drag.cli", "drag_main",
             "one DragGAN edit, headless: before/after PNGs and per-step latency (see --help)"),
    "serve": ("facegen_rt.serve.cli", "serve_main",
              "the drag editor in the browser, on a local port (see --help)"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="facegen-rt", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS),
                        help="; ".join(f"{k}: {v[2]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    # Only speed depends on this; see facegen_rt.runtime.allocator.
    retain_freed_memory()
    module, func, _ = COMMANDS[args.command]
    result = getattr(importlib.import_module(module), func)(argv[1:])
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
