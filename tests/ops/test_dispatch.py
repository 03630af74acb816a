"""The eager shortcuts past the custom-op dispatcher (facegen_rt.ops._dispatch).

Plain eager calls run an op's body directly, or under autograd an autograd.Function
with the op's own formulas; everything else goes through the torch.library op. The
routes must give identical results, and the shortcuts must step aside whenever the
dispatcher has work to do.
"""

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode

from facegen_rt.ops import (bias_act, masked_cross_attention, modulated_conv2d,
                            setup_filter, shared_self_attention, spade_norm, upfirdn2d)
from facegen_rt.ops._dispatch import direct_call_allowed


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
