"""The eager shortcut past the custom-op dispatcher (facegen_rt.ops._dispatch).

Plain eager calls run an op's body directly; everything else goes through the
torch.library op. Both routes must give identical results, and the shortcut must
step aside whenever the dispatcher has work to do.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from facegen_rt.ops import masked_cross_attention, shared_self_attention, spade_norm
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


@pytest.mark.parametrize("name", sorted(OPS))
def test_direct_route_equals_dispatched_op(name):
    public, make = OPS[name]
    args, kw = make()
    assert direct_call_allowed(*args)
    direct = public(*args, **kw)
    # A Parameter is a tensor subclass: the call goes through the op, to the same
    # backend (chosen automatically: the C++ kernel where it is built).
    param_args = (torch.nn.Parameter(args[0], requires_grad=False),) + tuple(args[1:])
    assert not direct_call_allowed(*param_args)
    assert torch.equal(public(*param_args, **kw), direct)


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
