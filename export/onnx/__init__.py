"""ONNX export of facegen_rt models (``facegen-rt export MODEL --format onnx``).

    from facegen_rt.export.onnx import export_model
    export_model("sca-dm", "out/", preset="tiny", dynamic_batch=True, fused=True)

Two flavours: portable (standard ops only) and fused (facegen ops as single nodes in
domain "facegen", each with a local-function body); see exporter.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from .exporter import (DEFAULT_OPSET, FLAVOURS, SUPPORTED_OPSETS, check_opset, export_graph,
                       relative_error)
from .models import MODELS, canonical, load

__all__ = ["DEFAULT_OPSET", "FLAVOURS", "MODELS", "SUPPORTED_OPSETS", "check_opset",
           "check_out_dir", "export_model", "relative_error"]


def check_out_dir(out: Path, force: bool) -> Path:
    """ValueError naming --out when it exists (as a non-empty folder) without --force."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} already exists and is not empty; pass --force to "
                         "overwrite the exported files in it")
    return out


def export_model(model: str, out: Path, *, flavours: Sequence[str] = ("portable",),
                 dynamic_batch: bool = False, batch: int = 1, opset: int = DEFAULT_OPSET,
                 weights: Optional[str] = None, preset: Optional[str] = None, seed: int = 0,
                 feature_res: Optional[int] = None, force: bool = False,
                 graphs: Optional[Sequence[str]] = None, log=print) -> dict:
    """Export every graph of ``model`` to ``out``; returns the top-level manifest.

    With one flavour the files are ``<graph>.onnx`` + ``<graph>.json``; with several,
    ``<graph>.<flavour>.onnx``. ``out/manifest.json`` lists them, with the model's
    settings (schedule, sizes, prediction) under "pipeline".
    """
    name = canonical(model)
    opset = check_opset(opset)
    bad = [f for f in flavours if f not in FLAVOURS]
    if bad or not flavours:
        raise ValueError(f"flavours {list(flavours)}: choose from {FLAVOURS}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"--batch must be a positive int, got {batch!r}")
    out = check_out_dir(out, force)
    loaded = load(name, weights, preset, seed, feature_res)
    specs = loaded.graphs
    if graphs is not None:
        unknown = sorted(set(graphs) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"unknown graph(s) {unknown} for {name}; "
                             f"choose from {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in graphs]
    cache: dict = {}
    entries: dict = {}
    for spec in specs:
        log(f"export {name}/{spec.name}: {', '.join(flavours)}, opset {opset}, "
            f"{'dynamic batch' if dynamic_batch else f'batch {batch}'}")
        manifests = export_graph(spec, out, flavours, opset, dynamic_batch, batch, name,
                                 loaded.weights, cache, suffix_flavour=len(flavours) > 1)
        for flavour, m in manifests.items():
            entries.setdefault(flavour, {})[spec.name] = {
                "file": m["file"], "manifest": Path(m["file"]).with_suffix(".json").name}
    top = {"model": name, "opset": opset, "dynamic_batch": dynamic_batch,
           "batch": None if dynamic_batch else batch, "flavours": entries,
           "weights": loaded.weights, "pipeline": loaded.pipeline}
    (Path(out) / "manifest.json").write_text(json.dumps(top, indent=1) + "\n")
    return top
