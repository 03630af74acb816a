"""Smoke test of the benchmark harness: ``python -m benchmarks.run --quick`` writes
well-formed JSON and markdown. Nothing here asserts anything about speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.harness import SCHEMA, TimingConfig, time_callable  # noqa: E402
from benchmarks.ops.masked_cross_attention import onehot_label_mask, soft_mask  # noqa: E402
from benchmarks.ops.shared_self_attention import blob_keep  # noqa: E402

OPS = ("spade_norm", "masked_cross_attention", "shared_self_attention")
DEFAULT_PROVIDERS = {
    "spade_norm": {"seed_eager", "torch_compile", "facegen_cpu", "facegen_cpu_kernel"},
    "masked_cross_attention": {"seed_eager", "torch_compile", "sdpa", "facegen_cpu",
                               "facegen_cpu_kernel"},
    "shared_self_attention": {"seed_eager", "torch_compile", "sdpa", "facegen_cpu",
                              "facegen_cpu_kernel"},
}
RECORD_KEYS = {"suite", "op", "case", "dtype", "provider", "status", "params", "median_ms",
               "p10_ms", "p90_ms", "reps", "compile_s", "flops", "useful_flops", "bytes",
               "gflops", "frac_gemm_peak", "useful_frac_gemm_peak", "gbps", "frac_copy_bw",
               "frac_copy_bw_same_size", "speedup_vs_seed", "speedup_vs_compile",
               "max_abs_diff_vs_seed", "note", "extra"}
STATUS_PREFIXES = ("ok", "unavailable: ", "skipped: ", "error: ")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--suite", "all",
                           "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return out, proc


def _tables(md: str) -> list[list[str]]:
    """Markdown tables as lists of their lines."""
    tables, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_quick_run_exits_cleanly(quick_run):
    _, proc = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_quick_run_writes_files(quick_run):
    out, _ = quick_run
    for suite in ("ops", "synthface"):
        for ext in ("json", "md"):
            assert (out / f"{suite}.{ext}").is_file()
            stamped = list(out.glob(f"{suite}-*.{ext}"))
            assert len(stamped) == 1, stamped
            assert stamped[0].read_text() == (out / f"{suite}.{ext}").read_text()


def test_ops_json_is_well_formed(quick_run):
    out, _ = quick_run
    report = json.loads((out / "ops.json").read_text())
    assert report["schema"] == SCHEMA and report["suite"] == "ops"
    assert report["git"]["commit"]
    assert report["created_utc"].endswith("+00:00")
    m = report["machine"]
    for key in ("platform", "cpu_model", "cpu_count", "torch", "torch_num_threads"):
        assert m[key] not in (None, "")
    c = report["ceilings"]
    # float32's GEMM peak always; another dtype's only when the run has that dtype.
    assert set(c["gemm"]) == {"float32"} | ({"bfloat16"} & set(report["config"]["dtypes"]))
    for g in c["gemm"].values():
        # the ceiling is the faster of the two library paths, and both are recorded
        assert len(g["paths"]) == 2 and g["gflops"] == max(g["paths"].values()) > 0
        assert g["path"] in g["paths"]
    assert c["copy"]["gbps"] > 0
    assert c["torch_num_threads"] >= 1
    seen = {}
    for r in report["records"]:
        assert set(r) == RECORD_KEYS, set(r) ^ RECORD_KEYS
        assert r["status"] == "ok" or r["status"].startswith(STATUS_PREFIXES[1:]), r["status"]
        assert not r["status"].startswith("error"), r
        seen.setdefault(r["op"], set()).add(r["provider"])
        if r["status"] != "ok":
            assert r["median_ms"] is None
            continue
        assert r["reps"] >= 1
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert math.isfinite(r["max_abs_diff_vs_seed"])
        if r["provider"] == "seed_eager":
            assert r["speedup_vs_seed"] == pytest.approx(1.0)
            assert r["max_abs_diff_vs_seed"] == 0.0
        if r["op"] == "spade_norm":
            assert r["bytes"] > 0 and r["gbps"] > 0 and r["frac_copy_bw_same_size"] > 0
        else:
            assert r["flops"] > 0 and r["useful_flops"] > 0 and r["frac_gemm_peak"] > 0
        if r["op"] == "shared_self_attention" and r["provider"] == "seed_eager":
            assert r["flops"] > r["useful_flops"]  # dense over all (N+1)L queries
    assert seen == DEFAULT_PROVIDERS
    # the spade_norm criterion needs the same-size copy of the same run
    assert c["copy_same_size"] and all(s["gbps"] > 0 for s in c["copy_same_size"])


def test_ops_markdown_is_well_formed(quick_run):
    out, _ = quick_run
    md = (out / "ops.md").read_text()
    assert md.startswith("# Benchmark suite `ops`")
    for op in OPS:
        assert f"\n## {op}\n" in md
    tables = _tables(md)
    assert len(tables) == 1 + len(OPS)  # ceilings + one per op
    for table in tables:
        widths = {line.count("|") for line in table}
        assert len(widths) == 1, table
        assert set(table[1].replace("|", "")) == {"-"}
        assert len(table) >= 3


def test_synthface_suite_reports_or_skips(quick_run):
    out, _ = quick_run
    report = json.loads((out / "synthface.json").read_text())
    assert report["records"]
    for rec in report["records"]:
        if rec["status"] == "ok":
            assert rec["extra"]["images_per_s"] > 0
        else:
            assert rec["status"].startswith("skipped: "), rec["status"]


def test_timer_respects_rep_bounds():
    calls = []
    t = time_callable(lambda: calls.append(1), TimingConfig(warmup=2, min_reps=3, min_time_s=0.0,
                                                            max_reps=3))
    assert t.reps == 3 and len(calls) == 5
    assert t.p10_ms <= t.median_ms <= t.p90_ms


def test_blob_masks_keep_the_exact_fraction():
    gen = torch.Generator().manual_seed(0)
    for L, keep in ((64, 0.5), (1024, 0.75), (1024, 0.1)):
        m = blob_keep(L, keep, gen)
        assert m.dtype == torch.bool and m.shape == (L,)
        assert int(m.sum()) == round(keep * L)


def test_cross_attention_masks():
    gen = torch.Generator().manual_seed(0)
    onehot = onehot_label_mask(1, 256, 19, gen)
    assert torch.equal(onehot.sum(-1), torch.ones(1, 256))
    assert ((onehot == 0) | (onehot == 1)).all()
    soft = soft_mask(1, 256, 19, gen)
    nnz = (soft != 0).sum(-1)
    assert ((nnz == 2) | (nnz == 3)).all()
    torch.testing.assert_close(soft.sum(-1), torch.ones(1, 256))


def test_quick_runs_leave_the_committed_tables_alone(tmp_path):
    from benchmarks.run import DEFAULT_OUT, parse_args, results_dir

    assert results_dir(parse_args(["--quick"])) == DEFAULT_OUT / "quick"
    assert results_dir(parse_args([])) == DEFAULT_OUT
    assert results_dir(parse_args(["--quick", "--out", str(tmp_path)])) == tmp_path
