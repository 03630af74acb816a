"""DragGAN iteration speed: the official loop formulation against the facegen_rt session.

Both start from the same latent and the same two handle/target pairs and time one drag
iteration per call (successive calls continue the edit):

    seed_eager       facegen_rt.drag.OfficialDragLoop: the renderer's loop, reference
                     ops, the full generator forward (all blocks, the image) every
                     step, backward from the feature block, Adam over all of w
    facegen_session  facegen_rt.drag.DragSession.step(): the generator only up to the
                     feature block, gradients for w alone, ops on their automatic
                     backend (the C++ kernels on CPU)

Cases: the bundled 256^2 SynthFace generator (a skipped row if it is not installed) and config-f
at 512^2 with random weights (seed 0); the quick run uses the "tiny" preset. The
output compared between providers is the latent after the first iteration. Rates are
iterations per second (1000 / median ms).
"""

from __future__ import annotations

import functools

import torch

from facegen_rt.drag import DragSession, OfficialDragLoop
from facegen_rt.models.stylegan2 import Generator
from facegen_rt.weights import BUNDLED_GENERATOR, load_generator

from .harness import Case, OpBench, Provider, Skipped, register_op_bench, register_suite, run_op_bench

OP = "drag_step"


def _case(label: str, preset: str) -> Case:
    return Case(label=label, params={"preset": preset})


def cases(quick: bool) -> list[Case]:
    if quick:
        return [_case("tiny random", "tiny")]
    return [_case("bundled 256^2", "bundled"), _case("config-f 512^2 random", "config-f-512")]


@functools.lru_cache(maxsize=1)
def _generator(preset: str) -> Generator:
    if preset == "bundled":
        return load_generator()
    torch.manual_seed(0)
    return Generator.from_preset(preset).eval()


def _points(res: int) -> list[tuple[tuple[int, int], tuple[float, float]]]:
    """Two (handle, target) pairs in (x, y) pixels, targets ~20 px away at 512^2."""
    s = res / 512
    return [((round(200 * s), round(260 * s)), (216 * s, 272 * s)),
            ((round(320 * s), round(300 * s)), (304 * s, 316 * s))]


def make_inputs(case: Case, dtype: torch.dtype, gen: torch.Generator) -> dict:
    if case.params["preset"] == "bundled" and not BUNDLED_GENERATOR.exists():
        return {"skip": f"the bundled generator {BUNDLED_GENERATOR.name} is not installed"}
    if dtype != torch.float32:
        return {"skip": "drag steps run in float32"}
    G = _generator(case.params["preset"])
    return {"G": G, "points": _points(G.img_resolution)}


def _session(inp: dict) -> DragSession:
    if "skip" in inp:
        raise Skipped(inp["skip"])
    session = DragSession(inp["G"], seed=0)
    for handle, target in inp["points"]:
        session.add_point(handle=handle, target=target)
    return session


def _official(inp: dict):
    session = _session(inp)
    loop = OfficialDragLoop.from_session(session)
    # the loop keeps points as [row, col]
    points = [[p.handle[1], p.handle[0]] for p in session.points]
    targets = [[p.target[1], p.target[0]] for p in session.points]

    def run():
        loop.step(points, targets)
        return loop.w.detach()[:, :6].clone()
    return run


def _facegen(inp: dict):
    session = _session(inp)

    def run():
        session.step()
        return session.ws()[:, :6].clone()
    return run


BENCH = register_op_bench(OpBench(
    op=OP,
    cases=cases,
    make_inputs=make_inputs,
    providers=(
        Provider("seed_eager", _official,
                 note="OfficialDragLoop: full generator forward every step, reference ops"),
        Provider("facegen_session", _facegen,
                 note="DragSession.step(): forward to the feature block only, C++ ops"),
    ),
    formulas="One drag iteration per call; iterations/s = 1000 / median ms.",
))


@register_suite("drag")
def drag_suite(ctx) -> list:
    """DragGAN iteration speed: official loop formulation vs the facegen_rt session."""
    return run_op_bench(ctx, BENCH, "drag")
