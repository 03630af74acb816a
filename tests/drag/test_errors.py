"""Clear errors for bad input."""

import math

import numpy as np
import pytest
import torch

from facegen_rt.drag import DragSession, UnknownPointError


@pytest.fixture
def session(generator):
    return DragSession(generator, seed=0)


@pytest.mark.parametrize("handle,match", [
    ((128, 10), "outside the 128x128 image"),
    ((-1, 10), "outside"),
    ((10, 200.5), "outside"),
    ((math.nan, 3), "non-finite"),
    ((3, math.inf), "non-finite"),
    ((1, 2, 3), r"\(x, y\) pair"),
    ("ab", r"\(x, y\) pair"),
    (("a", 1), "numbers"),
])
def test_bad_points(session, handle, match):
    with pytest.raises(ValueError, match=match):
        session.add_point(handle, (5, 5))
    with pytest.raises(ValueError, match=match):
        session.add_point((5, 5), handle)
    assert session.points == [] and not session.can_undo  # nothing changed


def test_points_accept_arrays_and_tensors(session):
    pid = session.add_point(np.array([10.4, 20.6]), torch.tensor([30.0, 40.0]))
    assert session.points[0].handle == (10, 21) and session.points[0].target == (30.0, 40.0)
    assert pid == 0


def test_unknown_point_id(session):
    pid = session.add_point((5, 5), (9, 9))
    for call in (lambda: session.move_point(pid + 1, target=(1, 1)),
                 lambda: session.remove_point(42), lambda: session.remove_point("x")):
        with pytest.raises(UnknownPointError, match="no point with id"):
            call()
    with pytest.raises(KeyError):  # UnknownPointError is a KeyError
        session.remove_point(-1)
    with pytest.raises(ValueError, match="needs a handle or a target"):
        session.move_point(pid)


@pytest.mark.parametrize("mask,match", [
    (torch.ones(64, 64), r"shape \(128, 128\)"),
    (torch.ones(128, 127), r"shape \(128, 128\)"),
    (torch.full((128, 128), 2.0), r"in \[0, 1\]"),
    (torch.full((128, 128), math.nan), "non-finite"),
    ("mask", "tensor or array"),
])
def test_bad_masks(session, mask, match):
    with pytest.raises(ValueError, match=match):
        session.set_mask(mask)


def test_good_masks(session):
    session.set_mask(np.ones((128, 128), dtype=bool))
    session.set_mask(torch.zeros(1, 1, 128, 128))
    session.set_mask(None)
    assert session.mask is None


def test_step_without_points(session):
    with pytest.raises(ValueError, match="add at least one point"):
        session.step()


def test_generator_without_the_block(generator):
    with pytest.raises(ValueError, match="no synthesis block 'b256'"):
        DragSession(generator, feature_block="b256")
    with pytest.raises(ValueError, match="out of range"):
        DragSession(generator, feature_block=6)
    with pytest.raises(TypeError, match="StyleGAN2 Generator"):
        DragSession(torch.nn.Linear(2, 2))


def test_bad_settings(generator):
    with pytest.raises(ValueError, match="render_every"):
        DragSession(generator, render_every=-1)
    with pytest.raises(ValueError, match="w must have shape"):
        DragSession(generator, w=torch.zeros(3, 16))
    with pytest.raises(ValueError, match="max_steps"):
        DragSession(generator).run(-1)
