"""Records a drag session keeps: step results, frozen references, undo snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .points import DragPoint


@dataclass
class StepResult:
    """What one step did.

    step: the session's step counter after this step (1 for the first).
    loss, loss_motion, loss_mask: the step's loss terms (loss = motion + lambda * mask;
        loss_mask is None without an active mask).
    handles: {point id: (x, y)} after tracking; distances: {id: |target - handle|}.
    done: every handle within the stop distance (no optimization took place then).
    optimized: whether the latent was updated.
    image: [3, R, R] float image in [-1, 1] when this step rendered one, else None.
    """

    step: int
    loss: float
    loss_motion: float
    loss_mask: Optional[float]
    handles: dict[int, tuple[int, int]]
    distances: dict[int, float]
    done: bool
    optimized: bool
    image: Optional[torch.Tensor] = None


@dataclass
class _References:
    """Frozen at capture: the feature [1, C, hf, wf] (un-resized; resized lazily for the
    mask term) and f_i [C] per point id. Tensors are never modified in place, so
    snapshots share them."""

    feat0: torch.Tensor
    refs: dict[int, torch.Tensor]
    feat0_resized: Optional[torch.Tensor] = None


@dataclass
class _Snapshot:
    w: torch.Tensor
    optim_state: dict
    points: dict[int, DragPoint]
    next_id: int
    refs: Optional[_References]
    mask: Optional[torch.Tensor]
    steps: int
    label: str = field(default="")
