"""Op suites: one module per op (cases, inputs, providers, FLOP/byte formulas).

Importing this package registers the suite "ops" (all three ops) and one suite per
op ("spade_norm", "masked_cross_attention", "shared_self_attention").
"""

from __future__ import annotations

from ..harness import Record, RunContext, register_suite, run_op_bench
from . import masked_cross_attention, shared_self_attention, spade_norm

BENCHES = (spade_norm.BENCH, masked_cross_attention.BENCH, shared_self_attention.BENCH)


@register_suite("ops")
def ops_suite(ctx: RunContext) -> list[Record]:
    """The fused ops against the seed's eager formulation, torch.compile and SDPA."""
    records: list[Record] = []
    for bench in BENCHES:
        records += run_op_bench(ctx, bench, "ops")
    return records
