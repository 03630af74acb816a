"""Backend tables and the one selection policy every op follows.

Each op owns an :class:`OpBackends` table listing its backends in priority order.
A backend declares two things:

* ``unavailable()``: why it cannot run on this machine at all (``None`` if it can),
  e.g. the compiled module failed to import or no GPU driver is present;
* ``refusals(*inputs)``: why it cannot run *these* inputs (wrong device, dtype, ...).

Policy (the same for every op):

* A backend requested by name (``backend="cpu"`` or the ``FACEGEN_BACKEND`` /
  ``FACEGEN_BACKEND_<OP>`` environment variables) runs or raises
  :class:`BackendUnavailable` with its reasons. It never falls back.
* Automatic choice walks the priority list and takes the first backend that can run.
  Every backend computes the same math (the reference is the oracle of every test),
  so the choice changes speed, never results. A skipped backend is reported once per
  reason through :mod:`warnings`, so the user knows which path ran.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch

from ._env import EnvVar

BACKEND_ENV = "FACEGEN_BACKEND"
BACKEND_NAMES = ("reference", "cpu", "triton")
_BACKEND_VAR = EnvVar(BACKEND_ENV)


class BackendUnavailable(RuntimeError):
    """A backend asked for by name cannot run the given inputs."""


def _always_available() -> Optional[str]:
    return None


def _no_refusals(*args, **kwargs) -> list[str]:
    return []


@dataclass(frozen=True)
class Backend:
    """One implementation of an op.

    Attributes:
        name: "reference", "cpu" or "triton".
        run: the implementation; takes the op's arguments (without ``backend``).
        unavailable: returns why the backend can't run on this machine, or None.
        refusals: returns the reasons it can't run these particular inputs.
        devices: device types it accepts in automatic selection.
    """

    name: str
    run: Callable[..., torch.Tensor]
    unavailable: Callable[[], Optional[str]] = _always_available
    refusals: Callable[..., list[str]] = _no_refusals
    devices: tuple[str, ...] = ("cpu",)


@dataclass
class OpBackends:
    """The backend table of one op, in priority order."""

    op_name: str
    backends: Sequence[Backend]
    _warned: set = field(default_factory=set)

    def __post_init__(self):
        self._op_var = EnvVar(f"{BACKEND_ENV}_{self.op_name.upper()}")

    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def get(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise ValueError(
            f"backend={name!r} is not a backend of {self.op_name}; choose one of {self.names()}"
        )

    def reasons(self, backend: Backend, device_type: str, *args) -> list[str]:
        """Every reason ``backend`` can't run these inputs (empty list: it can)."""
        why = backend.unavailable()
        if why is not None:
            return [why]
        return list(backend.refusals(*args))

    def requested(self, explicit: Optional[str]) -> Optional[str]:
        """The backend forced by argument or environment, or None for automatic."""
        if explicit:
            return explicit
        return self._op_var.get() or _BACKEND_VAR.get() or None

    def select(self, explicit: Optional[str], device_type: str, *args) -> Backend:
        """Pick the backend for these inputs following the module's policy."""
        name = self.requested(explicit)
        if name is not None:
            backend = self.get(name)
            why = self.reasons(backend, device_type, *args)
            if why:
                raise BackendUnavailable(
                    f"{self.op_name}: backend {name!r} was requested but cannot run: "
                    + "; ".join(why)
                )
            return backend
        refused = []
        for backend in self.backends:
            if device_type not in backend.devices:
                continue
            why = self.reasons(backend, device_type, *args)
            if not why:
                for skipped, reason in refused:
                    self._warn_once(skipped, reason, backend.name)
                return backend
            refused.append((backend.name, "; ".join(why)))
        listing = "; ".join(f"{n}: {r}" for n, r in refused) or "no backend handles this device"
        raise BackendUnavailable(f"{self.op_name}: no backend can run these inputs ({listing})")

    def _warn_once(self, skipped: str, reason: str, chosen: str) -> None:
        key = (skipped, reason)
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(
            f"facegen_rt.{self.op_name}: using the {chosen!r} backend because {skipped!r} "
            f"can't run: {reason}",
            stacklevel=4,
        )


def dtype_refusals(name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> list[str]:
    """A refusal when ``t``'s dtype is not one of ``allowed``."""
    if t.dtype in allowed:
        return []
    names = ", ".join(str(d).replace("torch.", "") for d in allowed)
    return [f"{name} has dtype {str(t.dtype).replace('torch.', '')}; supported: {names}"]


@contextlib.contextmanager
def forced_backend(backend: Optional[str]) -> Iterator[None]:
    """Route every op to ``backend`` for the duration (through ``FACEGEN_BACKEND``);
    None or "auto" leaves the choice automatic."""
    if backend in (None, "auto"):
        yield
        return
    saved = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = backend
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = saved
