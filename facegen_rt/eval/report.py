"""Acceptance report of the bundled evaluators on held-out SynthFace images.

::

    python -m facegen_rt.eval.report [--n 1000] [--n256 200] [--out benchmarks/results]

Renders held-out items ``0..n-1`` at 128x128 (and ``0..n256-1`` at 256x256 for the
parser), runs the evaluators on the clean images and under each fixed-strength
distortion of :data:`facegen_rt.eval.augment.REPORT_DISTORTIONS`, and writes
``evaluators.json`` and ``evaluators.md`` (machine, commit, time, table, bars).

Numbers: parser mIoU is the dataset-level confusion-matrix mIoU over the 19 classes
(:mod:`facegen_rt.eval.metrics`); landmark error is the NME in % of the outer-eye-corner
distance, and MD in pixels at 128x128; attribute accuracy is the mean over the 32
attributes of per-attribute accuracy at threshold 0.5. FD-SF / KID rows give the scale
of the embedding distances: two disjoint clean halves against each other, and the clean
set against each distorted copy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ..data.synthface import ATTRIBUTE_NAMES, CLASS_NAMES, NUM_CLASSES
from . import augment, metrics
from .evaluators import ASSET_DIR, REPORT_HELDOUT_START, Evaluators, asset_paths

SCHEMA = "facegen_rt.evaluators/1"
DISTORTIONS = ("clean",) + tuple(augment.REPORT_DISTORTIONS)
#: acceptance bars on the held-out set at 128x128
BARS = {"parser_miou_min": 95.0, "landmark_nme_max": 3.0, "attribute_acc_min": 97.0,
        "parser_miou_max_drop": 10.0}
REPO = Path(__file__).resolve().parent.parent.parent


def _git() -> dict:
    def git(*args):
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    return {"commit": head or "uncommitted", "dirty": bool(status) if status is not None else None}


def _machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_model": model,
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_num_threads": torch.get_num_threads(),
            "loadavg_start": list(os.getloadavg())}


def _chunks(x: torch.Tensor, name: str, seed: int, size: int = 100) -> torch.Tensor:
    # distortions are seeded per chunk so that the result does not depend on batch sizes elsewhere
    return torch.cat([augment.distort(name, x[s:s + size], seed=seed + s) for s in range(0, x.shape[0], size)])


#: bins of the edge coverage of a pixel's own class (renderer's ``edge_conf``, 0.5..1)
EDGE_BINS = (0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0)
#: "mIoU if every error at coverage >= t were fixed" for these t
EDGE_FIX_FROM = (0.9, 0.8, 0.7, 0.6, 0.55)


def edge_error_table(pred: torch.Tensor, labels: torch.Tensor, conf: np.ndarray) -> dict:
    """Where the parser's errors sit relative to the renderer's edges.

    A label is ``coverage >= 0.5`` of an anti-aliased layer, so a pixel whose own class
    covers little more than half of it differs from the other side only by a small shift
    of its blended colour. pred, labels int64 [N, H, W]; conf uint8 [N, H, W] (the
    coverage of the pixel's class times 255; 255 inside a region). Returns rows per
    coverage bin (share of pixels, error rate, share of errors, in %) and the mIoU the
    same predictions would have if every error at coverage >= t were fixed.
    """
    c = torch.from_numpy(np.asarray(conf).astype(np.float32) / 255.0)
    wrong = pred != labels
    n_wrong = max(int(wrong.sum()), 1)

    def row(name, m):
        n = int(m.sum())
        return {"coverage": name, "pixels_pct": 100 * n / m.numel(),
                "error_rate_pct": 100 * int(wrong[m].sum()) / n if n else None,
                "errors_pct": 100 * int((wrong & m).sum()) / n_wrong}

    rows = [row(f"{lo:.2f}-{hi:.2f}", (c >= lo - 1e-6) & (c < hi - 1e-6))
            for lo, hi in zip(EDGE_BINS[:-1], EDGE_BINS[1:])]
    rows.append(row("1 (inside)", c >= 1.0 - 1e-6))
    fixed = {f"{t:.2f}": 100 * metrics.dataset_miou(torch.where(c >= t - 1e-6, labels, pred), labels, NUM_CLASSES)
             for t in EDGE_FIX_FROM}
    return {"rows": rows, "miou_if_fixed_from": fixed}


def evaluate(ev: Evaluators, data: dict, data256: dict | None, seed: int = 1234, log=print) -> dict:
    """All report numbers for rendered held-out arrays (see :func:`train.render_arrays`)."""
    clean = augment.from_uint8(data["image"])
    labels = torch.from_numpy(data["label"].astype(np.int64))
    lm_t, at_t = torch.from_numpy(data["landmarks"]), torch.from_numpy(data["attributes"].astype(np.float32))
    rows, per_class, per_attr, embs, timing, edges = [], {}, {}, {}, {}, None
    for name in DISTORTIONS:
        x = _chunks(clean, name, seed)
        t0 = time.perf_counter()
        pred = ev.parse(x)
        t1 = time.perf_counter()
        face = ev.analyze(x)
        t2 = time.perf_counter()
        if name == "clean":
            timing = {"parser_ms_per_image": 1e3 * (t1 - t0) / x.shape[0],
                      "face_ms_per_image": 1e3 * (t2 - t1) / x.shape[0]}
            edges = edge_error_table(pred, labels, data["edge_conf"]) if "edge_conf" in data else None
        cm = metrics.confusion_matrix(pred, labels, NUM_CLASSES)
        acc, per = metrics.attribute_accuracy(face["attributes"], at_t)
        row = {"distortion": name, "res": 128, "n": int(x.shape[0]),
               "parser_miou": 100 * metrics.miou(cm),
               "parser_miou_per_image": 100 * float(metrics.per_image_miou(pred, labels, NUM_CLASSES).mean()),
               "landmark_nme_pct": 100 * metrics.normalized_mean_error(face["landmarks"], lm_t),
               "landmark_md_px": metrics.mean_distance(face["landmarks"], lm_t),
               "attribute_acc": 100 * acc}
        per_class[name] = {c: (None if np.isnan(v) else round(100 * float(v), 2))
                           for c, v in zip(CLASS_NAMES, metrics.iou_per_class(cm))}
        per_attr[name] = {a: round(100 * float(v), 2) for a, v in zip(ATTRIBUTE_NAMES, per)}
        embs[name] = face["embedding"]
        rows.append(row)
        log(f"128 {name}: mIoU {row['parser_miou']:.2f}  NME {row['landmark_nme_pct']:.2f} %  "
            f"MD {row['landmark_md_px']:.3f} px  attr {row['attribute_acc']:.2f} %")
    if data256 is not None:
        clean256 = augment.from_uint8(data256["image"])
        lab256 = torch.from_numpy(data256["label"].astype(np.int64))
        for name in DISTORTIONS:
            pred = ev.parse(_chunks(clean256, name, seed))
            row = {"distortion": name, "res": 256, "n": int(clean256.shape[0]),
                   "parser_miou": 100 * metrics.dataset_miou(pred, lab256, NUM_CLASSES),
                   "parser_miou_per_image": 100 * float(metrics.per_image_miou(pred, lab256, NUM_CLASSES).mean())}
            rows.append(row)
            log(f"256 {name}: mIoU {row['parser_miou']:.2f}")
    clean_rows = {r["distortion"]: r for r in rows if r["res"] == 128}
    for r in rows:
        base = next(b for b in rows if b["res"] == r["res"] and b["distortion"] == "clean")
        r["parser_miou_drop"] = base["parser_miou"] - r["parser_miou"]
    half = embs["clean"].shape[0] // 2
    dist = [{"a": "clean[:n/2]", "b": "clean[n/2:]", "fd_sf": metrics.frechet_distance(embs["clean"][:half], embs["clean"][half:]),
             "kid": metrics.kernel_inception_distance(embs["clean"][:half], embs["clean"][half:])[0]}]
    for name in DISTORTIONS[1:]:
        dist.append({"a": "clean", "b": name, "fd_sf": metrics.frechet_distance(embs["clean"], embs[name]),
                     "kid": metrics.kernel_inception_distance(embs["clean"], embs[name])[0]})
    c = clean_rows["clean"]
    bars = {"parser_miou": {"value": c["parser_miou"], "bar": f">= {BARS['parser_miou_min']}",
                            "pass": c["parser_miou"] >= BARS["parser_miou_min"]},
            "landmark_nme_pct": {"value": c["landmark_nme_pct"], "bar": f"<= {BARS['landmark_nme_max']}",
                                 "pass": c["landmark_nme_pct"] <= BARS["landmark_nme_max"]},
            "attribute_acc": {"value": c["attribute_acc"], "bar": f">= {BARS['attribute_acc_min']}",
                              "pass": c["attribute_acc"] >= BARS["attribute_acc_min"]}}
    for name in DISTORTIONS[1:]:
        d = clean_rows[name]["parser_miou_drop"]
        bars[f"parser_miou_drop_{name}"] = {"value": d, "bar": f"<= {BARS['parser_miou_max_drop']}",
                                           "pass": d <= BARS["parser_miou_max_drop"]}
    return {"rows": rows, "per_class_iou": per_class, "per_attribute_acc": per_attr,
            "parser_edge_errors": edges, "distribution_distances": dist, "timing": timing, "bars": bars,
            "all_pass": all(b["pass"] for b in bars.values())}


def _evaluator_info(ev: Evaluators) -> dict:
    info = {}
    for kind, path in asset_paths(ev.asset_dir).items():
        net = ev.net(kind)
        cfg = ev.configs[kind]
        tr = cfg.get("training", {})
        info[kind] = {"class": type(net).__name__, "arch": cfg.get("arch"),
                      "parameters": sum(p.numel() for p in net.parameters()),
                      "weights_bytes": path.stat().st_size, "weights_file": str(path.relative_to(REPO))
                      if path.is_relative_to(REPO) else str(path),
                      "training": {k: tr.get(k) for k in ("command", "seed", "data", "minutes_budget",
                                                          "minutes_used", "steps", "images_seen",
                                                          "final_validation")}}
    return info


def _f(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def render_markdown(rep: dict) -> str:
    r = rep["results"]
    lines = [f"# Evaluator report ({rep['created_utc']})", "",
             f"Commit `{rep['git']['commit']}`{' (dirty tree)' if rep['git']['dirty'] else ''}; "
             f"{rep['machine']['cpu_model']}, {rep['machine']['cpu_count']} CPUs, torch {rep['machine']['torch']}, "
             f"load average at start {', '.join(f'{v:.1f}' for v in rep['machine']['loadavg_start'])}.", "",
             f"Held-out SynthFace items {rep['config']['heldout_items_128']} at 128x128 and "
             f"{rep['config']['heldout_items_256']} at 256x256 (parser only). {rep['config']['definitions']}", "",
             "| distortion | res | n | parser mIoU % | drop | per-image mIoU % | landmark NME % IOD | MD px | attribute acc % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['distortion']} | {row['res']} | {row['n']} | {_f(row['parser_miou'])} | "
                     f"{_f(row['parser_miou_drop'])} | {_f(row['parser_miou_per_image'])} | "
                     f"{_f(row.get('landmark_nme_pct'))} | {_f(row.get('landmark_md_px'), '.3f')} | "
                     f"{_f(row.get('attribute_acc'))} |")
    lines += ["", "Distortion strengths: " + ", ".join(f"{k} = {v}" for k, v in augment.REPORT_STRENGTHS.items())
              + " (jitter: brightness, contrast and saturation factors 1 +- 0.1, sign random per image).", "",
              "## Bars", "", "| bar | value | required | pass |", "|---|---|---|---|"]
    for k, b in r["bars"].items():
        lines.append(f"| {k} | {b['value']:.2f} | {b['bar']} | {'yes' if b['pass'] else 'NO'} |")
    lines += ["", "## Per-class IoU % (128x128)", "", "| class | " + " | ".join(DISTORTIONS) + " |",
              "|---" * (len(DISTORTIONS) + 1) + "|"]
    for c in CLASS_NAMES:
        lines.append(f"| {c} | " + " | ".join(_f(r['per_class_iou'][d][c]) for d in DISTORTIONS) + " |")
    if r.get("parser_edge_errors"):
        e = r["parser_edge_errors"]
        lines += ["", "## Parser errors by edge coverage (128x128, clean)", "",
                  "Coverage: the renderer's anti-aliased coverage of a pixel's own class (its label "
                  "is coverage >= 0.5; 1 inside a region).", "",
                  "| coverage | pixels % | error rate % | share of errors % |", "|---|---|---|---|"]
        for row in e["rows"]:
            lines.append(f"| {row['coverage']} | {row['pixels_pct']:.2f} | {_f(row['error_rate_pct'])} | "
                         f"{row['errors_pct']:.1f} |")
        lines += ["", "mIoU % of the same predictions if every error at coverage >= t were fixed: "
                  + ", ".join(f"t = {t}: {v:.2f}" for t, v in e["miou_if_fixed_from"].items()) + "."]
    lines += ["", "## Per-attribute accuracy % (128x128)", "", "| attribute | " + " | ".join(DISTORTIONS) + " |",
              "|---" * (len(DISTORTIONS) + 1) + "|"]
    for a in ATTRIBUTE_NAMES:
        lines.append(f"| {a} | " + " | ".join(_f(r['per_attribute_acc'][d][a]) for d in DISTORTIONS) + " |")
    lines += ["", "## Embedding distances (scale reference)", "", "| a | b | FD-SF | KID |", "|---|---|---|---|"]
    for d in r["distribution_distances"]:
        lines.append(f"| {d['a']} | {d['b']} | {d['fd_sf']:.4g} | {d['kid']:.4g} |")
    lines += ["", "## Evaluators", "", "| net | parameters | weights | trained | steps | images | command |",
              "|---|---|---|---|---|---|---|"]
    for kind, e in rep["evaluators"].items():
        t = e["training"]
        lines.append(f"| {kind} ({e['class']}) | {e['parameters']:,} | {e['weights_bytes'] / 2**20:.2f} MiB | "
                     f"{t.get('minutes_used')} min | {t.get('steps')} | {t.get('images_seen')} | `{t.get('command')}` |")
    tm = r["timing"]
    lines += ["", f"Inference at 128x128, batch 64, fp32: parser {tm['parser_ms_per_image']:.1f} ms/image, "
              f"face net and region heads {tm['face_ms_per_image']:.1f} ms/image (load average at end "
              f"{', '.join(f'{v:.1f}' for v in rep['machine']['loadavg_end'])}).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from .train import render_arrays
    p = argparse.ArgumentParser(prog="python -m facegen_rt.eval.report", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="held-out images at 128x128")
    p.add_argument("--n256", type=int, default=200, help="held-out images at 256x256 (parser)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--asset-dir", type=Path, default=ASSET_DIR)
    p.add_argument("--workers", type=int, default=2, help="render processes")
    p.add_argument("--seed", type=int, default=1234, help="seed of the noise / jitter distortions")
    args = p.parse_args(argv)
    t0 = time.time()
    machine = _machine()
    data = render_arrays(args.n, 128, 0, "heldout", start=REPORT_HELDOUT_START, workers=args.workers, edges=True)
    data256 = render_arrays(args.n256, 256, 0, "heldout", start=REPORT_HELDOUT_START,
                            workers=args.workers) if args.n256 > 0 else None
    print(f"rendered in {time.time() - t0:.0f} s")
    ev = Evaluators(args.asset_dir)
    results = evaluate(ev, data, data256, seed=args.seed)
    machine["loadavg_end"] = list(os.getloadavg())
    rep = {"schema": SCHEMA, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "git": _git(), "machine": machine,
           "config": {"argv": argv, "dataset_seed": 0,
                      "heldout_items_128": [REPORT_HELDOUT_START, REPORT_HELDOUT_START + args.n - 1],
                      "heldout_items_256": [REPORT_HELDOUT_START, REPORT_HELDOUT_START + args.n256 - 1],
                      "distortions": augment.REPORT_STRENGTHS, "distortion_seed": args.seed, "bars": BARS,
                      "definitions": "mIoU: dataset-level confusion-matrix IoU averaged over the 19 classes. "
                                     "NME: landmark error / distance between the outer eye corners, averaged "
                                     "over the 39 landmarks and the images. MD: mean landmark error in pixels. "
                                     "Attribute accuracy: mean over the 32 attributes (threshold 0.5)."},
           "evaluators": _evaluator_info(ev), "results": results,
           "wall_s": round(time.time() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluators.json").write_text(json.dumps(rep, indent=2, default=float) + "\n")
    (args.out / "evaluators.md").write_text(render_markdown(rep))
    print(f"wrote {args.out / 'evaluators.json'} and .md; all bars pass: {results['all_pass']}")
    return 0 if results["all_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
