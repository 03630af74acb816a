"""Trainers of the bundled SCA-DM model and their shared pieces.

Modules: ``data_cache`` (rendered SynthFace train data), ``vq`` (the VQ-f4 first
stage), ``scadm`` (UNet + style encoder). This file holds what they share: logging,
the wall-clock budget, EMA, batch conversion, and differentiable stand-ins for the
fused inference ops.

The fused ops (:mod:`facegen_rt.ops`) are inference kernels without a backward, so
training swaps in plain-PyTorch formulations with the same forward math:

* SPADE: :func:`facegen_rt.ops.spade_norm_reference` (GroupNorm * (1 + gamma) + beta, SiLU);
* masked cross-attention with a one-hot (or all-zero) mask row per pixel: the softmax
  over the masked logits is one-hot, so the output is ``v[region]`` (a gather), and a
  zero row gives the mean of V. Written as ``einsum(w, v)`` with w = mask, or 1/R for a
  zero row. (The seed's quirk of a surviving logit that is exactly 0.0 has probability
  zero with float weights and is ignored here.)
"""

from __future__ import annotations

import contextlib
import copy
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facegen_rt.ops import spade_norm_reference

NUM_CLASSES = 19


class Logger:
    """Prints and appends to a log file (flushed at every line, so a tail shows progress)."""

    def __init__(self, path: Optional["str | Path"]):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def header(self, argv: list[str], seed: int) -> None:
        self(f"command: python -m {' '.join(shlex.quote(a) for a in argv)}")
        env = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "PYTHONPATH")
               if k in os.environ}
        self(f"seed: {seed}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
             f"python {sys.version.split()[0]}; env {env}")


class Budget:
    """Wall-clock budget: ``left()`` seconds remain, ``done()`` once spent."""

    def __init__(self, minutes: float):
        self.start = time.time()
        self.seconds = 60.0 * minutes

    def elapsed(self) -> float:
        return time.time() - self.start

    def fraction(self) -> float:
        return min(1.0, self.elapsed() / max(self.seconds, 1e-9))

    def done(self) -> bool:
        return self.elapsed() >= self.seconds


class EMA:
    """Exponential moving average of a module's parameters and buffers.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) so that a short run's average
    is not dominated by the random initialization.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), module.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.module.buffers(), module.buffers()):
            e.copy_(b)


def lr_at(step: int, base: float, warmup: int, frac: float, final: float = 0.1) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``final * base`` as the
    wall-clock fraction ``frac`` goes to 1 (the run length is known in time, not steps)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (final + (1 - final) * 0.5 * (1 + np.cos(np.pi * frac)))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def labels_to_onehot(labels: np.ndarray) -> torch.Tensor:
    """uint8/int [B, H, W] -> float32 one-hot [B, 19, H, W]."""
    lab = torch.from_numpy(np.array(labels, copy=True)).long()
    return F.one_hot(lab, NUM_CLASSES).permute(0, 3, 1, 2).float()


def _spade_train(x, gamma, beta, groups=32, eps=1e-5, act=None, backend=None):
    return spade_norm_reference(x, gamma, beta, groups, eps, act or "")


def _masked_cross_attention_train(q, k, v, mask, scale=None, backend=None):
    """[B, h, L, d] queries (unused: the softmax is one-hot), k/v [B, h, R, d], mask [B, L, R]."""
    R = v.shape[2]
    w = mask.to(v.dtype)
    w = w + (w.sum(-1, keepdim=True) == 0).to(v.dtype) / R
    return torch.einsum("blr,bhrd->bhld", w, v)


@contextlib.contextmanager
def differentiable_ops(autocast: bool = False) -> Iterator[None]:
    """Swap the UNet's fused op calls for differentiable ones while training.

    Under bf16 autocast the per-run conditioning cache holds bf16 K/V and SPADE maps for
    fp32 weights, which its consistency check rejects; the check is skipped then (every
    training forward builds a fresh conditioning, so nothing stale can be reused).
    """
    from facegen_rt.models.sca_dm import attention, blocks

    saved = (blocks.spade_norm, attention.masked_cross_attention, blocks._check_cached)
    blocks.spade_norm = _spade_train
    attention.masked_cross_attention = _masked_cross_attention_train
    if autocast:
        blocks._check_cached = lambda *a, **k: None
    try:
        yield
    finally:
        blocks.spade_norm, attention.masked_cross_attention, blocks._check_cached = saved


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
