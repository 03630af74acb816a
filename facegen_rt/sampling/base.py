"""The sampler interface shared by DDIM, DPM-Solver++ and later distilled samplers.

A sampler turns noise into a sample by calling a denoiser ``model_fn(x, t) -> eps``:

* ``x``: [B, C, h, w] latent in the model's dtype and device;
* ``t``: [B] int64 discrete timesteps (0 .. T-1) on x's device;
* returns the predicted noise eps, same shape as x.

Classifier-free guidance is not the sampler's business: wrap the model with
:func:`facegen_rt.sampling.guidance.guided` first. Randomness comes only from the
``generator`` (a CPU ``torch.Generator``): the initial noise and any per-step noise are
drawn on the CPU in float32 and then moved to the model's device and dtype, so a seed
gives the same draws on every backend and device.

A distilled (consistency) sampler fits the same protocol: it walks its own few
timesteps and calls ``model_fn`` once per step (it may convert eps to x0 with
:func:`predict_x0`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch

from .schedule import NoiseSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: callback(step_index, t, x_after_step, x0_prediction)
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@runtime_checkable
class Sampler(Protocol):
    """What the pipeline needs from a sampler."""

    name: str

    def sample(self, model_fn: ModelFn, shape: Sequence[int], *, generator: torch.Generator,
               steps: int, schedule: NoiseSchedule, x_T: Optional[torch.Tensor] = None,
               dtype: torch.dtype = torch.float32, device="cpu",
               callback: Optional[StepCallback] = None) -> torch.Tensor:
        """Run ``steps`` steps from x_T (drawn from ``generator`` when None) and return the
        final latent [*shape] in ``dtype`` on ``device``."""
        ...

    def num_model_calls(self, steps: int, schedule: NoiseSchedule) -> int:
        """How many times :meth:`sample` calls ``model_fn`` for ``steps``."""
        ...


def randn(shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype,
          device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in float32 (device-independent), then moved."""
    if generator is None or generator.device.type != "cpu":
        raise ValueError("samplers need a CPU torch.Generator (seed it with manual_seed), "
                         "so that a seed gives the same noise on every device")
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device=device,
                                                                                  dtype=dtype)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x0 = (x - sqrt(1 - abar) eps) / sqrt(abar), computed in float32 or better."""
    a = float(abar)
    return (x - (1.0 - a) ** 0.5 * eps) / a ** 0.5


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"sample shape must be [B, C, ...] with positive sizes, got {shape}")
    return shape


def initial_noise(shape, generator, x_T, dtype, device) -> torch.Tensor:
    shape = check_shape(shape)
    if x_T is None:
        return randn(shape, generator, dtype, device)
    if tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
    return x_T.to(device=device, dtype=dtype)


def timestep_batch(t: int, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), int(t), dtype=torch.long, device=device)


@dataclass
class StepTimer:
    """A callback that records the wall-clock latency of every sampler step (seconds).

    Synchronizes CUDA before reading the clock so GPU steps are timed, not queued.
    """

    times: list = field(default_factory=list)
    _last: Optional[float] = None
    inner: Optional[StepCallback] = None

    def start(self) -> None:
        _sync()
        self._last = time.perf_counter()

    def __call__(self, i: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        _sync(x)
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now
        if self.inner is not None:
            self.inner(i, t, x, x0)


def _sync(x: Optional[torch.Tensor] = None) -> None:
    if x is not None and x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    elif x is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
