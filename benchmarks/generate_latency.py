"""End-to-end SCA-DM generation latency at 128^2, batch 1: style encoding of the
reference, the sampler's UNet evaluations and the VQ decoder, i.e. one
``SemanticPipeline.generate`` call with the bundled example mask and face.

Rows (randomly initialised "small" preset, at least as large as the models trained for
the bundle so far: latency does not depend on the weights):

    seed_eager   the teacher, DDIM 50 steps with classifier-free guidance (2 UNet
                 evaluations per step), ops on their reference backend (the pipeline's
                 per-run caches stay on)
    ddim50       the same on the fused ops
    dpmpp4       the teacher, DPM-Solver++(2M) 4 steps, guidance
    lcm4 / lcm2 / lcm1  a guidance-embedded student (the distillation's student
                 architecture: one UNet evaluation per step, guidance as an input)
                 with the consistency sampler at 4 / 2 / 1 steps

float32 and bfloat16 (the pipeline's compute dtype). The issue's latency bar applies to
lcm4: median <= 0.5 s on this CPU.
"""

from __future__ import annotations

import functools

import torch

from facegen_rt.distill.guidance import GuidanceConditionedUNet
from facegen_rt.ops import forced_backend
from facegen_rt.pipelines.semantic import SemanticPipeline, bundled_example

from .harness import Case, OpBench, Provider, register_op_bench, register_suite, run_op_bench

OP = "generate_128"
GUIDANCE = 3.0


def cases(quick: bool) -> list[Case]:
    return [Case(label="tiny B1" if quick else "small B1",
                 params={"preset": "tiny" if quick else "small"})]


@functools.lru_cache(maxsize=4)
def _pipeline(preset: str, dtype: torch.dtype, student: bool) -> SemanticPipeline:
    pipe = SemanticPipeline.from_preset(preset, seed=0, dtype=dtype)
    if student:
        pipe.unet = GuidanceConditionedUNet(pipe.unet).to(dtype)
    return pipe


def make_inputs(case: Case, dtype: torch.dtype, gen: torch.Generator) -> dict:
    preset = case.params["preset"]
    size = _pipeline(preset, dtype, False).image_size
    example = bundled_example(size)
    if example is None:  # the tiny preset's images are smaller than the bundled examples
        import torch.nn.functional as F
        image, labels = bundled_example(128)
        labels = F.interpolate(torch.from_numpy(labels)[None, None].float(), size=(size, size),
                               mode="nearest")[0, 0].to(torch.uint8).numpy()
        image = (F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(),
                               size=(size, size), mode="area")[0].permute(1, 2, 0)
                 .round().to(torch.uint8).numpy())
        example = image, labels
    return {"preset": preset, "dtype": dtype, "image": example[0], "labels": example[1]}


def _generate(student: bool, sampler: str, steps: int, backend=None):
    def build(inp: dict):
        pipe = _pipeline(inp["preset"], inp["dtype"], student)
        image, labels = inp["image"], inp["labels"]

        def run():
            with forced_backend(backend):
                return pipe.generate(labels, reference=image, reference_mask=labels,
                                     sampler=sampler, steps=steps, guidance=GUIDANCE,
                                     seed=0).images
        return run
    return build


BENCH = register_op_bench(OpBench(
    op=OP,
    cases=cases,
    make_inputs=make_inputs,
    providers=(
        Provider("seed_eager", _generate(False, "ddim", 50, "reference"),
                 note="teacher, DDIM 50 + CFG, reference ops (the pipeline still caches per run)"),
        Provider("ddim50", _generate(False, "ddim", 50), note="teacher, DDIM 50 + CFG, fused ops"),
        Provider("dpmpp4", _generate(False, "dpmpp2m", 4), note="teacher, DPM-Solver++(2M) 4 + CFG"),
        Provider("lcm4", _generate(True, "lcm", 4), note="student, consistency sampler, 4 steps"),
        Provider("lcm2", _generate(True, "lcm", 2), note="student, 2 steps"),
        Provider("lcm1", _generate(True, "lcm", 1), note="student, 1 step"),
    ),
    formulas="One generate() call per timing: style encoding, every UNet evaluation of the "
             "sampler, VQ decoding. Random weights (the latency does not depend on them); "
             "outputs differ between rows by design (other samplers and models).",
))


@register_suite("generate")
def generate_suite(ctx) -> list:
    """End-to-end SCA-DM generation latency at 128^2: teacher samplers vs the distilled student."""
    return run_op_bench(ctx, BENCH, "generate")
