"""Evaluation: bundled SynthFace evaluators and the metrics every pipeline reports.

* :mod:`.metrics`: mIoU, SSIM, per-region colour distance, FD-SF, KID, landmark MD /
  NME, attribute accuracy (numpy / torch, float64 statistics).
* :mod:`.evaluators`: the bundled nets behind ``parse``, ``landmarks``, ``attributes``
  and ``embed`` (weights in ``facegen_rt/assets/evaluators``).
* :mod:`.nets`: their architectures; :mod:`.augment`: distortions; :mod:`.train`: the
  training CLI; :mod:`.report`: the acceptance report
  (``benchmarks/results/evaluators.{json,md}``).

Rule: the evaluators are measuring instruments. They must never appear in a training
loss (or any gradient signal, reward or sample selection during training) of a
generator or editor: a model optimised against its own judge learns the judge's blind
spots, and every number the judge reports afterwards is inflated. They were trained on
the SynthFace train split only and are evaluated on held-out items only.

The heavy parts (nets, Pillow) load on first use, so ``import facegen_rt.eval`` is cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {"parse": "evaluators", "landmarks": "evaluators", "attributes": "evaluators", "embed": "evaluators",
         "load_evaluators": "evaluators", "Evaluators": "evaluators", "assets_present": "evaluators"}

__all__ = ["metrics", "Evaluators", "assets_present", "attributes", "embed", "landmarks", "load_evaluators",
           "parse"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("metrics", "nets", "augment", "evaluators", "train", "report"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
