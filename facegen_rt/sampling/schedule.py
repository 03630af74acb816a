"""The discrete diffusion schedule and the timestep grids the samplers walk.

Notation (float64 throughout, cast at the last moment): ``abar[t]`` is the cumulative
product of (1 - beta) for t = 0 .. T-1; ``alpha_t = sqrt(abar[t])``,
``sigma_t = sqrt(1 - abar[t])``, ``lambda_t = log(alpha_t / sigma_t)`` (half log-SNR).
A noisy latent is ``x_t = alpha_t x_0 + sigma_t eps``.

Timestep spacing (:meth:`NoiseSchedule.timesteps`):

* ``"uniform"`` (default, as LDM's DDIM sampler, which SCA-DM uses): c = T // steps,
  t = range(0, T, c) + 1, i.e. 1, 1 + c, 1 + 2c, ... walked in reverse. As in LDM the
  grid holds ceil(T / c) points, which is more than ``steps`` when T % steps is large
  (T = 1000, steps = 300 gives 334); the last point is clipped to T - 1.
* ``"quad"`` (LDM's alternative): t = (linspace(0, sqrt(0.8 T), steps) ** 2) + 1, as ints.
* ``"linspace"``: round(linspace(T - 1, 0, steps)) (the "leading/trailing"-free form).

Each grid point t_i is where the model is evaluated; the step from t_i goes to the
next smaller grid point. The final step goes to ``abar[0]`` when the last grid point is
t >= 1 (LDM's ``alphas_cumprod_prev[0]`` convention for DDIM: the "uniform" and "quad"
grids end at t = 1), and to the clean sample (abar = 1, sigma = 0) when the grid ends at
t = 0 ("linspace"), so no step has zero length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPACINGS = ("uniform", "quad", "linspace")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete schedule from its betas.

    Attributes:
        betas: [T] float64.
        alphas_cumprod: [T] float64 cumulative products of (1 - beta).
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "NoiseSchedule":
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("NoiseSchedule: betas must be a 1-D tensor of >= 2 values in (0, 1)")
        return cls(betas=betas, alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def from_config(cls, cfg) -> "NoiseSchedule":
        """From a :class:`facegen_rt.models.sca_dm.ScheduleConfig` (or an object with
        ``betas()``): SCA-DM's 1000 betas with sqrt(beta) linear in t, 0.0015 -> 0.0195."""
        return cls.from_betas(cfg.betas())

    @classmethod
    def scadm(cls) -> "NoiseSchedule":
        """SCA-DM's schedule (LDM "linear": sqrt(beta) linear from 0.0015 to 0.0195, T = 1000)."""
        from facegen_rt.models.sca_dm import ScheduleConfig

        return cls.from_config(ScheduleConfig())

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.numel())

    def abar(self, t) -> torch.Tensor:
        """abar at integer timesteps ``t`` (int, list or tensor); float64."""
        return self.alphas_cumprod[torch.as_tensor(t, dtype=torch.long)]

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) float64."""
        a = self.abar(t)
        return a.sqrt(), (1.0 - a).sqrt()

    def lambda_(self, t) -> torch.Tensor:
        """Half log-SNR log(alpha_t / sigma_t), float64."""
        a = self.abar(t)
        return 0.5 * (torch.log(a) - torch.log1p(-a))

    def timesteps(self, steps: int, spacing: str = "uniform") -> torch.Tensor:
        """Descending int64 grid of model-evaluation timesteps (see the module docstring)."""
        T = self.num_timesteps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if steps > T:
            raise ValueError(f"steps={steps} exceeds the schedule's {T} timesteps")
        if spacing == "uniform":
            c = T // steps
            ts = np.arange(0, T, c) + 1
        elif spacing == "quad":
            ts = (np.linspace(0, np.sqrt(T * 0.8), steps) ** 2).astype(np.int64) + 1
        elif spacing == "linspace":
            ts = np.round(np.linspace(0, T - 1, steps)).astype(np.int64)
        else:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        ts = np.unique(np.clip(ts, 0, T - 1))
        return torch.from_numpy(ts[::-1].copy()).long()

    def step_pairs(self, steps: int, spacing: str = "uniform") -> list[tuple[int, int]]:
        """[(t, t_next)] for each sampling step; t_next = -1 marks the final step (see
        :meth:`abar_target`)."""
        ts = self.timesteps(steps, spacing).tolist()
        return [(t, ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)]

    def abar_target(self, t: int, t_next: int) -> torch.Tensor:
        """float64 abar that the step from ``t`` reaches: abar[t_next]; for the final step
        (t_next = -1) abar[0], or 1.0 (clean) when the step starts at t = 0."""
        if t_next >= 0:
            return self.alphas_cumprod[int(t_next)]
        if t == 0:
            return torch.ones((), dtype=torch.float64)
        return self.alphas_cumprod[0]
