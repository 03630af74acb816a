"""Multi-step consistency sampling (latent consistency models) and the consistency
parametrisation shared with the distillation recipe (:mod:`facegen_rt.distill`).

Teacher grid: a student is distilled on the teacher's DDIM timesteps,
``schedule.timesteps(grid_steps, spacing)`` (default 50 "uniform" points: 1, 21, ...,
981 for T = 1000), written ascending here as tau_0 < tau_1 < ... < tau_{N-1}.

Consistency function (LCM's boundary conditions): with the model's noise prediction
eps at (x, t), x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t) and

    f(x, t) = c_skip(t) x + c_out(t) x0_hat
    c_skip(t) = sigma_data^2 / ((s t)^2 + sigma_data^2)
    c_out(t)  = s t / sqrt((s t)^2 + sigma_data^2)

(sigma_data = 0.5, timestep scaling s = 10), so f(x, 0) = x exactly (the boundary)
and f is essentially x0_hat at every grid point (c_out(1) = 0.9988).

Sampling schedule for S steps (S in :data:`SUPPORTED_STEPS`): the grid is cut into S
equal chunks from its top, the model is evaluated at grid indices
``N - 1 - floor(j N / S)`` for j = 0 .. S-1. With N = 50: S = 1 -> [981];
S = 2 -> [981, 481]; S = 4 -> [981, 741, 481, 241]; S = 8 -> [981, 861, 741, 621,
481, 361, 241, 121]. Each step maps x to f(x, tau) and, except after the last one,
re-noises it to the next timestep with fresh noise from the generator:
x' = sqrt(abar') f + sqrt(1 - abar') z. The first step starts at the top of the grid,
as the teacher's DDIM does; ending at a low timestep is unnecessary because every
step already returns a full clean estimate (a final evaluation near t = 1 would only
touch up an almost clean latent).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .base import ModelFn, StepCallback, initial_noise, randn, timestep_batch
from .schedule import NoiseSchedule

SUPPORTED_STEPS = (1, 2, 4, 8)
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def teacher_grid(schedule: NoiseSchedule, grid_steps: int = 50,
                 spacing: str = "uniform") -> torch.Tensor:
    """Ascending int64 [N] teacher timesteps tau_0 < ... < tau_{N-1} (see module doc)."""
    return schedule.timesteps(grid_steps, spacing).flip(0).contiguous()


def boundary_coefficients(t: torch.Tensor, sigma_data: float = SIGMA_DATA,
                          timestep_scaling: float = TIMESTEP_SCALING):
    """(c_skip, c_out) float64 tensors shaped like ``t`` (timesteps, int or float)."""
    st = torch.as_tensor(t).to(torch.float64) * timestep_scaling
    sd2 = sigma_data ** 2
    return sd2 / (st ** 2 + sd2), st / (st ** 2 + sd2).sqrt()


def consistency_output(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, abar: torch.Tensor,
                       sigma_data: float = SIGMA_DATA,
                       timestep_scaling: float = TIMESTEP_SCALING) -> torch.Tensor:
    """f(x, t) for per-sample timesteps.

    Args:
        x, eps: [B, ...] noisy input and the model's noise prediction.
        t: [B] timesteps; abar: [B] abar at t (float64 or float32).
    Returns:
        [B, ...] in the promoted precision of x, eps and float32 (differentiable in eps).
    """
    work = torch.promote_types(torch.promote_types(x.dtype, eps.dtype), torch.float32)
    view = (-1,) + (1,) * (x.dim() - 1)
    c_skip, c_out = boundary_coefficients(torch.as_tensor(t).cpu(), sigma_data, timestep_scaling)
    a = torch.as_tensor(abar).detach().cpu().to(torch.float64)

    def col(v: torch.Tensor) -> torch.Tensor:  # float64 [B] -> [B, 1, ...] on x's device
        return v.to(device=x.device, dtype=work).view(view)

    x0 = (x.to(work) - col((1.0 - a).sqrt()) * eps.to(work)) / col(a.sqrt())
    return col(c_skip) * x.to(work) + col(c_out) * x0


class ConsistencySampler:
    """LCM multi-step sampler (see the module docstring for the schedule).

    Args:
        grid_steps: N, the teacher DDIM grid the student was distilled on.
        spacing: that grid's spacing (:meth:`NoiseSchedule.timesteps`).
        sigma_data, timestep_scaling: the boundary-condition constants of the student.

    Works with any eps ``model_fn``: a distilled student (guidance-embedded students
    get the scale through the model, others through :func:`guided`), and also a
    plain diffusion model (then it is a few-step x0-prediction sampler).
    """

    name = "lcm"

    def __init__(self, grid_steps: int = 50, spacing: str = "uniform",
                 sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING):
        if isinstance(grid_steps, bool) or not isinstance(grid_steps, int) or grid_steps < 1:
            raise ValueError(f"grid_steps must be a positive int, got {grid_steps!r}")
        if not sigma_data > 0 or not timestep_scaling > 0:
            raise ValueError("sigma_data and timestep_scaling must be > 0")
        self.grid_steps, self.spacing = grid_steps, spacing
        self.sigma_data, self.timestep_scaling = float(sigma_data), float(timestep_scaling)

    def options(self) -> dict:
        """Constructor arguments (what a student bundle records)."""
        return {"grid_steps": self.grid_steps, "spacing": self.spacing,
                "sigma_data": self.sigma_data, "timestep_scaling": self.timestep_scaling}

    def timesteps(self, steps: int, schedule: NoiseSchedule) -> list[int]:
        """Descending evaluation timesteps for ``steps`` steps; ValueError for other counts."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
                or steps not in SUPPORTED_STEPS:
            raise ValueError(f"the consistency sampler runs {list(SUPPORTED_STEPS)} steps, "
                             f"got steps={steps!r}")
        grid = teacher_grid(schedule, self.grid_steps, self.spacing).tolist()
        n = len(grid)
        if steps > n:
            raise ValueError(f"steps={steps} exceeds the {n}-point teacher grid")
        return [grid[n - 1 - (j * n) // int(steps)] for j in range(int(steps))]

    def num_model_calls(self, steps: int, schedule: NoiseSchedule) -> int:
        return len(self.timesteps(steps, schedule))

    @torch.no_grad()
    def sample(self, model_fn: ModelFn, shape: Sequence[int], *, generator: torch.Generator,
               steps: int, schedule: NoiseSchedule, x_T: Optional[torch.Tensor] = None,
               dtype: torch.dtype = torch.float32, device="cpu",
               callback: Optional[StepCallback] = None) -> torch.Tensor:
        ts = self.timesteps(steps, schedule)  # validate before drawing noise
        x = initial_noise(shape, generator, x_T, dtype, device)
        work = torch.promote_types(dtype, torch.float32)
        B = x.shape[0]
        xw = x.to(work)
        for i, t in enumerate(ts):
            tb = timestep_batch(t, B, x.device)
            eps = model_fn(x, tb)
            abar = schedule.abar(t).expand(B)
            f = consistency_output(xw, eps.to(work), tb, abar, self.sigma_data,
                                   self.timestep_scaling).to(work)
            if i + 1 < len(ts):  # re-noise the clean estimate to the next timestep
                a_next = float(schedule.abar(ts[i + 1]))
                z = randn(x.shape, generator, work, x.device)
                xw = a_next ** 0.5 * f + (1.0 - a_next) ** 0.5 * z
            else:
                xw = f
            x = xw.to(dtype)
            if callback is not None:
                callback(i, t, x, f)
        return x
