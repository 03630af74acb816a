"""Keep freed memory in the process instead of handing it back to the kernel every step.

A drag step allocates and frees the same few MB-sized activations over and over.
glibc's defaults return them to the kernel: blocks above the mmap threshold are
unmapped on free, and the top of the heap is trimmed once more than the trim threshold
lies free there. The next step then touches fresh pages, one page fault
per 4 KiB. Measured on the bundled 256^2 drag step (2 threads): ~6,000-7,600 faults a
step, 40-42 ms; with the thresholds below, ~50-80 faults and 34-35 ms.

The price is resident memory: up to `trim_threshold` of freed heap stays mapped. The
setting is process-wide, so the library never applies it on import; the `facegen-rt`
command and the benchmark harness call :func:`retain_freed_memory` at start, and an
embedding application may call it itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, replace
from typing import Optional

MiB = 1 << 20
# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@dataclass(frozen=True)
class AllocatorSetting:
    """What :func:`retain_freed_memory` did: applied, or the reason it could not."""

    applied: bool
    mmap_threshold: int
    trim_threshold: int
    reason: Optional[str] = None


def retain_freed_memory(mmap_threshold: int = 32 * MiB,
                        trim_threshold: int = 256 * MiB) -> AllocatorSetting:
    """Raise glibc's mmap and trim thresholds (process-wide; results are unchanged).

    Args:
        mmap_threshold: blocks at least this large are mmapped (and unmapped on free).
        trim_threshold: free memory at the heap top beyond this goes back to the kernel.
    Returns:
        An :class:`AllocatorSetting`; `applied` is False (with a reason) where the C
        library is not glibc or refuses the values: only speed depends on this, so
        that is not an error.
    Raises:
        ValueError: a threshold outside [1, 2**31).
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 < value < 2**31:  # mallopt takes a C int
            raise ValueError(f"retain_freed_memory: {name} must be in [1, 2**31), got {value}")
    setting = AllocatorSetting(False, mmap_threshold, trim_threshold)
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return replace(setting, reason=f"no mallopt in the C library ({name or 'not found'})")
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on an unsupported parameter or value.
    if mallopt(_M_MMAP_THRESHOLD, mmap_threshold) != 1:
        return replace(setting, reason=f"mallopt refused mmap threshold {mmap_threshold}")
    if mallopt(_M_TRIM_THRESHOLD, trim_threshold) != 1:
        return replace(setting, reason=f"mallopt refused trim threshold {trim_threshold}")
    return replace(setting, applied=True)
