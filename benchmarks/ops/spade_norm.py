"""spade_norm benchmark: GroupNorm(x) * (1 + gamma) + beta, B = 1, groups = 32, act none.

Formulas (per call, n = B * C * H * W, s = element size in bytes):
    bytes = 4 * n * s        x, gamma and beta read once, out written once
    rate  = bytes / t        compared with two ceilings of the same run:
                             * copy BW on large buffers (DRAM-bound),
                             * copy BW on src + dst buffers of 4 * n * s bytes in
                               total ("same-size"), the issue's criterion: the fused
                               cpu kernel should reach >= 50 % of it.
No FLOP count: about 8 flops per element against 4 * s bytes, far below the GEMM
ridge point, so bandwidth is the only ceiling that applies.
"""

from __future__ import annotations

import torch

from facegen_rt.ops import spade_norm, spade_norm_reference

from ..harness import Case, OpBench, Provider, register_op_bench
from .common import KERNEL_NOTE, cpu_kernel_entry

GROUPS = 32
EPS = 1e-5
SEED_SHAPES = ((224, 64), (448, 32), (672, 16), (896, 8))  # (C, H = W): SCA-DM's levels
QUICK_SHAPES = ((64, 8),)


def _case(C: int, H: int) -> Case:
    n = C * H * H
    return Case(label=f"{C}x{H}^2", params={"B": 1, "C": C, "H": H, "W": H, "groups": GROUPS},
                bytes_per_elem_size=lambda s, n=n: 4.0 * n * s)


def cases(quick: bool) -> list[Case]:
    return [_case(C, H) for C, H in (QUICK_SHAPES if quick else SEED_SHAPES)]


def make_inputs(case: Case, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """x, gamma, beta: [1, C, H, W]; gamma and beta are small, as SPADE predicts them."""
    p = case.params
    shape = (p["B"], p["C"], p["H"], p["W"])
    x = torch.randn(shape, generator=gen).to(dtype)
    gamma = (0.2 * torch.randn(shape, generator=gen)).to(dtype)
    beta = (0.2 * torch.randn(shape, generator=gen)).to(dtype)
    return {"x": x, "gamma": gamma, "beta": beta}


def _seed(inp: dict):
    x, g, b = inp["x"], inp["gamma"], inp["beta"]
    return lambda: spade_norm_reference(x, g, b, GROUPS, EPS, "")


def _compiled(inp: dict):
    fn = torch.compile(spade_norm_reference, fullgraph=True)
    x, g, b = inp["x"], inp["gamma"], inp["beta"]
    return lambda: fn(x, g, b, GROUPS, EPS, "")


def _public(backend: str):
    def build(inp: dict):
        x, g, b = inp["x"], inp["gamma"], inp["beta"]
        return lambda: spade_norm(x, g, b, GROUPS, EPS, backend=backend)
    return build


def _kernel(inp: dict):
    run = cpu_kernel_entry("spade_norm")
    x, g, b = inp["x"], inp["gamma"], inp["beta"]
    return lambda: run(x, g, b, GROUPS, EPS, "")


BENCH = register_op_bench(OpBench(
    op="spade_norm",
    cases=cases,
    make_inputs=make_inputs,
    providers=(
        Provider("seed_eager", _seed, note="spade_norm_reference in eager PyTorch"),
        Provider("torch_compile", _compiled, compiled=True,
                 note="torch.compile(spade_norm_reference, fullgraph=True), mode default"),
        Provider("facegen_cpu", _public("cpu"), note='facegen_rt.ops.spade_norm(backend="cpu")'),
        Provider("facegen_cpu_kernel", _kernel, note=KERNEL_NOTE.format(op="spade_norm")),
        Provider("facegen_reference", _public("reference"), default=False,
                 note='facegen_rt.ops.spade_norm(backend="reference"): the custom op '
                      "around the reference (dispatch overhead)"),
    ),
    formulas="bytes = 4 * B*C*H*W * itemsize (x, gamma, beta read once; out written once); "
             "GB/s = bytes / median; '% same-size copy BW' compares with dst.copy_(src) on "
             "src + dst of the same total bytes (criterion: facegen_cpu >= 50 %).",
))
