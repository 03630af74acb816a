"""This machine's ceilings, measured at the start of every run (the machine is shared
and noisy, so results are reported as fractions of ceilings from the same run).

Formulas:
    GEMM peak   = FLOPs / t_median         per dtype, the faster of two library paths:
                                           torch.mm of two n x n matrices (2 n^3), and a
                                           3x3 convolution, c -> c channels on s x s
                                           (2 c^2 9 s^2), c = 7n / 32, s = n / 64
    copy BW     = 2 * nbytes / t_median    dst.copy_(src), nbytes per buffer: bytes
                                           read plus bytes written, per second
A "same-size" copy splits an op's total buffer footprint T between src and dst
(T / 2 each), so the copy moves exactly T bytes, like the op, through the same level
of the cache hierarchy. It is measured lazily, once per T, during the run.

Why two GEMM paths: torch.mm runs the BLAS PyTorch links (MKL on x86), convolutions run
oneDNN, and the two can differ by tens of percent on one CPU. On a 2-core AMD EPYC
(Zen 4) oneDNN's fp32 3x3 convolutions ran 15-30 % faster than MKL's 2048^3 product, so
a torch.mm ceiling put convolution-bound models above 100 % of "peak". Both rates are
recorded, and the faster is the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .harness import TimingConfig, _dtype_name, time_callable

GEMM_DTYPES = (torch.float32, torch.bfloat16)
_ALIGN = 64  # bytes; keeps both copy buffers a whole number of cache lines


@dataclass(frozen=True)
class CeilingConfig:
    """Sizes and timing of the ceiling measurements.

    gemm_n: matrix size of the GEMM peak (it also sizes the convolution probe).
    copy_bytes: bytes per buffer of the large-buffer copy (src and dst each), large
    enough to leave the private caches.
    """

    gemm_n: int = 2048
    copy_bytes: int = 256 * 2**20
    timing: TimingConfig = TimingConfig(warmup=2, min_reps=7, min_time_s=0.5, max_reps=200,
                                        slow_call_s=10.0)


QUICK_CEILINGS = CeilingConfig(gemm_n=512, copy_bytes=16 * 2**20,
                               timing=TimingConfig(warmup=1, min_reps=3, min_time_s=0.0,
                                                   max_reps=3, slow_call_s=10.0))


def _gemm_probes(dtype: torch.dtype, n: int) -> dict[str, tuple[Callable[[], torch.Tensor], float]]:
    """{path name: (a call of ``dtype``, its FLOPs)}: torch.mm of n x n matrices and a
    3x3 convolution of about a fifth of its FLOPs (c = 7n / 32 channels on n / 64 squared
    positions, the UNet's 448 channels at 32^2 for n = 2048)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    c, s = max(8, 7 * n // 32), max(4, n // 64)
    x = torch.randn(1, c, s, s).to(dtype)
    w = torch.randn(c, c, 3, 3).mul_(1 / 3 / c ** 0.5).to(dtype)
    return {f"torch.mm {n}^2": (lambda: torch.mm(a, b), 2.0 * n ** 3),
            f"conv2d 3x3 {c}ch {s}^2": (lambda: F.conv2d(x, w, padding=1), 2.0 * c * c * 9 * s * s)}


def measure_gemm(dtype: torch.dtype, n: int, timing: TimingConfig) -> dict:
    """Median GFLOP/s of the faster GEMM path of ``dtype`` (``path``; see the module
    docstring); ``paths`` holds every path's median GFLOP/s."""
    timed = {name: (flops, time_callable(call, timing))
             for name, (call, flops) in _gemm_probes(dtype, n).items()}
    paths = {name: flops / t.median_ms / 1e6 for name, (flops, t) in timed.items()}
    name = max(paths, key=paths.get)
    flops, t = timed[name]
    return {"n": n, "gflops": paths[name], "path": name, "paths": paths,
            # the 10th percentile time is the 90th percentile rate
            "p10_gflops": flops / t.p90_ms / 1e6, "p90_gflops": flops / t.p10_ms / 1e6,
            "reps": t.reps}


def measure_copy(bytes_per_buffer: int, timing: TimingConfig) -> dict:
    """Median (bytes read + bytes written) per second of dst.copy_(src)."""
    n = max(bytes_per_buffer // _ALIGN * _ALIGN // 4, _ALIGN // 4)
    src = torch.rand(n)
    dst = torch.zeros(n)  # zeros, not empty: page faults belong to no one's bandwidth
    t = time_callable(lambda: dst.copy_(src), timing)
    moved = 2.0 * n * 4
    return {"bytes_per_buffer": n * 4, "gbps": moved / t.median_ms / 1e6,
            "p10_gbps": moved / t.p90_ms / 1e6, "p90_gbps": moved / t.p10_ms / 1e6,
            "reps": t.reps}


@dataclass
class Ceilings:
    """Ceilings of one run; same-size copies are added as suites ask for them."""

    config: CeilingConfig
    threads: int
    gemm: dict[str, dict]
    copy: dict
    same_size: dict[int, dict] = field(default_factory=dict)

    @classmethod
    def measure(cls, config: CeilingConfig = CeilingConfig(),
                log: Callable[[str], None] = print,
                dtypes: Sequence[torch.dtype] = GEMM_DTYPES) -> "Ceilings":
        """Every ceiling; the GEMM peak for float32 and for the other run ``dtypes``
        (a CPU without bf16 instructions needs a minute per bf16 2048^3 product)."""
        gemm = {}
        for dtype in GEMM_DTYPES:
            if dtype != torch.float32 and dtype not in dtypes:
                continue
            gemm[_dtype_name(dtype)] = measure_gemm(dtype, config.gemm_n, config.timing)
            name = _dtype_name(dtype)
            paths = ", ".join(f"{k}: {v:.1f}" for k, v in gemm[name]["paths"].items())
            log(f"  ceiling GEMM {name:<9} {gemm[name]['gflops']:8.1f} GFLOP/s ({paths})")
        copy = measure_copy(config.copy_bytes, config.timing)
        mib = copy["bytes_per_buffer"] / 2**20
        log(f"  ceiling copy 2 x {mib:.0f} MiB {copy['gbps']:8.1f} GB/s")
        return cls(config=config, threads=torch.get_num_threads(), gemm=gemm, copy=copy)

    def gemm_peak_gflops(self, dtype: torch.dtype) -> Optional[float]:
        entry = self.gemm.get(_dtype_name(dtype))
        return None if entry is None else entry["gflops"]

    def copy_gbps(self) -> float:
        return self.copy["gbps"]

    def same_size_copy_gbps(self, total_bytes: float) -> float:
        """Copy bandwidth on src + dst buffers of ``total_bytes`` together."""
        key = int(total_bytes)
        if key not in self.same_size:
            entry = measure_copy(key // 2, self.config.timing)
            entry["total_bytes"] = key
            self.same_size[key] = entry
        return self.same_size[key]["gbps"]

    def to_json(self) -> dict:
        return {
            "torch_num_threads": self.threads,
            "gemm": self.gemm,
            "copy": self.copy,
            "copy_same_size": [self.same_size[k] for k in sorted(self.same_size)],
        }


__all__ = ["CeilingConfig", "Ceilings", "QUICK_CEILINGS", "measure_copy", "measure_gemm"]
