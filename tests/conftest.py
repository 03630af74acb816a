"""Test session setup.

Triton kernels run on CPU tensors under the interpreter. Triton reads
TRITON_INTERPRET when a kernel is decorated, so it is set before any kernel module
is imported.

Every run draws fresh random inputs: the session seed is random unless
FACEGEN_TEST_SEED is set, and it is printed in the report header so a failure can
be replayed.
"""

import contextlib
import os
import random
import zlib

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

SEED = int(os.environ.get("FACEGEN_TEST_SEED", random.randrange(2**31)))


def pytest_report_header(config):
    return f"facegen test seed: {SEED} (FACEGEN_TEST_SEED={SEED} replays this run)"


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    torch.manual_seed((SEED + zlib.crc32(request.node.nodeid.encode())) % (2**31))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` for the duration. Packages of many small
    ops run on one: a second thread saves little there and, on a machine busy with
    other jobs, OpenMP threads waiting for a descheduled peer slow them down tenfold."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
