"""retain_freed_memory: freed blocks stay mapped, so a loop that reallocates them stops
paying page faults."""

import json
import platform
import subprocess
import sys

import pytest

from facegen_rt.runtime.allocator import retain_freed_memory

# A step-like loop in a fresh process: three 8 MiB blocks allocated, written and freed
# again, 12 times; prints the minor page faults of each round.
_LOOP = """
import json, resource, torch
from facegen_rt.runtime.allocator import retain_freed_memory
setting = retain_freed_memory()
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(8 << 20, dtype=torch.uint8).fill_(1) for _ in range(3)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": setting.applied, "faults": faults}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_reallocation_stops_faulting():
    out = subprocess.run([sys.executable, "-c", _LOOP], capture_output=True, text=True,
                         check=True, timeout=120)
    result = json.loads(out.stdout)
    assert result["applied"]
    # The first rounds grow the heap (6,144 faults of 4 KiB for 24 MiB); once it holds
    # the three blocks, they are reused without touching the kernel.
    assert max(result["faults"][-3:]) < 100, result["faults"]


@pytest.mark.parametrize("kw", [dict(mmap_threshold=0), dict(trim_threshold=-1),
                                dict(mmap_threshold=1 << 40)])
def test_bad_thresholds_raise(kw):
    with pytest.raises(ValueError, match="threshold"):
        retain_freed_memory(**kw)
