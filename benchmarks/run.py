"""Run benchmark suites and write their results.

    python -m benchmarks.run [--suite ops] [--quick] [--dtypes fp32,bf16]
                             [--out benchmarks/results] [--compile | --no-compile]
                             [--providers seed_eager,facegen_cpu] [--cases L1024,224x64]
                             [--cold-compile] [--threads N]
                             [--warmup W] [--min-reps N] [--min-time S] [--max-reps N]
                             [--seed S] [--list]

Every run first measures the machine's ceilings (GEMM peak per dtype, copy bandwidth),
then runs each suite and writes <out>/<suite>-<UTC stamp>.{json,md} plus the latest
copies <out>/<suite>.{json,md}. Exit status 1 when a provider raised an error
("unavailable" and "skipped" rows are not errors).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from facegen_rt.runtime.allocator import retain_freed_memory

from . import drag as _drag  # noqa: F401 - registers the drag iteration suite
from . import export_unet as _export_unet  # noqa: F401 - registers the export suite
from . import generate_latency as _generate_latency  # noqa: F401 - registers the generate suite
from . import ops as _ops  # noqa: F401 - registers the op suites
from . import scadm_unet as _scadm_unet  # noqa: F401 - registers the SCA-DM UNet step suite
from . import synthface as _synthface  # noqa: F401 - registers the renderer suite
from .ceilings import QUICK_CEILINGS, CeilingConfig, Ceilings
from .harness import (QUICK_TIMING, SUITES, RunContext, TimingConfig, build_report,
                      busy_warning, op_formulas, utc_now, write_results)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp64": torch.float64, "float64": torch.float64}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="ops",
                   help="comma-separated suite names, or 'all' (see --list); default: ops")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, 1-2 reps, fp32, no torch.compile: a smoke test")
    p.add_argument("--dtypes", default=None,
                   help="comma-separated: fp32, bf16, fp64 (default fp32,bf16; --quick: fp32)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results; with --quick "
                        "benchmarks/results/quick, which git ignores, so a smoke run never "
                        "replaces the committed tables)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="run the torch.compile providers (default: on, off with --quick)")
    p.add_argument("--cold-compile", action="store_true",
                   help="turn off inductor's on-disk caches, so compile times are cold "
                        "(default: warm caches, as a user's second run sees them)")
    p.add_argument("--providers", default=None,
                   help="comma-separated provider names to run (default: each op's defaults; "
                        "facegen_reference is opt-in)")
    p.add_argument("--cases", default=None,
                   help="comma-separated substrings; keep op cases whose label contains one "
                        "(e.g. 'L1024 d40,224x64')")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) first")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--min-reps", type=int, default=None)
    p.add_argument("--min-time", type=float, default=None, help="seconds per timed provider")
    p.add_argument("--max-reps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    return p.parse_args(argv)


def resolve_suites(spec: str) -> list[str]:
    names = _csv(spec)
    if names == ["all"]:
        return [s.name for s in SUITES.values() if s.in_all]
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise SystemExit(f"unknown suite(s) {unknown or spec!r}; known: {', '.join(SUITES)}, all")
    return names


def resolve_dtypes(spec: Optional[str], quick: bool) -> tuple[torch.dtype, ...]:
    names = _csv(spec) if spec else (["fp32"] if quick else ["fp32", "bf16"])
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise SystemExit(f"unknown dtype(s) {bad}; choose from {', '.join(DTYPES)}")
    return tuple(dict.fromkeys(DTYPES[n] for n in names))


def timing_from(args: argparse.Namespace) -> TimingConfig:
    base = QUICK_TIMING if args.quick else TimingConfig()
    overrides = {k: v for k, v in (("warmup", args.warmup), ("min_reps", args.min_reps),
                                   ("min_time_s", args.min_time), ("max_reps", args.max_reps))
                 if v is not None}
    cfg = dataclasses.replace(base, **overrides)
    if cfg.max_reps < cfg.min_reps:
        cfg = dataclasses.replace(cfg, max_reps=cfg.min_reps)
    return cfg


def _compile_caches(cold: bool) -> Optional[bool]:
    """Inductor's on-disk caches: when on, a graph compiled before (this run or an
    earlier one) compiles warm, in a fraction of the cold time. Returns their state."""
    try:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config
    except ImportError:
        return None
    if cold:
        inductor_config.fx_graph_cache = False
        functorch_config.enable_autograd_cache = False
    return bool(getattr(inductor_config, "fx_graph_cache", False))


def results_dir(args: argparse.Namespace) -> Path:
    """--out, else benchmarks/results, or benchmarks/results/quick for a --quick run."""
    return args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SUITES.values():
            print(f"{s.name:<24} {'' if s.in_all else '(not in all) '}{s.doc}")
        return 0
    suites = resolve_suites(args.suite)
    dtypes = resolve_dtypes(args.dtypes, args.quick)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Every provider runs under the same allocator setting, the one `facegen-rt` uses.
    allocator = retain_freed_memory()
    timing = timing_from(args)
    compile_on = (not args.quick) if args.compile is None else args.compile
    providers = frozenset(_csv(args.providers)) if args.providers else None
    ceiling_cfg = QUICK_CEILINGS if args.quick else CeilingConfig()
    loadavg = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"benchmarks: suites {', '.join(suites)}; dtypes "
        f"{', '.join(str(d).replace('torch.', '') for d in dtypes)}; "
        f"{torch.get_num_threads()} threads; compile {'on' if compile_on else 'off'}; "
        f"load {loadavg}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = busy_warning(loadavg, cpus)
    if busy:
        log(f"warning: {busy}")
    ceilings = Ceilings.measure(ceiling_cfg, log, dtypes)
    ctx = RunContext(quick=args.quick, dtypes=dtypes, timing=timing, ceilings=ceilings,
                     compile=compile_on, providers=providers, seed=args.seed, log=log,
                     case_filter=tuple(_csv(args.cases)) if args.cases else None)
    config = {
        "argv": list(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "dtypes": [str(d).replace("torch.", "") for d in dtypes],
        "compile": compile_on,
        "providers": sorted(providers) if providers else "defaults",
        "cases": _csv(args.cases) if args.cases else "all",
        "seed": args.seed,
        "timing": dataclasses.asdict(timing),
        "ceiling_sizes": {"gemm_n": ceiling_cfg.gemm_n, "copy_bytes": ceiling_cfg.copy_bytes},
        "inductor_fx_graph_cache": _compile_caches(args.cold_compile),
        "allocator": dataclasses.asdict(allocator),
    }
    errors = 0
    for name in suites:
        log(f"suite {name}")
        started = utc_now()
        records = SUITES[name].fn(ctx)
        report = build_report(name, records, ceilings, dict(config), started, loadavg)
        paths = write_results(results_dir(args), report, op_formulas())
        log(f"  wrote {', '.join(str(p) for p in paths)}")
        errors += sum(r.status.startswith("error") for r in records)
    if errors:
        log(f"{errors} provider(s) failed; see the 'error:' rows")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
