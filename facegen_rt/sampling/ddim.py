"""DDIM (Song et al.), as LDM's DDIMSampler runs it for SCA-DM.

One step from grid time t to the target abar' (see :mod:`.schedule`), with a = abar[t]:

    x0    = (x - sqrt(1 - a) eps) / sqrt(a)
    sigma = eta * sqrt((1 - a') / (1 - a) * (1 - a / a'))
    x'    = sqrt(a') x0 + sqrt(1 - a' - sigma^2) eps + sigma z,   z ~ N(0, I)

eta = 0 is deterministic (the probability-flow ODE's first-order solver); eta = 1 is
DDPM-like. The update is computed in float32 (or float64 for float64 latents) and the running
latent is kept at that precision between steps (the model sees it cast to its dtype),
so a bfloat16 model does not accumulate bf16 rounding over the steps.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .base import ModelFn, StepCallback, initial_noise, randn, timestep_batch
from .schedule import NoiseSchedule


def ddim_step(x: torch.Tensor, eps: torch.Tensor, abar_t: float, abar_next: float,
              eta: float = 0.0, noise: Optional[torch.Tensor] = None):
    """One DDIM update; returns (x_next, x0_prediction), both in x's working precision.

    ``noise`` (same shape as x) is required when the step's sigma is nonzero.
    """
    a, a_next = float(abar_t), float(abar_next)
    x0 = (x - (1.0 - a) ** 0.5 * eps) / a ** 0.5
    sigma = 0.0
    if eta:
        sigma = eta * ((1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next)) ** 0.5
    direction = max(1.0 - a_next - sigma ** 2, 0.0) ** 0.5
    out = a_next ** 0.5 * x0 + direction * eps
    if sigma:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs a noise tensor")
        out = out + sigma * noise
    return out, x0


class DDIMSampler:
    """DDIM with LDM's "uniform" timestep grid by default.

    Args:
        eta: stochasticity (0: deterministic).
        spacing: timestep grid, see :meth:`NoiseSchedule.timesteps`.
    """

    name = "ddim"

    def __init__(self, eta: float = 0.0, spacing: str = "uniform"):
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
        self.eta, self.spacing = float(eta), spacing

    def num_model_calls(self, steps: int, schedule: NoiseSchedule) -> int:
        return len(schedule.step_pairs(steps, self.spacing))

    @torch.no_grad()
    def sample(self, model_fn: ModelFn, shape: Sequence[int], *, generator: torch.Generator,
               steps: int, schedule: NoiseSchedule, x_T: Optional[torch.Tensor] = None,
               dtype: torch.dtype = torch.float32, device="cpu",
               callback: Optional[StepCallback] = None) -> torch.Tensor:
        x = initial_noise(shape, generator, x_T, dtype, device)
        work = torch.promote_types(dtype, torch.float32)  # update arithmetic precision
        B = x.shape[0]
        xw = x.to(work)  # the running latent stays in working precision between steps
        for i, (t, t_next) in enumerate(schedule.step_pairs(steps, self.spacing)):
            eps = model_fn(x, timestep_batch(t, B, x.device))
            noise = None
            if self.eta:
                noise = randn(x.shape, generator, work, x.device)
            xw, x0 = ddim_step(xw, eps.to(work), schedule.abar(t),
                               schedule.abar_target(t, t_next), self.eta, noise)
            x = xw.to(dtype)
            if callback is not None:
                callback(i, t, x, x0)
        return x
