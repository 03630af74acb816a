"""`facegen-rt info`: every op with every backend's status, and the CPU's bf16 support."""

import os
import subprocess
import sys

import torch

from facegen_rt.info import cpu_bf16_instructions
from facegen_rt.ops import OPS
from facegen_rt.ops._native import cpu_unavailable


def test_info_reports_every_op_and_backend():
    # As a user runs it: without the interpreter switch the tests set.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "facegen_rt.info"], capture_output=True,
                         text=True, check=True, env=env).stdout
    lines = out.splitlines()
    cpu_status = "available" if cpu_unavailable() is None else cpu_unavailable()
    for op in OPS:
        i = lines.index(f"  {op}")
        status = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines[i + 1:i + 4]}
        assert status["reference"] == "available"
        assert status["cpu"] == cpu_status
        if not torch.cuda.is_available():
            assert status["triton"].startswith("unavailable: ")
            assert "TRITON_INTERPRET=1" in status["triton"]
    bf16 = next(ln for ln in lines if ln.startswith("cpu: "))
    assert ("native" in bf16) == bool(cpu_bf16_instructions())
