"""The session step and the official loop formulation agree from the same state."""

import copy

import pytest
import torch

from facegen_rt.drag import DragSession, OfficialDragLoop
from facegen_rt.ops import forced_backend

from .conftest import drag_config, make_generator


@pytest.fixture(scope="module")
def noisy_generator():
    return make_generator(drag_config(), seed=11, noise=0.1, random_w_avg=True)


def _rc(xy):
    return [xy[1], xy[0]]


def _start(G, backend, with_mask, warm):
    """A session with two points (and the editable mask), after ``warm`` steps."""
    with forced_backend(backend):
        s = DragSession(G, seed=12, lr=2e-3)
        s.add_point((50, 60), (66, 70))
        s.add_point((90, 30), (80, 22.5))
        editable = None
        if with_mask:
            editable = torch.zeros(128, 128, dtype=next(G.parameters()).dtype)
            editable[20:100, 20:110] = 1
            s.set_mask(editable)
        s.run(warm)  # warm > 0: references captured, Adam moments non-zero
    return s, editable


@pytest.mark.parametrize("warm,with_mask,backend", [
    (0, False, "reference"), (2, False, "reference"), (2, True, "reference"),
    (2, True, None),  # the session on its automatic backends (C++ where built)
])
def test_session_step_matches_official_loop(noisy_generator, warm, with_mask, backend):
    G = noisy_generator
    steps = 3
    s, editable = _start(G, backend, with_mask, warm)
    with forced_backend(backend):
        loop = OfficialDragLoop.from_session(s)
        points = [_rc(p.handle) for p in s.points]
        targets = [_rc(p.target) for p in s.points]
        mask = None if editable is None else 1 - editable
        for _ in range(steps):
            got = s.step()
            want = loop.step(points, targets, mask)
            assert [_rc(p.handle) for p in s.points] == want["points"]
            assert got.done == want["stop"]
            torch.testing.assert_close(got.loss, want["loss"], rtol=1e-4, atol=1e-7)
            if with_mask:
                torch.testing.assert_close(got.loss_mask, want["loss_fix"], rtol=1e-4, atol=1e-7)
    if backend == "reference":  # the same ops in the same order: equal up to fp32 noise
        torch.testing.assert_close(s.ws(), loop.w.detach(), rtol=0, atol=1e-6)
    else:
        # Other kernels round differently, and Adam's m / sqrt(v) magnifies gradient
        # rounding where a gradient is small against its history. So compare both with
        # a float64 oracle of the same steps: the session may deviate at most twice as
        # far as the float32 reference loop does, plus a floor.
        oracle, _ = _start(copy.deepcopy(G).double(), "reference", with_mask, warm)
        with forced_backend("reference"):
            oracle.run(steps)
        truth = oracle.ws()
        ref_err = (loop.w.detach().double() - truth).abs().max().item()
        err = (s.ws().double() - truth).abs().max().item()
        assert err <= 2 * ref_err + 1e-7, (err, ref_err)
    # The official loop returns the image and leaves the generator as it found it.
    assert want["image"].shape == (1, 3, 128, 128)
    assert all(not p.requires_grad and p.grad is None for p in G.parameters())


def test_official_loop_uses_reference_ops(noisy_generator, monkeypatch):
    import sys

    mc = sys.modules["facegen_rt.ops.modulated_conv2d"]

    seen = []
    real = mc.BACKENDS.select

    def spy(*args, **kw):
        chosen = real(*args, **kw)
        seen.append(chosen.name)
        return chosen

    monkeypatch.setattr(mc.BACKENDS, "select", spy)
    s = DragSession(noisy_generator, seed=13)
    s.add_point((50, 60), (66, 70))
    loop = OfficialDragLoop.from_session(s)
    loop.step([[60, 50]], [[70, 66]])
    assert seen and set(seen) == {"reference"}
