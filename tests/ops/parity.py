"""Parity helpers shared by the op tests.

The rule (flash-attention's): a backend's error against a float64 reference may be at
most twice PyTorch's own error in the same low precision, plus a floor per dtype:

    max|out - ref64| <= 2 * max|ref_lowp - ref64| + floor[dtype] * max(1, max|ref64|)

where ref_lowp is the op's reference formulation run in the test dtype.
"""

from __future__ import annotations

import pytest
import torch

from facegen_rt.ops._native import cpu_unavailable, triton_unavailable

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FLOOR = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
BACKENDS = ("reference", "cpu", "triton")


def skip_unless_available(backend: str) -> None:
    """Skip a test whose backend can't run here, naming why (never silently)."""
    why = {"cpu": cpu_unavailable, "triton": triton_unavailable}.get(backend, lambda: None)()
    if why is not None:
        pytest.skip(f"{backend}: {why}")


def to64(*tensors: torch.Tensor):
    return [t.double() if t.is_floating_point() else t for t in tensors]


def cast(dtype: torch.dtype, *tensors: torch.Tensor):
    return [t.to(dtype) if t.is_floating_point() else t for t in tensors]


def explain(out: torch.Tensor, ref: torch.Tensor, limit: float) -> str:
    """Readable mismatch report: count, worst index, both values, NaN/inf counts."""
    diff = (out.double() - ref).abs()
    bad = ~(diff <= limit)
    worst = int(torch.nan_to_num(diff, nan=float("inf")).flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
    return (f"{int(bad.sum())}/{diff.numel()} elements beyond {limit:.3g}; worst at {index}: "
            f"out={out.double()[index].item():.6g} ref={ref[index].item():.6g}; "
            f"NaN in out: {int(out.isnan().sum())}, inf in out: {int(out.isinf().sum())}")


def assert_parity(out: torch.Tensor, ref64: torch.Tensor, ref_lowp: torch.Tensor,
                  dtype: torch.dtype) -> None:
    """Check ``out`` against the float64 reference with the rule above."""
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    assert out.shape == ref64.shape, f"output shape {tuple(out.shape)}, expected {tuple(ref64.shape)}"
    assert out.is_contiguous(), "output must be contiguous"
    torch_err = (ref_lowp.double() - ref64).abs().max().item()
    limit = 2 * torch_err + FLOOR[dtype] * max(1.0, ref64.abs().max().item())
    err = (out.double() - ref64).abs().max().item()
    assert err <= limit, explain(out, ref64, limit)
