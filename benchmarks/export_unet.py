"""UNet step latency across runtimes: onnxruntime (portable, fused, fused with facegen
kernels) against facegen_rt native and the seed's eager formulation.

Every provider computes the same thing, one SCA-DM UNet evaluation from
(x, timesteps, context, seg), including the mask-dependent SPADE maps and the style
K/V (an exported step graph recomputes them; see export/onnx/graphs.py):

    seed_eager           the UNet in eager PyTorch with every facegen op on its
                         "reference" backend (the seed's math)
    facegen_native       the UNet in eager PyTorch, ops on the automatic backend
                         (facegen_rt._C kernels on CPU)
    ort_portable         onnxruntime, portable graph (standard ops only)
    ort_fused            onnxruntime, fused graph; onnxruntime inlines each facegen
                         node's local function
    ort_fused_kernels    onnxruntime, fused graph, facegen nodes on facegen_rt kernels
                         through onnxruntime-extensions PyOp (export/onnx/fastpath.py)
    facegen_native_cached  (extra row, different work) the UNet with the pipeline's
                         per-run caches prepared, i.e. what one sampler step costs there

Models are randomly initialised presets (latency does not depend on the weights):
"small" (latent 32^2) at batch 1 and 2 (2 = classifier-free guidance), "tiny" with
--quick. onnxruntime runs with as many intra-op threads as torch. The graphs are
exported once per case into a temporary folder; export seconds go in "extra".
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facegen_rt.ops import forced_backend

from .harness import Record, RunContext, register_suite, time_callable

SUITE = "export"
OP = "unet_step"
FULL_CASES = (("small", 1), ("small", 2))
QUICK_CASES = (("tiny", 1),)


def _unavailable() -> str:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e .[onnx])"
    return ""


def _case(ctx: RunContext, preset: str, batch: int, tmp: Path) -> list[Record]:
    import onnxruntime as ort

    from facegen_rt.export.onnx import export_model
    from facegen_rt.export.onnx.exporter import example_inputs
    from facegen_rt.export.onnx.fastpath import fast_path_session, fast_path_unavailable
    from facegen_rt.export.onnx.models import load

    label = f"{preset} B{batch}"
    out = tmp / preset
    t0 = time.perf_counter()
    if not out.exists():
        export_model("sca-dm", out, flavours=("portable", "fused"), dynamic_batch=True,
                     preset=preset, graphs=["unet_step"], log=lambda m: None)
    export_s = time.perf_counter() - t0
    spec = load("sca-dm", preset=preset).graphs[0]
    unet = spec.module.unet
    inputs = example_inputs(spec, batch, seed=ctx.seed)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs)}
    threads = torch.get_num_threads()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1

    def session(flavour):
        s = ort.InferenceSession(str(out / f"unet_step.{flavour}.onnx"), so,
                                 providers=["CPUExecutionProvider"])
        return lambda: s.run(None, feeds)[0]

    def eager(backend):
        def run():
            with torch.no_grad(), forced_backend(backend):
                return spec.module(*inputs)
        return run

    def cached():
        x, t, context, seg = inputs
        lat = x.shape[-2:]
        cond = unet.prepare_conditioning(seg, context, tuple(lat))
        def run():
            with torch.no_grad():
                return unet(x, t, cond=cond)
        return run

    def kernels():
        why = fast_path_unavailable()
        if why:
            raise RuntimeError(f"unavailable: {why}")
        s = fast_path_session(out / "unet_step.fused.onnx", threads=threads)
        return lambda: s.run(None, feeds)[0]

    providers = [
        ("seed_eager", lambda: eager("reference"), "UNet forward, FACEGEN_BACKEND=reference"),
        ("facegen_native", lambda: eager("cpu"), "UNet forward, facegen_rt._C kernels"),
        ("ort_portable", lambda: session("portable"), "onnxruntime, standard ops only"),
        ("ort_fused", lambda: session("fused"), "onnxruntime, facegen nodes via local functions"),
        ("ort_fused_kernels", kernels, "onnxruntime + onnxruntime-extensions PyOp -> "
                                       "facegen_rt._C kernels"),
        ("facegen_native_cached", cached, "extra: pipeline step with per-run caches "
                                          "(SPADE maps, K/V) prepared; less work than the rest"),
    ]
    if ctx.providers is not None:
        providers = [p for p in providers if p[0] in ctx.providers]
    records, seed_out, seed_ms = [], None, None
    for name, build, note in providers:
        rec = Record(suite=SUITE, op=OP, case=label, dtype="float32", provider=name, note=note,
                     params={"preset": preset, "batch": batch, "threads": threads},
                     extra={"export_s": round(export_s, 1)})
        try:
            fn = build()
            first = time.perf_counter()
            result = fn()
            first = time.perf_counter() - first
            timing = time_callable(fn, ctx.timing, first_call_s=first)
        except Exception as exc:  # noqa: BLE001 - a failing provider is a row
            msg = str(exc)
            rec.status = msg[:300] if msg.startswith("unavailable: ") else \
                f"error: {type(exc).__name__}: {msg}"[:300]
            ctx.log(f"  {OP} {label:<10} {name:<22} {rec.status}")
            records.append(rec)
            continue
        result = np.asarray(result.numpy() if isinstance(result, torch.Tensor) else result)
        rec.median_ms, rec.p10_ms, rec.p90_ms, rec.reps = (
            timing.median_ms, timing.p10_ms, timing.p90_ms, timing.reps)
        if name == "seed_eager":
            seed_out, seed_ms = result, timing.median_ms
        if seed_out is not None:
            rec.max_abs_diff_vs_seed = float(np.abs(result - seed_out).max())
            rec.speedup_vs_seed = seed_ms / timing.median_ms
        ctx.log(f"  {OP} {label:<10} {name:<22} {timing.median_ms:9.2f} ms (x{timing.reps})")
        records.append(rec)
    return records


@register_suite(SUITE, in_all=False)
def export_suite(ctx: RunContext) -> list[Record]:
    """SCA-DM UNet step: onnxruntime portable / fused / fused+kernels vs native and seed."""
    why = _unavailable()
    if why:
        return [Record(suite=SUITE, op=OP, case="-", dtype="float32", provider="onnxruntime",
                       status=f"skipped: {why}")]
    records = []
    cases = QUICK_CASES if ctx.quick else FULL_CASES
    with tempfile.TemporaryDirectory(prefix="facegen-export-bench-") as tmp:
        for preset, batch in cases:
            if ctx.wants_case(f"{preset} B{batch}"):
                records += _case(ctx, preset, batch, Path(tmp))
    return records
