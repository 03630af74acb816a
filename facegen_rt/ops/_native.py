"""Loading the compiled backends: facegen_rt._C (C++ CPU) and the Triton kernels.

Each loader returns the module or the exact reason it is missing, computed once.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Callable, Optional

import torch


@functools.lru_cache(maxsize=None)
def _load_c() -> tuple[Optional[ModuleType], Optional[str]]:
    try:
        from facegen_rt import _C  # type: ignore[attr-defined]
    except ImportError as exc:  # not built, or built against another torch
        return None, f"unavailable: the compiled module facegen_rt._C did not import ({exc})"
    return _C, None


def compiled() -> ModuleType:
    """The compiled C++ module; raises ImportError with the reason when missing."""
    module, why = _load_c()
    if module is None:
        raise ImportError(why)
    return module


@functools.lru_cache(maxsize=None)
def cpu_entry(name: str) -> Optional[Callable]:
    """facegen_rt._C.<name>, or None when the module is missing or predates ``name``."""
    return getattr(_load_c()[0], name, None)


def cpu_unavailable() -> Optional[str]:
    return _load_c()[1]


def cpu_kernel_unavailable(name: str) -> Optional[str]:
    """cpu_unavailable(), or the reason for a build of facegen_rt._C from older sources
    that lacks the kernel ``name``."""
    why = cpu_unavailable()
    if why is None and not hasattr(compiled(), name):
        return (f"unavailable: facegen_rt._C has no {name} kernel (built from older sources; "
                "reinstall facegen_rt)")
    return why


def triton_interpreted() -> bool:
    """True when TRITON_INTERPRET=1: Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_driver_reason() -> Optional[str]:
    try:
        import triton
    except ImportError as exc:
        return f"unavailable: triton is not installed ({exc})"
    try:
        triton.runtime.driver.active  # raises "0 active drivers" without a GPU
    except RuntimeError:
        return (
            "unavailable: no GPU driver (the tests run these kernels on CPU tensors "
            "under TRITON_INTERPRET=1)"
        )
    return None


def triton_unavailable() -> Optional[str]:
    if triton_interpreted():
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return f"unavailable: triton is not installed ({exc})"
        return None
    return _triton_driver_reason()


def triton_device_refusals(*tensors: torch.Tensor) -> list[str]:
    """Triton launches on CUDA tensors; the interpreter runs them on CPU tensors."""
    want = "cpu" if triton_interpreted() else "cuda"
    bad = sorted({t.device.type for t in tensors if t.device.type != want})
    if not bad:
        return []
    if want == "cuda":
        return [f"inputs are on {bad[0]}; triton kernels need CUDA tensors "
                "(or TRITON_INTERPRET=1 with CPU tensors)"]
    return [f"inputs are on {bad[0]}; under TRITON_INTERPRET=1 triton kernels take CPU tensors"]
