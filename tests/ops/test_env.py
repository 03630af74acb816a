"""The environment switches of the op library, read through facegen_rt.ops._env."""

import os

import pytest
import torch

from facegen_rt.ops import BackendUnavailable, spade_norm
from facegen_rt.ops._env import EnvVar


def test_env_var_reads_what_os_environ_reads(monkeypatch):
    var = EnvVar("FACEGEN_TEST_ENV_VAR")
    monkeypatch.delenv(var.name, raising=False)
    assert var.get() is None
    monkeypatch.setenv(var.name, "cpu")
    assert var.get() == "cpu" == os.environ.get(var.name)
    os.environ[var.name] = "réf"  # assigned directly, non-ASCII
    assert var.get() == "réf"
    del os.environ[var.name]
    assert var.get() is None


def _inputs():
    x = torch.randn(1, 8, 3, 5)
    return x, torch.randn_like(x), torch.randn_like(x)


def test_backend_variables_force_a_backend(monkeypatch):
    x, g, b = (t.double() for t in _inputs())
    # The C++ backend refuses float64: asked for by name, it raises.
    monkeypatch.setenv("FACEGEN_BACKEND", "cpu")
    with pytest.raises(BackendUnavailable, match="backend 'cpu' was requested.*float64"):
        spade_norm(x, g, b, groups=4)
    # A per-op variable wins over the global one.
    monkeypatch.setenv("FACEGEN_BACKEND_SPADE_NORM", "reference")
    assert spade_norm(x, g, b, groups=4).dtype == torch.float64


def test_nan_check_variable(monkeypatch):
    x, g, b = _inputs()
    g[0, 1, 2, 3] = float("nan")
    monkeypatch.setenv("FACEGEN_CHECK_NAN", "1")
    with pytest.raises(ValueError, match="gamma contains NaN"):
        spade_norm(x, g, b, groups=4)
    monkeypatch.setenv("FACEGEN_CHECK_NAN", "0")
    assert torch.isnan(spade_norm(x, g, b, groups=4)).any()
