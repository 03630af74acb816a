"""DragSession mechanics: what is optimized, movement, stop rule, render, undo, reset."""

import dataclasses

import pytest
import torch

from facegen_rt.drag import DragSession, resolve_feature_block, to_uint8
from facegen_rt.models.stylegan2 import Generator, get_preset

from .conftest import drag_config, make_generator


def test_feature_block_choice():
    with torch.device("meta"):
        for name in ("config-f-256", "config-f-512", "config-f-1024", "paper256"):
            assert resolve_feature_block(Generator.from_preset(name)) == 5  # b128
        small = Generator.from_preset("small")  # 128^2: b128 is its last block
        tiny = Generator.from_preset("tiny")    # 32^2: nearest to 128 is b32
        g64 = Generator(dataclasses.replace(get_preset("small"), img_resolution=64))
    assert resolve_feature_block(small) == 5
    assert resolve_feature_block(tiny) == 3
    assert resolve_feature_block(g64) == 4
    assert resolve_feature_block(small, "b64") == 4
    assert resolve_feature_block(small, -1) == 5


def test_only_the_first_six_ws_change(generator):
    params = {k: v.clone() for k, v in generator.state_dict().items()}
    s = DragSession(generator, seed=3)
    w0 = s.w0
    s.add_point((60, 64), (75, 70))
    results = s.run(4)
    assert all(r.optimized for r in results)
    ws = s.ws()
    assert torch.equal(ws[:, 6:], w0[:, 6:])
    assert not torch.equal(ws[:, :6], w0[:, :6])
    assert all(not p.requires_grad for p in generator.parameters())
    assert all(torch.equal(v, params[k]) for k, v in generator.state_dict().items())


def test_gradient_reaches_every_used_w(generator):
    """b128 (block 5) reads ws 0..10, so all six optimized vectors get a gradient."""
    s = DragSession(generator, seed=4)
    s.add_point((40, 40), (55, 50))
    s.step()
    changed = (s.ws() - s.w0).abs().amax(dim=2)[0]
    assert (changed[:6] > 0).all()
    assert s.ws_used == 11


@pytest.mark.parametrize("seed", [0, 1])
def test_handles_move_toward_targets(seed):
    G = make_generator(drag_config(), seed=seed)
    s = DragSession(G, seed=seed, lr=2e-3)
    pid = s.add_point((51, 64), (64, 70))
    start = s.points[0].distance()
    results = s.run(40)
    assert results[-1].distances[pid] < 0.5 * start
    if results[-1].done:
        assert results[-1].distances[pid] <= 2 and not results[-1].optimized


def test_stop_rule():
    G = make_generator(drag_config(), seed=0)
    s = DragSession(G, seed=0)
    s.add_point((40, 40), (41, 41.5))  # within max(2/512*128, 2) = 2 px
    w_before = s.ws()
    r = s.step()
    assert r.done and not r.optimized and r.handles[0] == (40, 40)
    assert torch.equal(s.ws(), w_before)
    assert len(s.run(10)) == 1
    s.add_point((80, 80), (100, 80))  # one handle far away: not done
    r = s.step()
    assert not r.done and r.optimized


def test_render_and_render_every(generator):
    s = DragSession(generator, seed=5, render_every=2)
    s.add_point((60, 60), (70, 70))
    images = [r.image for r in s.run(4)]
    assert images[0] is None and images[2] is None
    assert images[1].shape == (3, 128, 128) and images[3] is not None
    want = generator.synthesis(s.ws(), noise_mode="const", fused_modconv=False)[0]
    torch.testing.assert_close(s.render(), want)
    u8 = s.render_uint8()
    assert u8.shape == (128, 128, 3) and u8.dtype == torch.uint8
    grey = torch.full((2, 2, 3), 128, dtype=torch.uint8)
    assert torch.equal(to_uint8(torch.zeros(3, 2, 2)), grey)  # + 128, as DragGAN


def _state(s):
    return (s.ws().clone(), [dataclasses.astuple(p) for p in s.points], s.steps,
            None if s.mask is None else s.mask.clone())


def _same(a, b):
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert (a[3] is None and b[3] is None) or torch.equal(a[3], b[3])


def test_undo_restores_exact_state_and_optimizer(generator):
    s = DragSession(generator, seed=6)
    s.add_point((50, 50), (65, 58))
    s.run(3)
    before = _state(s)
    first = [(r.handles, r.loss) for r in s.run(3)]
    assert s.undo()
    _same(_state(s), before)
    again = [(r.handles, r.loss) for r in s.run(3)]
    assert again == first  # Adam moments restored too: bit-identical steps

    # Consecutive step() calls form one batch.
    after_run = _state(s)
    s.step(), s.step()
    assert s.undo()
    _same(_state(s), after_run)
    assert s.steps == 6

    # Edits undo one at a time.
    pid = s.points[0].id
    base = _state(s)
    s.move_point(pid, target=(70, 60))
    s.set_mask(torch.ones(128, 128))
    q = s.add_point((20, 20), (25, 25))
    s.remove_point(q)
    for _ in range(4):
        assert s.undo()
    _same(_state(s), base)


def test_reset_and_undo_reset(generator):
    s = DragSession(generator, seed=7)
    pid = s.add_point((50, 50), (65, 58))
    m = torch.zeros(128, 128)
    m[64:] = 1
    s.set_mask(m)
    s.run(3)
    after = _state(s)
    s.reset()
    assert torch.equal(s.ws(), s.w0) and s.steps == 0 and s.points == [] and s.mask is None
    assert s.undo()
    _same(_state(s), after)
    s.reset(keep_points=True)
    assert torch.equal(s.ws(), s.w0) and s.points[0].handle == (50, 50)
    assert s.points[0].id == pid and torch.equal(s.mask, m)
    # A fresh optimizer: the same first step as a brand-new session.
    fresh = DragSession(generator, seed=7)
    fresh.add_point((50, 50), (65, 58))
    fresh.set_mask(m)
    assert s.step().loss == fresh.step().loss
    assert torch.equal(s.ws(), fresh.ws())


def test_moving_a_handle_recaptures_references(generator):
    s = DragSession(generator, seed=8)
    pid = s.add_point((50, 50), (65, 58))
    s.run(2)
    s.move_point(pid, handle=(30, 30))
    r = s.step()
    assert r.handles[pid] == (30, 30)  # tracked against its own new feature
    assert s.points[0].origin == (30, 30)


def test_mask_term_keeps_the_fixed_region_closer(generator):
    def run(mask):
        s = DragSession(generator, seed=9, lr=2e-3)
        s.add_point((64, 40), (64, 52))
        s.set_mask(mask)
        r = s.run(8)
        f0 = s._refs.feat0
        f = s._features().detach()
        return r, (f - f0)[..., 16:, :].abs().mean()

    editable = torch.zeros(128, 128, dtype=torch.bool)
    editable[:64] = True
    with_mask, change_masked = run(editable)
    without, change_free = run(None)
    assert with_mask[0].loss_mask is not None and without[0].loss_mask is None
    assert change_masked < change_free


def test_bfloat16_option_runs(generator):
    s = DragSession(generator, seed=10, dtype=torch.bfloat16)
    s.add_point((50, 50), (65, 58))
    r = s.step()
    assert r.optimized and torch.isfinite(s.ws()).all()
    assert s.ws().dtype == torch.float32


def test_run_callback_can_stop(generator):
    s = DragSession(generator, seed=14)
    s.add_point((60, 60), (80, 80))
    seen = []
    results = s.run(10, callback=lambda r: seen.append(r.step) or len(seen) < 3, progress=True)
    assert len(results) == 3 and seen == [1, 2, 3] and s.steps == 3


def test_step_runs_only_up_to_the_feature_block(generator):
    """No block after the feature block and no ToRGB in a step; render runs them all."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
             for name, m in generator.synthesis.named_modules()
             if name.endswith("torgb") or name in ("b64", "b128")]
    try:
        s = DragSession(generator, seed=15, feature_block="b64")
        s.add_point((60, 60), (80, 80))
        s.step()
        assert calls == ["b64"]
        calls.clear()
        s.render()
        assert "b128" in calls and "b128.torgb" in calls
    finally:
        for h in hooks:
            h.remove()
