"""Quality of an SCA-DM model on held-out SynthFace masks, measured with the bundled
evaluators.

::

    python -m facegen_rt.eval.scadm_quality [--model DIR] [--n 500] [--steps 50]
                                            [--transfer-n 100] [--out benchmarks/results]

Held-out items ``QUALITY_HELDOUT_START..+n-1`` (disjoint from the evaluator report's and
the tests' items; the train split is never used). For each item the model generates a
face from the item's label map with the item's own image (and label map) as the style
reference: a reconstruction. Measured:

* mIoU: the bundled parser's labels of the generated image against the input mask
  (dataset-level confusion-matrix mIoU over 19 classes); the parser's mIoU on the real
  images of the same items is reported beside it as the yardstick's own ceiling;
* SSIM (Gaussian window) of the generated image against the reference image;
* FD-SF and KID of the generated set against the real images, on the face net's
  embedding.

Region transfer, on the first ``transfer_n`` items, for each region group of
:data:`TRANSFER_REGIONS`: item i's mask, item i's image as the main reference, and the
chosen region taken from item j = i + n (another held-out face). With c the mean
CIE Lab colour of a region inside the input mask, base the generation without the
transfer and ref the region's colour in reference j (under its own mask):

    moved    = (c_gen - c_base) . (c_ref - c_base) / |c_ref - c_base|^2   (chosen regions)
    leakage  = |c_gen - c_base| of every other region / |c_gen - c_base| of the chosen ones

The bar: moved >= 0.5 and leakage <= 0.1 (means over items). Same seed for both
generations, so the difference is the transfer alone.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from ..data.synthface import CLASS_NAMES, NUM_CLASSES
from . import metrics
from .evaluators import Evaluators
from .report import _git, _machine

SCHEMA = "facegen_rt.scadm_quality/1"
QUALITY_HELDOUT_START = 2_000_000
#: region groups moved in the transfer test (names understood by region_sources)
TRANSFER_REGIONS = ("hair", "skin", "cloth")
BARS = {"miou": 0.85, "ssim": 0.60, "moved": 0.5, "leakage": 0.1}
REPO = Path(__file__).resolve().parents[2]


def _float_images(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def _generate(pipe, labels, reference, reference_mask, steps: int, seed: int, batch: int,
              desc: str, **kw) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1]: one sample per label map, ``batch`` maps per call."""
    out = []
    for s in tqdm(range(0, len(labels), batch), desc=desc, unit="batch"):
        e = s + batch
        ref = reference if kw.get("region_sources") else reference[s:e]
        ref_mask = reference_mask if kw.get("region_sources") else reference_mask[s:e]
        res = pipe.generate(labels[s:e], reference=ref, reference_mask=ref_mask, steps=steps,
                            seed=seed + s, **kw)
        out.append(res.images.float().cpu())
    return torch.cat(out)


def reconstruction(pipe, ev: Evaluators, data: dict, steps: int, seed: int, batch: int) -> dict:
    """mIoU, SSIM, FD-SF and KID of reconstructions (each item styled by its own image)."""
    labels, images = data["label"], data["image"]
    gen = _generate(pipe, labels, images, labels, steps, seed, batch, "reconstruction",
                    pair_references=True)
    real = _float_images(images)
    target = torch.from_numpy(labels.astype(np.int64))
    cm = metrics.confusion_matrix(ev.parse(gen), target, NUM_CLASSES)
    cm_real = metrics.confusion_matrix(ev.parse(real), target, NUM_CLASSES)
    fe_gen, fe_real = ev.embed(gen).numpy(), ev.embed(real).numpy()
    out = {
        "miou": metrics.miou(cm), "parser_miou_on_real": metrics.miou(cm_real),
        "iou_per_class": dict(zip(CLASS_NAMES, metrics.iou_per_class(cm).tolist())),
        "ssim": float(metrics.ssim(gen, real).mean()),
        "fd_sf": metrics.frechet_distance(fe_gen, fe_real),
    }
    out["kid"], out["kid_std"] = metrics.kernel_inception_distance(
        fe_gen, fe_real, subset_size=min(len(gen), 1000))
    return out


def transfer_scores(c_base, c_gen, c_ref, n_in, n_ref, chosen) -> Optional[tuple[float, float]]:
    """(moved, leakage) of one transfer (see the module docstring), or None when no
    chosen region is present in both the input mask and the donor.

    c_base, c_gen, c_ref: float [C, 3] RGB region means in [0, 1] (NaN when empty);
    n_in, n_ref: int [C] pixel counts of each region in the input mask and in the
    donor's mask; chosen: class ids moved. Region means are compared in CIE Lab and
    weighted by their pixel count in the input mask.
    """
    lab_base, lab_gen, lab_ref = (metrics.srgb_to_lab(c.double()) for c in (c_base, c_gen, c_ref))
    ch = [c for c in chosen if n_in[c] > 0 and n_ref[c] > 0]
    ot = [c for c in range(len(n_in)) if c not in chosen and n_in[c] > 0]
    if not ch:
        return None
    w = n_in[ch].double()
    d_ref, d_gen = lab_ref[ch] - lab_base[ch], lab_gen[ch] - lab_base[ch]
    moved = float((w * (d_gen * d_ref).sum(-1)).sum() / (w * (d_ref * d_ref).sum(-1)).sum())
    shift_chosen = float((w * d_gen.norm(dim=-1)).sum() / w.sum())
    if not ot:
        return moved, 0.0
    w_o = n_in[ot].double()
    shift_other = float((w_o * (lab_gen[ot] - lab_base[ot]).norm(dim=-1)).sum() / w_o.sum())
    return moved, shift_other / max(shift_chosen, 1e-6)


def region_transfer(pipe, data: dict, donors: dict, steps: int, seed: int) -> dict:
    """Per region group: mean 'moved' fraction and 'leakage' ratio (see the module doc)."""
    from ..pipelines.semantic import region_ids
    labels, images = data["label"], data["image"]
    out = {}
    for region in TRANSFER_REGIONS:
        chosen = list(region_ids(region))
        moved, leak = [], []
        for i in tqdm(range(len(labels)), desc=f"transfer {region}", unit="face"):
            refs = np.stack([images[i], donors["image"][i]])
            ref_masks = np.stack([labels[i], donors["label"][i]])
            base = pipe.generate(labels[i], reference=refs[:1], reference_mask=ref_masks[:1],
                                 steps=steps, seed=seed + i).images.float()
            gen = pipe.generate(labels[i], reference=refs, reference_mask=ref_masks, steps=steps,
                                seed=seed + i, region_sources={region: 1}).images.float()
            lab = torch.from_numpy(labels[i:i + 1].astype(np.int64))
            c_base, n_in = metrics.region_mean_colors(base, lab, NUM_CLASSES)
            c_gen, _ = metrics.region_mean_colors(gen, lab, NUM_CLASSES)
            c_ref, n_ref = metrics.region_mean_colors(
                _float_images(donors["image"][i:i + 1]),
                torch.from_numpy(donors["label"][i:i + 1].astype(np.int64)), NUM_CLASSES)
            scores = transfer_scores(c_base[0], c_gen[0], c_ref[0], n_in[0], n_ref[0], chosen)
            if scores is not None:
                moved.append(scores[0])
                leak.append(scores[1])
        out[region] = {"items": len(moved), "moved": float(np.mean(moved)) if moved else None,
                       "leakage": float(np.mean(leak)) if leak else None}
    return out


def render_markdown(rep: dict) -> str:
    r, b = rep["results"], BARS
    lines = [f"# SCA-DM quality on held-out SynthFace ({rep['model']})", "",
             f"- time (UTC): {rep['created_utc']}; commit: {rep['git'].get('commit')}",
             f"- items: {rep['config']['n']} held-out masks from {QUALITY_HELDOUT_START}; "
             f"DDIM {rep['config']['steps']} steps, guidance {rep['config']['guidance']}, "
             f"seed {rep['config']['seed']}; wall {rep['wall_s']} s", "",
             "| measure | value | bar | held? |", "|---|---|---|---|"]
    rec = r["reconstruction"]
    lines.append(f"| mIoU, generated vs input mask | {100 * rec['miou']:.1f} % | >= "
                 f"{100 * b['miou']:.0f} % | {'yes' if rec['miou'] >= b['miou'] else 'no'} |")
    lines.append(f"| (parser on the real images) | {100 * rec['parser_miou_on_real']:.1f} % | | |")
    lines.append(f"| SSIM, reconstruction vs reference | {rec['ssim']:.3f} | >= {b['ssim']} | "
                 f"{'yes' if rec['ssim'] >= b['ssim'] else 'no'} |")
    lines.append(f"| FD-SF vs real | {rec['fd_sf']:.2f} | reported | |")
    lines.append(f"| KID vs real | {rec['kid']:.4f} +- {rec['kid_std']:.4f} | reported | |")
    for region, t in r.get("transfer", {}).items():
        ok = t["moved"] is not None and t["moved"] >= b["moved"] and t["leakage"] <= b["leakage"]
        lines.append(f"| transfer {region}: moved / leakage ({t['items']} faces) | "
                     f"{t['moved']:.2f} / {t['leakage']:.3f} | >= {b['moved']} / <= {b['leakage']} | "
                     f"{'yes' if ok else 'no'} |")
    lines += ["", "Per-class IoU (generated): " + ", ".join(
        f"{k} {100 * v:.0f}" for k, v in rec["iou_per_class"].items()), ""]
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    from ..eval.train import render_arrays
    from ..pipelines.semantic import SemanticPipeline
    p = argparse.ArgumentParser(prog="python -m facegen_rt.eval.scadm_quality",
                                description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    p.add_argument("--n", type=int, default=500, help="held-out masks")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--transfer-n", type=int, default=100, help="faces per transfer region group")
    p.add_argument("--batch", type=int, default=8, help="masks per generate call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    t0 = time.time()
    pipe = SemanticPipeline.from_pretrained(args.model)
    if args.guidance is not None:
        pipe.default_guidance = args.guidance
    ev = Evaluators()
    data = render_arrays(args.n, pipe.image_size, 0, "heldout", start=QUALITY_HELDOUT_START)
    k = min(args.transfer_n, args.n)
    donors = render_arrays(k, pipe.image_size, 0, "heldout", start=QUALITY_HELDOUT_START + args.n)
    results = {"reconstruction": reconstruction(pipe, ev, data, args.steps, args.seed, args.batch)}
    if k > 0:
        first = {key: v[:k] for key, v in data.items()}
        results["transfer"] = region_transfer(pipe, first, donors, args.steps, args.seed)
    rep = {"schema": SCHEMA, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "git": _git(), "machine": _machine(), "model": str(args.model or "bundled"),
           "config": {"n": args.n, "steps": args.steps, "guidance": pipe.default_guidance,
                      "seed": args.seed, "transfer_n": k, "bars": BARS,
                      "heldout_items": [QUALITY_HELDOUT_START, QUALITY_HELDOUT_START + args.n + k - 1]},
           "results": results, "wall_s": round(time.time() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scadm_quality.json").write_text(json.dumps(rep, indent=2) + "\n")
    (args.out / "scadm_quality.md").write_text(render_markdown(rep))
    print(render_markdown(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
