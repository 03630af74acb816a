"""Renderer throughput: images/s of facegen_rt.data.synthface at 128^2 on one thread.

Two rows, through the package's public API:
    render   ``render(factors, res)`` -> (image, label), factors drawn beforehand with
             ``factors_from_z(sample_z(seed, index))`` (outside the timed region);
    sample   ``sample(seed, index, res)``: the whole sample (image, label map,
             landmarks, attributes, caption, part crops).
Each timed call uses a new index, so no cache can answer it. Both wall-clock and
process-CPU rates are reported: on a shared machine the CPU rate reflects the code.
When the renderer is missing, the suite returns one "skipped: ..." row.

One thread: torch.set_num_threads(1) for the duration. Libraries with their own
thread pools (numpy's BLAS) follow OMP_NUM_THREADS, which must be set before start;
benchmarks/synthface_throughput.py is the standalone script that does so.
"""

from __future__ import annotations

import importlib
import itertools
import statistics
import time
from typing import Any, Callable

import torch

from .harness import Record, RunContext, register_suite, time_callable

MODULE = "facegen_rt.data.synthface"
SIZE = 128
SEED = 0
API = ("render", "sample", "factors_from_z", "sample_z")


def _load():
    """The synthface package, or the reason it can't be benchmarked."""
    try:
        mod = importlib.import_module(MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and MODULE.startswith(exc.name):
            return None, f"{MODULE} is not available yet"
        raise  # the package exists but one of its own imports is broken: an error
    missing = [name for name in API if not callable(getattr(mod, name, None))]
    if missing:
        return None, f"{MODULE} lacks {', '.join(missing)}"
    return mod, ""


def _time_row(ctx: RunContext, case: str, provider: str, fn: Callable[[int], Any]) -> Record:
    rec = Record(suite="synthface", op="synthface", case=case, dtype="uint8", provider=provider,
                 params={"size": SIZE, "threads": 1, "seed": SEED})
    index = itertools.count()
    cpu_s: list[float] = []

    def call():
        c0 = time.process_time()
        out = fn(next(index))
        cpu_s.append(time.process_time() - c0)
        return out

    try:
        timing = time_callable(call, ctx.timing)
    except Exception as exc:  # noqa: BLE001 - a broken renderer is a row, not a crash
        rec.status = f"error: {type(exc).__name__}: {exc}"[:300]
        ctx.log(f"  synthface {case}: {rec.status}")
        return rec
    rec.median_ms, rec.p10_ms, rec.p90_ms, rec.reps = (
        timing.median_ms, timing.p10_ms, timing.p90_ms, timing.reps)
    cpu_median = statistics.median(cpu_s[-timing.reps:])
    rec.extra = {"images_per_s": 1e3 / timing.median_ms,
                 "cpu_images_per_s": 1.0 / cpu_median if cpu_median > 0 else None}
    ctx.log(f"  synthface {case:<12} {rec.extra['images_per_s']:7.1f} images/s wall, "
            f"{rec.extra['cpu_images_per_s'] or 0:7.1f} per CPU-second")
    return rec


@register_suite("synthface")
def synthface_suite(ctx: RunContext) -> list[Record]:
    """Synthetic face renderer throughput (images/s at 128^2, one thread)."""
    sf, why = _load()
    if sf is None:
        rec = Record(suite="synthface", op="synthface", case=f"render {SIZE}^2", dtype="uint8",
                     provider=MODULE, status=f"skipped: {why}", params={"size": SIZE})
        ctx.log(f"  synthface: {rec.status}")
        return [rec]
    calls = ctx.timing.warmup + max(ctx.timing.max_reps, ctx.timing.min_reps)
    factors = [sf.factors_from_z(sf.sample_z(SEED, i)) for i in range(calls)]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [
            _time_row(ctx, f"render {SIZE}^2", f"{MODULE}.render",
                      lambda i: sf.render(factors[i % len(factors)], SIZE)),
            _time_row(ctx, f"sample {SIZE}^2", f"{MODULE}.sample",
                      lambda i: sf.sample(SEED, i, SIZE)),
        ]
    finally:
        torch.set_num_threads(saved)
