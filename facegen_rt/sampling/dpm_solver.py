"""DPM-Solver++(2M): the multistep second-order solver of the probability-flow ODE in
data-prediction form (Lu et al., 2022), on the discrete schedule.

With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t)
and the data prediction D_i = (x_i - sigma_i eps_i) / alpha_i at grid time t_i, a step
from s = t_i to t = t_{i+1} with h = lambda_t - lambda_s is

    first order (first step, and the last one when lower_order_final):
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D_i
    second order (multistep, r = h_prev / h with h_prev = lambda_s - lambda_{t_{i-1}}):
        D   = (1 + 1 / (2 r)) D_i - (1 / (2 r)) D_{i-1}
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D

Targets follow :mod:`.schedule`: the last step goes to abar[0] (uniform grid) or to
the clean sample (sigma = 0, exp(-h) = 0: x = D) when the grid ends at t = 0.
Arithmetic runs in float32 (float64 for float64 latents).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from .base import ModelFn, StepCallback, initial_noise, timestep_batch
from .schedule import NoiseSchedule


def _coeffs(abar: float) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) of an abar; lambda = +inf for abar = 1."""
    alpha, sigma = abar ** 0.5, max(1.0 - abar, 0.0) ** 0.5
    lam = math.inf if sigma == 0.0 else math.log(alpha) - math.log(sigma)
    return alpha, sigma, lam


def dpmpp_2m_step(x: torch.Tensor, d_now: torch.Tensor, d_prev: Optional[torch.Tensor],
                  abar_s: float, abar_t: float, h_prev: Optional[float]) -> tuple[torch.Tensor, float]:
    """One DPM-Solver++(2M) update from abar_s to abar_t; returns (x_t, h).

    ``d_prev``/``h_prev`` None (or a non-finite h) gives the first-order update.
    """
    a_s, s_s, l_s = _coeffs(float(abar_s))
    a_t, s_t, l_t = _coeffs(float(abar_t))
    h = l_t - l_s
    em1 = -1.0 if math.isinf(h) else math.expm1(-h)  # exp(-h) - 1, exact for small h
    ratio = 0.0 if s_t == 0.0 else s_t / s_s
    if d_prev is None or h_prev is None or not math.isfinite(h) or h == 0.0:
        d = d_now
    else:
        r = h_prev / h
        d = (1.0 + 0.5 / r) * d_now - (0.5 / r) * d_prev
    return ratio * x - a_t * em1 * d, h


class DPMSolverPP2M:
    """DPM-Solver++(2M).

    Args:
        spacing: timestep grid, see :meth:`NoiseSchedule.timesteps`.
        lower_order_final: take a first-order last step when fewer than 15 steps are
            run (stabilises very short runs, as common implementations do).
    """

    name = "dpmpp2m"

    def __init__(self, spacing: str = "uniform", lower_order_final: bool = True):
        self.spacing, self.lower_order_final = spacing, bool(lower_order_final)

    def num_model_calls(self, steps: int, schedule: NoiseSchedule) -> int:
        return len(schedule.step_pairs(steps, self.spacing))

    @torch.no_grad()
    def sample(self, model_fn: ModelFn, shape: Sequence[int], *, generator: torch.Generator,
               steps: int, schedule: NoiseSchedule, x_T: Optional[torch.Tensor] = None,
               dtype: torch.dtype = torch.float32, device="cpu",
               callback: Optional[StepCallback] = None) -> torch.Tensor:
        x = initial_noise(shape, generator, x_T, dtype, device)
        work = torch.promote_types(dtype, torch.float32)
        B = x.shape[0]
        pairs = schedule.step_pairs(steps, self.spacing)
        d_prev, h_prev = None, None
        xw = x.to(work)
        for i, (t, t_next) in enumerate(pairs):
            eps = model_fn(x, timestep_batch(t, B, x.device)).to(work)
            abar_s = float(schedule.abar(t))
            alpha_s, sigma_s = abar_s ** 0.5, (1.0 - abar_s) ** 0.5
            d_now = (xw - sigma_s * eps) / alpha_s
            last = i == len(pairs) - 1
            first_order = d_prev is None or (last and self.lower_order_final and len(pairs) < 15)
            xw, h = dpmpp_2m_step(xw, d_now, None if first_order else d_prev,
                                  abar_s, float(schedule.abar_target(t, t_next)), h_prev)
            d_prev, h_prev = d_now, h
            x = xw.to(dtype)
            if callback is not None:
                callback(i, t, x, d_now)
        return x
