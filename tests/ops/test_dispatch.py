"""The eager shortcuts past the custom-op dispatcher (facegen_rt.ops._dispatch).

Plain eager calls run an op's body directly, or under autograd an autograd.Function
with the op's own formulas; everything else goes through the torch.library op. The
routes must give identical results, and the shortcuts must step aside whenever the
dispatcher has work to do.
"""

import contextlib
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode

from facegen_rt.ops import (bias_act, masked_cross_attention, modulated_conv2d, nan_checks,
                            setup_filter, shared_self_attention, spade_norm, upfirdn2d)
from facegen_rt.ops._dispatch import direct_call_allowed

from .parity import skip_unless_available


def _spade_args():
    x, gamma, beta = (torch.randn(2, 8, 5, 7) for _ in range(3))
    return (x, gamma, beta), {"groups": 4}


def _masked_args():
    mask = torch.nn.functional.one_hot(torch.randint(0, 5, (1, 33)), 5).float()
    q = torch.randn(1, 2, 33, 32)
    k, v = (torch.randn(1, 2, 5, 32) for _ in range(2))
    return (q, k, v, mask), {}


def _shared_args():
    q, k_self, v_self = (torch.randn(1, 2, 6, 8) for _ in range(3))
    k_ref, v_ref = (torch.randn(1, 2, 10, 8) for _ in range(2))
    return (q, k_self, v_self, k_ref, v_ref, torch.rand(1, 10) < 0.5), {}


OPS = {
    "spade_norm": (spade_norm, _spade_args),
    "masked_cross_attention": (masked_cross_attention, _masked_args),
    "shared_self_attention": (shared_self_attention, _shared_args),
}


class _PassThrough(TorchFunctionMode):
    """A function mode that changes nothing: it only makes calls take the op route."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(OPS))
def test_direct_route_equals_dispatched_op(name):
    public, make = OPS[name]
    args, kw = make()
    assert direct_call_allowed(*args)
    direct = public(*args, **kw)
    # Through the op, to the same backend (chosen automatically: the C++ kernel where
    # it is built).
    with _PassThrough():
        assert not direct_call_allowed(*args)
        routed = public(*args, **kw)
    assert torch.equal(routed, direct)
    # Parameters dispatch as plain tensors do (no __torch_function__ of their own).
    assert direct_call_allowed(torch.nn.Parameter(args[0], requires_grad=False), *args[1:])


def _modconv_args():
    x = torch.randn(2, 4, 7, 7)
    weight = torch.nn.Parameter(torch.randn(3, 4, 3, 3))
    styles = torch.randn(2, 4) + 1
    noise = torch.randn(2, 1, 14, 14)
    kw = dict(up=2, padding=1, resample_filter=setup_filter([1, 3, 3, 1]), fused_modconv=False)
    return (x, weight, styles, noise), kw


def _bias_act_args():
    return (torch.randn(2, 5, 6), torch.randn(5)), dict(act="lrelu", clamp=1.0)


def _upfirdn_args():
    return (torch.randn(2, 3, 7, 6),), dict(f=setup_filter([1, 3, 3, 1]), up=2, padding=2)


DIFFERENTIABLE = {
    "modulated_conv2d": (modulated_conv2d, _modconv_args),
    "bias_act": (bias_act, _bias_act_args),
    "upfirdn2d": (upfirdn2d, _upfirdn_args),
}


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_eager_autograd_route_equals_dispatched_op(name):
    """Under autograd, eager calls run an autograd.Function with the op's own formulas;
    values and gradients must equal those of the custom op's autograd node."""
    public, make = DIFFERENTIABLE[name]
    args, kw = make()

    def run(route_through_op):
        leaves = [a.detach().requires_grad_() for a in args]
        with _PassThrough() if route_through_op else contextlib.nullcontext():
            out = public(*leaves, **kw)
        node = type(out.grad_fn).__name__
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        return out.detach(), grads, node

    out, grads, node = run(False)
    out_op, grads_op, node_op = run(True)
    assert node == f"{name}Backward" and node_op != node
    assert torch.equal(out, out_op)
    for g, g_op in zip(grads, grads_op):
        assert torch.equal(g, g_op)


@pytest.mark.parametrize("name", sorted(OPS))
def test_shortcut_steps_aside_for_the_dispatcher(name):
    public, make = OPS[name]
    args, kw = make()
    # autograd must see the op node (and its refusal to differentiate)
    grad_args = (args[0].detach().requires_grad_(),) + tuple(args[1:])
    assert not direct_call_allowed(*grad_args)
    with torch.no_grad():
        assert direct_call_allowed(*grad_args)
    # fake tensors reach the op's register_fake
    mode = FakeTensorMode()
    with mode:
        fake_args = tuple(mode.from_tensor(a) for a in args)
        assert not direct_call_allowed(*fake_args)
        out = public(*fake_args, **kw)
    assert out.shape == args[0].shape and out.dtype == args[0].dtype


def _python_route_calls(public, monkeypatch) -> list:
    """Records each backend selection of ``public``'s Python route (the C++ entry of
    plain eager calls selects nothing)."""
    table = sys.modules[public.__module__].BACKENDS
    calls, select = [], table.select
    monkeypatch.setattr(table, "select", lambda *a: calls.append(a) or select(*a))
    return calls


@pytest.mark.parametrize("name", sorted(OPS))
def test_plain_eager_call_goes_straight_to_the_kernel(name, monkeypatch):
    """A plain eager CPU call that would run the cpu backend (chosen automatically or
    named) runs the C++ entry, which gives exactly what the Python route gives."""
    skip_unless_available("cpu")
    public, make = OPS[name]
    args, kw = make()
    with _PassThrough():
        through_python = public(*args, backend="cpu", **kw)
    calls = _python_route_calls(public, monkeypatch)
    assert torch.equal(public(*args, **kw), through_python)
    assert torch.equal(public(*args, backend="cpu", **kw), through_python)
    monkeypatch.setenv("FACEGEN_BACKEND", "cpu")
    assert torch.equal(public(*args, **kw), through_python)
    assert calls == []


def _float64(args):
    return tuple(a.double() if a.is_floating_point() else a for a in args)


# Calls the C++ entry must leave to the Python route: (how to change the call, expected
# error or None).
STEP_ASIDE = {
    "another backend named": (lambda args, kw: (args, dict(kw, backend="reference")), None),
    "float64 inputs": (lambda args, kw: (_float64(args), kw), None),
    "autograd tracks an input": (
        lambda args, kw: ((args[0].detach().requires_grad_(),) + args[1:], kw), None),
    "a wrong shape": (lambda args, kw: ((args[0][:, :, 1:],) + args[1:], kw), ValueError),
}


@pytest.mark.filterwarnings("ignore:facegen_rt.*using the 'reference' backend")
@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("case", sorted(STEP_ASIDE) + ["environment", "NaN checks",
                                                       "function mode"])
def test_kernel_entry_leaves_other_calls_to_the_python_route(name, case, monkeypatch):
    skip_unless_available("cpu")
    public, make = OPS[name]
    args, kw = make()
    error = None
    context = contextlib.nullcontext()
    if case in STEP_ASIDE:
        change, error = STEP_ASIDE[case]
        args, kw = change(args, kw)
    elif case == "environment":
        monkeypatch.setenv("FACEGEN_BACKEND", "reference")
    elif case == "NaN checks":
        context = nan_checks(True)
    else:
        context = _PassThrough()
    calls = _python_route_calls(public, monkeypatch)
    with context:
        if error is not None:
            with pytest.raises(error, match=name):
                public(*args, **kw)
            return
        public(*args, **kw)
    assert len(calls) == 1


def test_masked_attention_entry_leaves_mask_conversion_to_python(monkeypatch):
    """A mask of another dtype (here bool) is converted by the Python route; an integer
    scale goes there too. Both give what the float mask and scale give."""
    skip_unless_available("cpu")
    (q, k, v, mask), _ = _masked_args()
    expected = masked_cross_attention(q, k, v, mask, 1.0)
    calls = _python_route_calls(masked_cross_attention, monkeypatch)
    assert torch.equal(masked_cross_attention(q, k, v, mask.bool(), 1.0), expected)
    assert torch.equal(masked_cross_attention(q, k, v, mask, 1), expected)
    assert len(calls) == 2
