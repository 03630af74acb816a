"""facegen_rt benchmarks: one harness (benchmarks.harness), machine ceilings
(benchmarks.ceilings) and pluggable suites registered by name (benchmarks.ops, ...).

Run ``python -m benchmarks.run --help``.
"""
