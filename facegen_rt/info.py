"""`facegen-rt info` / `python -m facegen_rt.info`: versions and backend availability.

For every op and backend it prints "available" or the exact reason it is not.
"""

from __future__ import annotations

import importlib
import platform
from typing import Optional

import torch

import facegen_rt
from facegen_rt.ops import OPS, _native


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except ImportError:
        return "not installed"


def cpu_bf16_instructions() -> list[str]:
    """The CPU's native bf16 matrix instructions that PyTorch uses (empty: none).

    Without them PyTorch multiplies bf16 through slow generic code: on an AVX2-only
    CPU a 2048^3 bf16 product ran 400x slower than in float32."""
    probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))
    return [name for name, probe in probes if getattr(torch.cpu, probe, lambda: False)()]


def cpu_summary() -> str:
    native = cpu_bf16_instructions()
    bf16 = (f"native ({', '.join(native)})" if native else
            "no bf16 instructions: use float32, bf16 runs far slower here")
    return f"cpu: vector level {torch.backends.cpu.get_cpu_capability()}; bf16 matmul: {bf16}"


def backend_status() -> dict[str, dict[str, Optional[str]]]:
    """{op: {backend: None if available else the reason}}."""
    tables = [importlib.import_module(f"facegen_rt.ops.{op}").BACKENDS for op in OPS]
    return {t.op_name: {b.name: b.unavailable() for b in t.backends} for t in tables}


def report() -> str:
    lines = [
        f"facegen_rt {facegen_rt.__version__}",
        f"python {platform.python_version()} on {platform.machine()}",
        f"torch {torch.__version__} (threads: {torch.get_num_threads()}, "
        f"cuda available: {torch.cuda.is_available()})",
        cpu_summary(),
    ]
    lines += [f"{m} {_version(m)}" for m in ("triton", "numpy", "onnx", "onnxruntime")]
    c_module, why = _native._load_c()
    if c_module is not None:
        lines.append(f"facegen_rt._C: {c_module.__doc__}")
    lines.append("")
    lines.append("ops and backends (automatic order: cpu tensors -> cpu, reference; "
                 "cuda tensors -> triton, reference):")
    for op, backends in backend_status().items():
        lines.append(f"  {op}")
        for name, reason in backends.items():
            lines.append(f"    {name:<10} {'available' if reason is None else reason}")
    return "\n".join(lines)


def main(argv=None) -> int:
    print(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
