"""The session step and the official loop formulation agree from the same state."""

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


@pytest.mark.parametrize("warm,with_mask,backend", [
    (False, False, "reference"), (True, False, "reference"), (True, True, "reference"),
    (True, True, None),  # the session on its automatic backends (C++ where built)
])
def test_session_step_matches_official_loop(noisy_generator, warm, with_mask, backend):
    G = noisy_generator
    with forced_backend(backend):
        s = DragSession(G, seed=12, lr=2e-3)
        a = s.add_point((50, 60), (66, 70))
        b = s.add_point((90, 30), (80, 22.5))
        editable = None
        if with_mask:
            editable = torch.zeros(128, 128)
            editable[20:100, 20:110] = 1
            s.set_mask(editable)
        if warm:  # references captured, Adam moments non-zero
            s.run(2)
        loop = OfficialDragLoop.from_session(s)
        points = [_rc(p.handle) for p in s.points]
        targets = [_rc(p.target) for p in s.points]
        mask = None if editable is None else 1 - editable
        for _ in range(3):
            got = s.step()
            want = loop.step(points, targets, mask)
            assert [_rc(got.handles[a]), _rc(got.handles[b])] == want["points"]
            assert got.done == want["stop"]
            torch.testing.assert_close(got.loss, want["loss"], rtol=1e-4, atol=1e-7)
            if with_mask:
                torch.testing.assert_close(got.loss_mask, want["loss_fix"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(s.ws(), loop.w.detach()[:, :], rtol=0, atol=1e-6)
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
