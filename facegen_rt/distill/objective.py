"""The latent consistency distillation objective (LCM), model-agnostic.

One training step for a batch of clean latents x0 [B, C, h, w] and per-sample
guidance scales w [B]:

1. draw a grid index n (start tau_n on the teacher's DDIM grid, tau_n > 0) and its
   target index n - k (skipping-step k, in grid points); below the grid's bottom the
   target is the boundary t = 0, whose abar is abar[0] (where the engine's DDIM
   sampler ends);
2. noise: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps, eps ~ N(0, I);
3. teacher ODE step with classifier-free guidance (no grad): eps_w = eps_u + w (eps_c -
   eps_u), one DDIM (eta = 0) step from tau_n to the target: x_t;
4. consistency outputs: student f(x_s, tau_n, w) and EMA target f^-(x_t, t_target, w)
   with the boundary parametrisation of :mod:`facegen_rt.sampling.consistency`;
5. loss: pseudo-Huber mean(sqrt((f - f^-)^2 + c^2) - c).

The model enters only through closures: ``teacher(x, t) -> (eps_cond, eps_uncond or
None)`` and ``student(x, t, w) -> eps``, so any UNet family plugs in through an
adapter (see :mod:`facegen_rt.distill.scadm`). All random draws come from one CPU
``torch.Generator``, which makes a step reproducible and resumable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from facegen_rt.sampling.consistency import consistency_output

TeacherFn = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, Optional[torch.Tensor]]"]
StudentFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def pseudo_huber(diff: torch.Tensor, c: float) -> torch.Tensor:
    """mean(sqrt(d^2 + c^2) - c): quadratic for |d| << c, linear (robust) beyond."""
    return (diff.float().pow(2) + c * c).sqrt().sub(c).mean()


def ddim_teacher_step(x: torch.Tensor, eps: torch.Tensor, abar_s: torch.Tensor,
                      abar_t: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step per sample: x [B, ...] at abar_s [B] -> abar_t [B]."""
    view = (-1,) + (1,) * (x.dim() - 1)
    a_s = abar_s.to(x.device, torch.float64)
    a_t = abar_t.to(x.device, torch.float64)

    def col(v):
        return v.to(x.dtype).view(view)

    x0 = (x - col((1 - a_s).sqrt()) * eps) / col(a_s.sqrt())
    return col(a_t.sqrt()) * x0 + col((1 - a_t).sqrt()) * eps


@dataclass
class StepDraw:
    """The random choices of one step (all on the CPU)."""

    t_start: torch.Tensor   # [B] int64 grid timesteps
    t_target: torch.Tensor  # [B] int64 (0 at the boundary)
    noise: torch.Tensor     # [B, ...] float32


def draw(grid: torch.Tensor, skip: int, shape, generator: torch.Generator) -> StepDraw:
    """Start/target timesteps and noise for a batch of ``shape`` [B, ...]."""
    lo = int((grid <= 0).sum())  # a grid point at t = 0 is the boundary itself, never a start
    n = torch.randint(lo, len(grid), (shape[0],), generator=generator)
    m = n - skip
    t_target = torch.where(m >= 0, grid[m.clamp(min=0)], torch.zeros_like(n))
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return StepDraw(grid[n], t_target, noise)


def consistency_distillation_loss(x0: torch.Tensor, guidance: torch.Tensor, *,
                                  teacher: TeacherFn, student: StudentFn, target: StudentFn,
                                  abar: torch.Tensor, grid: torch.Tensor, skip: int,
                                  generator: torch.Generator, huber_c: float = 0.001,
                                  sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """The LCM loss of one batch (see the module docstring).

    Args:
        x0: [B, C, h, w] float32 clean latents (diffusion scale).
        guidance: [B] float32 guidance scales w (1: the plain conditional teacher).
        teacher, student, target: the model closures (eps predictions).
        abar: [T] float64 cumulative alphas; grid: ascending int64 teacher timesteps.
        skip: k, the skipping step in grid points.
    Returns:
        (loss scalar with grad through the student, dict of float diagnostics).
    """
    d = draw(grid, skip, x0.shape, generator)
    dev = x0.device
    a_s, a_t = abar[d.t_start], abar[d.t_target]
    view = (-1,) + (1,) * (x0.dim() - 1)
    noise = d.noise.to(dev)
    x_s = (a_s.sqrt().float().view(view).to(dev) * x0
           + (1 - a_s).sqrt().float().view(view).to(dev) * noise)
    t_s, t_t = d.t_start.to(dev), d.t_target.to(dev)
    w = guidance.to(dev, torch.float32)
    with torch.no_grad():
        eps_c, eps_u = teacher(x_s, t_s)
        eps_c = eps_c.float()
        eps_w = eps_c if eps_u is None else eps_u.float() + w.view(view) * (eps_c - eps_u.float())
        x_t = ddim_teacher_step(x_s, eps_w, a_s, a_t)
        f_target = consistency_output(x_t, target(x_t, t_t, w), d.t_target, a_t,
                                      sigma_data, timestep_scaling)
    f_student = consistency_output(x_s, student(x_s, t_s, w), d.t_start, a_s,
                                   sigma_data, timestep_scaling)
    loss = pseudo_huber(f_student - f_target, huber_c)
    return loss, {"t_mean": float(d.t_start.float().mean())}


class TargetNetwork:
    """EMA copy of a student (LCM's target network), updated on its trainable parameters.

    ``decay`` is constant (LCM uses 0.95): the target must trail the student closely, it
    is a bootstrap target, not a weight average for shipping. Frozen parameters (LoRA
    bases) are shared values and are not touched.
    """

    def __init__(self, student: nn.Module, decay: float = 0.95):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(student).eval().requires_grad_(False)
        self.decay = float(decay)
        self.names = [n for n, p in student.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        own = dict(self.module.named_parameters())
        src = dict(student.named_parameters())
        for n in self.names:
            own[n].lerp_(src[n].detach(), 1.0 - self.decay)
