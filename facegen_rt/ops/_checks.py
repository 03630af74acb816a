"""Input validation shared by the ops. Every message names the argument at fault.

Shape, dtype and device checks run in the public functions, on real and fake tensors
alike (so torch.compile traces them). The NaN check reads the data, so it runs
inside the op implementation, and only while it is switched on: it costs a pass over
every input.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch

from ._env import EnvVar

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
_nan_checks: Optional[bool] = None
_NAN_VAR = EnvVar("FACEGEN_CHECK_NAN")


def nan_checks_enabled() -> bool:
    """True when inputs are scanned for NaN/inf (``FACEGEN_CHECK_NAN=1`` or set_nan_checks)."""
    if _nan_checks is not None:
        return _nan_checks
    return _NAN_VAR.get() == "1"


def set_nan_checks(enabled: Optional[bool]) -> None:
    """Switch NaN/inf input checks on or off; None defers to FACEGEN_CHECK_NAN."""
    global _nan_checks
    _nan_checks = enabled


@contextlib.contextmanager
def nan_checks(enabled: bool = True) -> Iterator[None]:
    """Context manager form of :func:`set_nan_checks`."""
    global _nan_checks
    saved = _nan_checks
    _nan_checks = enabled
    try:
        yield
    finally:
        _nan_checks = saved


def check_finite(op: str, **tensors: torch.Tensor) -> None:
    """Raise ValueError naming the first non-finite input, when NaN checks are on."""
    if not nan_checks_enabled():
        return
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{op}: {name} contains NaN or inf")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_tensor(op: str, name: str, t, ndim: int,
                 dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    """Type, rank and dtype of one input."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        allowed = ", ".join(_dtype_name(d) for d in dtypes)
        raise TypeError(f"{op}: {name} has dtype {_dtype_name(t.dtype)}; expected one of {allowed}")


def check_shape(op: str, name: str, t: torch.Tensor, expected: Sequence[int], meaning: str) -> None:
    if t.shape != tuple(expected):
        raise ValueError(
            f"{op}: {name} must have shape {tuple(expected)} ({meaning}), got {tuple(t.shape)}"
        )


def check_like(op: str, ref_name: str, ref: torch.Tensor, **others: torch.Tensor) -> None:
    """Every tensor in ``others`` shares ``ref``'s dtype and device."""
    device, dtype = ref.device, ref.dtype  # each access builds a new Python object
    for name, t in others.items():
        if t.device != device:
            raise TypeError(f"{op}: {name} is on {t.device} but {ref_name} is on {device}")
        if t.dtype != dtype:
            raise TypeError(
                f"{op}: {name} has dtype {_dtype_name(t.dtype)} but {ref_name} has "
                f"{_dtype_name(dtype)}"
            )
