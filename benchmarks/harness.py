"""The benchmark harness shared by every suite.

Pieces, in the order a run uses them:

* :func:`time_callable`: warm-up apart, then ``time.perf_counter`` around each call
  until both a minimum number of reps and a minimum time are reached; reports the
  median and the 10th/90th percentiles. A call slower than ``slow_call_s`` cuts the
  run short (few reps), so the seconds-long dense baselines stay affordable.
* :class:`RunContext`: what a suite gets (options, the run's ceilings, a logger).
* Op benchmarks: an :class:`OpBench` lists cases (shapes), an input factory and
  :class:`Provider` s (implementations). :func:`run_op_bench` times every
  (case, dtype, provider), checks each output against the seed provider's, and turns
  the explicit FLOP / byte formulas into fractions of the measured ceilings.
* :class:`Record`: one flat result row; suites return lists of them.
* The suite registry (:func:`register_suite`), so later suites (unet, drag, export)
  drop in without touching the runner.
* :func:`write_results`: JSON (machine, commit, time, ceilings, records) and a
  markdown table per op, timestamped plus a "latest" copy.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .ceilings import Ceilings

SCHEMA = "facegen_rt.bench/1"
SEED_PROVIDER = "seed_eager"
COMPILE_PROVIDER = "torch_compile"


# --------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class TimingConfig:
    """How long to time one callable.

    Attributes:
        warmup: untimed calls before measuring (the first call of a provider counts).
        min_reps: timed calls at least.
        min_time_s: keep timing until this much time has passed (up to max_reps).
        max_reps: timed calls at most.
        slow_call_s: a warm-up call slower than this ends the warm-up and ...
        slow_reps: ... limits the run to this many timed calls.
    """

    warmup: int = 2
    min_reps: int = 5
    min_time_s: float = 0.3
    max_reps: int = 100
    slow_call_s: float = 1.0
    slow_reps: int = 3


QUICK_TIMING = TimingConfig(warmup=1, min_reps=2, min_time_s=0.0, max_reps=2,
                            slow_call_s=0.5, slow_reps=1)


@dataclass
class Timing:
    """Per-call wall times of one timed run, in seconds."""

    times_s: list[float]

    def _pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.times_s), q)) * 1e3

    @property
    def median_ms(self) -> float:
        return self._pct(50)

    @property
    def p10_ms(self) -> float:
        return self._pct(10)

    @property
    def p90_ms(self) -> float:
        return self._pct(90)

    @property
    def reps(self) -> int:
        return len(self.times_s)


def call_once(fn: Callable[[], Any], sync: Optional[Callable[[], None]] = None) -> float:
    """Seconds taken by one call (the output is freed after the clock stops)."""
    t0 = time.perf_counter()
    out = fn()
    if sync is not None:  # GPU work is asynchronous: wait before reading the clock
        sync()
    elapsed = time.perf_counter() - t0
    del out
    return elapsed


def time_callable(fn: Callable[[], Any], cfg: TimingConfig,
                  sync: Optional[Callable[[], None]] = None,
                  first_call_s: Optional[float] = None) -> Timing:
    """Time ``fn`` (no arguments) under ``cfg``.

    ``first_call_s``: the duration of a call already made by the caller (e.g. the one
    that produced the output checked against the seed); it counts as a warm-up call.
    """
    warm = 0
    slow = False
    if first_call_s is not None:
        warm, slow = 1, first_call_s > cfg.slow_call_s
    while warm < cfg.warmup and not slow:
        slow = call_once(fn, sync) > cfg.slow_call_s
        warm += 1
    target = min(cfg.slow_reps, cfg.min_reps) if slow else cfg.min_reps
    target = max(target, 1)
    times: list[float] = []
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed call is noise, not the op's cost
    try:
        start = time.perf_counter()
        while len(times) < target or (
            not slow and len(times) < cfg.max_reps
            and time.perf_counter() - start < cfg.min_time_s
        ):
            times.append(call_once(fn, sync))
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(times)


# --------------------------------------------------------------------------- records

@dataclass
class Record:
    """One result row. Unset metrics stay None (null in JSON).

    status: "ok", "unavailable: <reason>", "skipped: <reason>" or "error: <reason>".
    flops: FLOPs the provider executes per call; useful_flops: FLOPs the op needs
    (they differ when a provider computes more than it keeps, e.g. dense attention
    over all (N+1)L queries). bytes: the op's compulsory memory traffic per call.
    compile_s: torch.compile providers: first call (trace + compile + one run) minus
    the steady-state median.
    speedup_vs_*: (other provider's median) / (this median); > 1 means faster.
    frac_*: achieved rate / ceiling measured in the same run.
    """

    suite: str
    op: str
    case: str
    dtype: str
    provider: str
    status: str = "ok"
    params: dict = field(default_factory=dict)
    median_ms: Optional[float] = None
    p10_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    reps: Optional[int] = None
    compile_s: Optional[float] = None
    flops: Optional[float] = None
    useful_flops: Optional[float] = None
    bytes: Optional[float] = None
    gflops: Optional[float] = None
    frac_gemm_peak: Optional[float] = None
    useful_frac_gemm_peak: Optional[float] = None
    gbps: Optional[float] = None
    frac_copy_bw: Optional[float] = None
    frac_copy_bw_same_size: Optional[float] = None
    speedup_vs_seed: Optional[float] = None
    speedup_vs_compile: Optional[float] = None
    max_abs_diff_vs_seed: Optional[float] = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------- context

@dataclass
class RunContext:
    """What a suite receives from the runner."""

    quick: bool
    dtypes: tuple[torch.dtype, ...]
    timing: TimingConfig
    ceilings: "Ceilings"
    compile: bool = True
    providers: Optional[frozenset[str]] = None  # None: each suite's defaults
    seed: int = 0
    log: Callable[[str], None] = print
    case_filter: Optional[tuple[str, ...]] = None  # substrings of case labels to keep

    def wants(self, provider: "Provider") -> bool:
        if self.providers is None:
            return provider.default
        return provider.name in self.providers

    def wants_case(self, label: str) -> bool:
        return self.case_filter is None or any(f in label for f in self.case_filter)


class Unavailable(Exception):
    """Raised by a provider's builder when it cannot run here; the message is the reason."""


class Skipped(Exception):
    """Raised by a provider's builder when the run's options leave it out."""


# --------------------------------------------------------------------------- op benches

@dataclass(frozen=True)
class Case:
    """One shape of one op.

    label: short human name, unique within the op. params: the shape parameters.
    useful_flops / bytes: explicit per-call formulas evaluated for this shape (bytes
    may depend on the dtype, so it is a function of the element size).
    """

    label: str
    params: dict
    useful_flops: Optional[float] = None
    bytes_per_elem_size: Optional[Callable[[int], float]] = None

    def bytes(self, dtype: torch.dtype) -> Optional[float]:
        if self.bytes_per_elem_size is None:
            return None
        return float(self.bytes_per_elem_size(torch.empty((), dtype=dtype).element_size()))


@dataclass(frozen=True)
class Provider:
    """One implementation of an op.

    build(inputs) -> fn: does every per-input preparation outside the timed region
    and returns a no-argument callable that computes the op's output. It raises
    Unavailable / Skipped when it can't or shouldn't run.
    flops(case) -> FLOPs this provider executes, when it differs from the useful count.
    """

    name: str
    build: Callable[[dict], Callable[[], torch.Tensor]]
    compiled: bool = False
    default: bool = True
    flops: Optional[Callable[[Case], float]] = None
    note: str = ""


@dataclass(frozen=True)
class OpBench:
    """The benchmark of one op: cases for full and quick runs, inputs, providers."""

    op: str
    cases: Callable[[bool], list[Case]]
    make_inputs: Callable[[Case, torch.dtype, torch.Generator], dict]
    providers: Sequence[Provider]
    formulas: str = ""


def _reason(exc: BaseException) -> str:
    """A one-line reason from an exception, without the op layer's preamble."""
    text = " ".join(str(exc).split())
    for marker in ("cannot run: ", "can't run: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    if text.startswith("unavailable: "):
        text = text[len("unavailable: "):]
    return text[:300]


def _max_abs_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max()) if out.numel() else 0.0


def _fill_rates(rec: Record, dtype: torch.dtype, ceilings: "Ceilings") -> None:
    secs = rec.median_ms / 1e3
    if rec.flops is not None:
        rec.gflops = rec.flops / secs / 1e9
        peak = ceilings.gemm_peak_gflops(dtype)
        if peak:
            rec.frac_gemm_peak = rec.gflops / peak
            if rec.useful_flops is not None:
                rec.useful_frac_gemm_peak = rec.useful_flops / secs / 1e9 / peak
    if rec.bytes is not None:
        rec.gbps = rec.bytes / secs / 1e9
        rec.frac_copy_bw = rec.gbps / ceilings.copy_gbps()
        rec.frac_copy_bw_same_size = rec.gbps / ceilings.same_size_copy_gbps(rec.bytes)


def _fill_speedups(rows: list[Record]) -> None:
    by_name = {r.provider: r for r in rows if r.ok}
    for name, attr in ((SEED_PROVIDER, "speedup_vs_seed"),
                       (COMPILE_PROVIDER, "speedup_vs_compile")):
        base = by_name.get(name)
        if base is None:
            continue
        for r in rows:
            if r.ok:
                setattr(r, attr, base.median_ms / r.median_ms)


def _compile_reset() -> None:
    # Each compiled provider starts from a clean dynamo cache, so its first call is a
    # full compile of this (shape, dtype) and not a recompile or a guard hit.
    torch._dynamo.reset()


def run_provider(ctx: RunContext, bench: OpBench, case: Case, dtype: torch.dtype,
                 inputs: dict, provider: Provider, suite: str,
                 seed_out: Optional[torch.Tensor]) -> tuple[Record, Optional[torch.Tensor]]:
    """Time one provider on one (case, dtype); returns its record and its output."""
    rec = Record(suite=suite, op=bench.op, case=case.label, dtype=_dtype_name(dtype),
                 provider=provider.name, params=dict(case.params), note=provider.note)
    rec.useful_flops = case.useful_flops
    rec.flops = provider.flops(case) if provider.flops else case.useful_flops
    rec.bytes = case.bytes(dtype)
    try:
        if provider.compiled:
            if not ctx.compile:
                raise Skipped("torch.compile is off (--no-compile, or --quick without --compile)")
            _compile_reset()
        fn = provider.build(inputs)
        t0 = time.perf_counter()
        out = fn()
        first_s = time.perf_counter() - t0
    except Skipped as exc:
        rec.status = f"skipped: {exc}"
        return rec, None
    except Unavailable as exc:
        rec.status = f"unavailable: {exc}"
        return rec, None
    except Exception as exc:  # noqa: BLE001 - the op layer's BackendUnavailable and friends
        # The op layer raises BackendUnavailable (matched by name: the harness does not
        # depend on facegen_rt) when a backend can't run; anything else is a failure.
        if type(exc).__name__ == "BackendUnavailable":
            rec.status = f"unavailable: {_reason(exc)}"
        else:
            rec.status = f"error: {type(exc).__name__}: {_reason(exc)}"
            ctx.log(traceback.format_exc())
        return rec, None
    if seed_out is not None:
        rec.max_abs_diff_vs_seed = _max_abs_diff(out, seed_out)
    try:
        timing = time_callable(fn, ctx.timing,
                               first_call_s=None if provider.compiled else first_s)
    except Exception as exc:  # noqa: BLE001 - a provider failing after its first call
        rec.status = f"error: {type(exc).__name__}: {_reason(exc)}"
        ctx.log(traceback.format_exc())
        return rec, None
    rec.median_ms, rec.p10_ms, rec.p90_ms, rec.reps = (
        timing.median_ms, timing.p10_ms, timing.p90_ms, timing.reps)
    if provider.compiled:
        # the first call traces, compiles and runs once: its excess over a steady call
        rec.compile_s = max(first_s - timing.median_ms / 1e3, 0.0)
    _fill_rates(rec, dtype, ctx.ceilings)
    return rec, out


def run_op_bench(ctx: RunContext, bench: OpBench, suite: str) -> list[Record]:
    """Every (case, dtype, provider) of one op; see the module docstring."""
    records: list[Record] = []
    providers = [p for p in bench.providers if ctx.wants(p)]
    for case in bench.cases(ctx.quick):
        if not ctx.wants_case(case.label):
            continue
        for dtype in ctx.dtypes:
            gen = torch.Generator().manual_seed(ctx.seed)
            inputs = bench.make_inputs(case, dtype, gen)
            rows: list[Record] = []
            seed_out = None
            for provider in providers:
                rec, out = run_provider(ctx, bench, case, dtype, inputs, provider, suite, seed_out)
                if provider.name == SEED_PROVIDER and out is not None:
                    seed_out = out
                    rec.max_abs_diff_vs_seed = 0.0
                rows.append(rec)
                ctx.log(_log_line(rec))
            _fill_speedups(rows)
            records.extend(rows)
            del inputs, seed_out
    return records


def _log_line(r: Record) -> str:
    head = f"  {r.op:<24} {r.case:<28} {r.dtype:<9} {r.provider:<18}"
    if not r.ok:
        return head + r.status
    extra = f"  compile {r.compile_s:.1f}s" if r.compile_s is not None else ""
    return head + f"{r.median_ms:10.3f} ms  (x{r.reps}){extra}"


# --------------------------------------------------------------------------- suites

SuiteFn = Callable[[RunContext], list[Record]]


@dataclass(frozen=True)
class Suite:
    """A registered suite. in_all: part of ``--suite all``."""

    name: str
    fn: SuiteFn
    in_all: bool = True
    doc: str = ""


SUITES: dict[str, Suite] = {}
OP_BENCHES: dict[str, OpBench] = {}


def register_suite(name: str, in_all: bool = True) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator: make ``fn(ctx) -> list[Record]`` runnable as ``--suite name``."""
    def deco(fn: SuiteFn) -> SuiteFn:
        if name in SUITES and SUITES[name].fn is not fn:
            raise ValueError(f"benchmark suite {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        SUITES[name] = Suite(name, fn, in_all, doc[0] if doc else "")
        return fn
    return deco


def register_op_bench(bench: OpBench) -> OpBench:
    """Register an op benchmark; it also runs alone as ``--suite <op>``."""
    OP_BENCHES[bench.op] = bench

    def suite(ctx: RunContext) -> list[Record]:
        return run_op_bench(ctx, bench, bench.op)

    suite.__doc__ = f"the {bench.op} op alone"
    register_suite(bench.op, in_all=False)(suite)
    return bench


def op_formulas() -> dict[str, str]:
    """Per-op formula text for the markdown tables."""
    return {op: b.formulas for op, b in OP_BENCHES.items() if b.formulas}


# --------------------------------------------------------------------------- metadata

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def git_commit(repo: Optional[Path] = None) -> dict:
    """HEAD of the repository holding the benchmarks ("uncommitted" when there is none)."""
    repo = repo or Path(__file__).resolve().parent.parent

    def git(*args: str) -> Optional[str]:
        try:
            res = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": head or "uncommitted", "dirty": bool(status) if status is not None else None}


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


# --------------------------------------------------------------------------- writers

def build_report(suite: str, records: list[Record], ceilings: "Ceilings", config: dict,
                 started: _dt.datetime, loadavg_start: Optional[list] = None) -> dict:
    """The JSON document of one suite's run (schema: see benchmarks/NOTES.md)."""
    machine = machine_info()
    if loadavg_start is not None:
        machine["loadavg_start"] = loadavg_start
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "schema": SCHEMA,
        "suite": suite,
        "created_utc": started.isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine,
        "config": config,
        "ceilings": ceilings.to_json(),
        "records": [dataclasses.asdict(r) for r in records],
    }


def write_results(out_dir: Path, report: dict, formulas: Optional[dict] = None) -> list[Path]:
    """Write <suite>-<UTC stamp>.json/.md and the latest copies <suite>.json/.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suite = report["suite"]
    stamp = report["created_utc"].replace(":", "").replace("-", "").replace("+0000", "Z")
    text = json.dumps(report, indent=1, sort_keys=False, default=str) + "\n"
    md = render_markdown(report, formulas or {})
    paths = []
    for stem in (f"{suite}-{stamp}", suite):
        for ext, body in ((".json", text), (".md", md)):
            path = out_dir / f"{stem}{ext}"
            tmp = path.with_suffix(ext + ".tmp")
            tmp.write_text(body, encoding="utf-8")
            tmp.replace(path)  # never leave a half-written "latest" file behind
            paths.append(path)
    return paths


def _fmt(x: Optional[float], spec: str = ".3g") -> str:
    """Three significant digits without exponents in the usual range (1996 -> 1996)."""
    if x is None:
        return ""
    if spec == ".3g" and 1e-3 <= abs(x) < 1e7:
        digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{digits}f}"
    return format(x, spec)


def _pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _columns(rows: list[dict]) -> list[tuple[str, Callable[[dict], str]]]:
    """Table columns: the common ones plus rate columns for metrics this op reports."""
    cols: list[tuple[str, Callable[[dict], str]]] = [
        ("case", lambda r: r["case"]),
        ("dtype", lambda r: r["dtype"]),
        ("provider", lambda r: r["provider"]),
        ("median ms", lambda r: _fmt(r["median_ms"]) if r["status"] == "ok" else r["status"]),
        ("p10-p90 ms", lambda r: f"{_fmt(r['p10_ms'])}-{_fmt(r['p90_ms'])}"
         if r["status"] == "ok" else ""),
        ("reps", lambda r: str(r["reps"] or "")),
    ]
    if any(r["speedup_vs_seed"] is not None for r in rows):
        cols.append(("x seed", lambda r: _fmt(r["speedup_vs_seed"], ".2f")))
    if any(r["speedup_vs_compile"] is not None for r in rows):
        cols.append(("x compile", lambda r: _fmt(r["speedup_vs_compile"], ".2f")))
    if any(r["compile_s"] is not None for r in rows):
        cols.append(("compile s", lambda r: _fmt(r["compile_s"], ".1f")))
    if any(r["bytes"] is not None for r in rows):
        cols += [("MB", lambda r: _fmt(r["bytes"] and r["bytes"] / 1e6)),
                 ("GB/s", lambda r: _fmt(r["gbps"])),
                 ("% copy BW", lambda r: _pct(r["frac_copy_bw"])),
                 ("% same-size copy BW", lambda r: _pct(r["frac_copy_bw_same_size"]))]
    if any(r["flops"] is not None for r in rows):
        split = any(r["useful_flops"] is not None and r["flops"] != r["useful_flops"]
                    for r in rows)
        cols += [("GFLOP exec" if split else "GFLOP",
                  lambda r: _fmt(r["flops"] and r["flops"] / 1e9)),
                 ("GFLOP/s", lambda r: _fmt(r["gflops"])),
                 ("% GEMM peak" + (" (exec)" if split else ""),
                  lambda r: _pct(r["frac_gemm_peak"]))]
        if split:
            cols.append(("% GEMM peak (useful)", lambda r: _pct(r["useful_frac_gemm_peak"])))
    if any(r["max_abs_diff_vs_seed"] is not None for r in rows):
        cols.append(("max abs diff vs seed", lambda r: _fmt(r["max_abs_diff_vs_seed"], ".2g")))
    if any(r["extra"] for r in rows):
        keys = sorted({k for r in rows for k in r["extra"]})
        for k in keys:
            cols.append((k, lambda r, k=k: _extra(r["extra"].get(k))))
    return cols


def _extra(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(float(value))
    return "" if value is None else str(value)


def render_markdown(report: dict, formulas: dict) -> str:
    """One table per op, preceded by the run's metadata and ceilings."""
    m, c, g = report["machine"], report["ceilings"], report["git"]
    lines = [
        f"# Benchmark suite `{report['suite']}`",
        "",
        f"- time (UTC): {report['created_utc']}; commit: {g['commit']}"
        + (" (dirty tree)" if g.get("dirty") else ""),
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, torch {m['torch']} "
        f"({m['torch_cpu_capability']}), {m['torch_num_threads']} threads; {m['platform']}",
        f"- load average at start / end: {_load(m.get('loadavg_start'))} / "
        f"{_load(m.get('loadavg_end'))}",
        f"- options: {json.dumps(report['config'], default=str)}",
    ]
    busy = busy_warning(m.get("loadavg_start"), m.get("cpus_usable") or m.get("cpu_count"))
    if busy:
        lines.append(f"- **{busy}**")
    lines += [
        "",
        "## Ceilings (measured in this run)",
        "",
        "| ceiling | value | p10-p90 | how |",
        "|---|---|---|---|",
    ]
    for dt, gm in c["gemm"].items():
        others = "; ".join(f"{k} {v:.1f}" for k, v in gm["paths"].items() if k != gm["path"])
        how = f"{gm['path']}, median (the faster path; {others})"
        lines.append(f"| GEMM {dt} | {gm['gflops']:.1f} GFLOP/s | {gm['p10_gflops']:.1f}-"
                     f"{gm['p90_gflops']:.1f} | {how} |")
    cp = c["copy"]
    lines.append(f"| copy | {cp['gbps']:.1f} GB/s | {cp['p10_gbps']:.1f}-{cp['p90_gbps']:.1f} | "
                 f"dst.copy_(src), 2 x {cp['bytes_per_buffer'] / 2**20:.0f} MiB, "
                 "(read + write) / time |")
    for s in c.get("copy_same_size", []):
        lines.append(f"| copy, same size | {s['gbps']:.1f} GB/s | {s['p10_gbps']:.1f}-"
                     f"{s['p90_gbps']:.1f} | 2 x {s['bytes_per_buffer'] / 1e6:.2f} MB "
                     f"(op total {s['total_bytes'] / 1e6:.2f} MB) |")
    ops: dict[str, list[dict]] = {}
    for r in report["records"]:
        ops.setdefault(r["op"], []).append(r)
    for op, rows in ops.items():
        cols = _columns(rows)
        lines += ["", f"## {op}", ""]
        if op in formulas:
            lines += [formulas[op].strip(), ""]
        lines.append("| " + " | ".join(h for h, _ in cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in rows:
            lines.append("| " + " | ".join(f(r).replace("|", "/") for _, f in cols) + " |")
        notes = {r["provider"]: r["note"] for r in rows if r["note"]}
        if notes:
            lines += [""] + [f"- `{p}`: {n}" for p, n in notes.items()]
    return "\n".join(lines) + "\n"


def busy_warning(loadavg: Optional[list], cpus: Optional[int]) -> str:
    """A warning when the 1-minute load average exceeds the usable CPUs, else ""."""
    if not loadavg or not cpus or loadavg[0] <= cpus:
        return ""
    return (f"busy machine: load average {loadavg[0]:.1f} > {cpus} CPUs; timings are "
            "unreliable, multi-threaded ones most (OpenMP waits on descheduled threads). "
            "Rerun when quiet, or compare with --threads 1")


def _load(x: Optional[list]) -> str:
    return "n/a" if not x else ", ".join(f"{v:.2f}" for v in x)
