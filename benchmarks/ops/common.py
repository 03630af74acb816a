"""Helpers shared by the op suites."""

from __future__ import annotations

import importlib
from typing import Callable

from ..harness import Unavailable


def cpu_kernel_entry(op: str) -> Callable:
    """The op layer's own call into facegen_rt._C (``facegen_rt.ops.<op>._cpu``).

    Timing it next to the public op separates the kernel from the dispatch around it
    (argument checks, torch.library custom op, backend selection), which costs tens of
    microseconds per call in Python: as much as the whole kernel at small shapes.
    Raises Unavailable with the op layer's reason when facegen_rt._C is not built.
    """
    from facegen_rt.ops._native import cpu_unavailable

    why = cpu_unavailable()
    if why is not None:
        raise Unavailable(why.removeprefix("unavailable: "))
    return importlib.import_module(f"facegen_rt.ops.{op}")._cpu


KERNEL_NOTE = ("facegen_rt._C.{op} called as the op layer calls it, without the public "
               "function's checks and custom-op dispatch (kernel time only)")
