"""The multi-step consistency sampler: schedule, boundary conditions, errors, and a
distilled student through SemanticPipeline.generate (and the generate CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegen_rt.distill import GuidanceConditionedUNet, export_student, save_student
from facegen_rt.pipelines.semantic import SemanticPipeline
from facegen_rt.sampling import ConsistencySampler, NoiseSchedule, Sampler, get_sampler
from facegen_rt.sampling.consistency import SUPPORTED_STEPS, boundary_coefficients

SCHED = NoiseSchedule.scadm()
S = 64  # tiny preset image size


def face_mask(seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 19, (1, 1, 8, 8), generator=g).float()
    return F.interpolate(coarse, size=(S, S), mode="nearest")[0, 0].long()


def refs():
    g = torch.Generator().manual_seed(5)
    return torch.rand(2, 3, S, S, generator=g), torch.stack([face_mask(1), face_mask(2)])


def test_documented_schedule():
    smp = get_sampler("lcm")
    assert isinstance(smp, ConsistencySampler) and isinstance(smp, Sampler)
    assert smp.timesteps(1, SCHED) == [981]
    assert smp.timesteps(2, SCHED) == [981, 481]
    assert smp.timesteps(4, SCHED) == [981, 741, 481, 241]
    assert smp.timesteps(8, SCHED) == [981, 861, 741, 621, 481, 361, 241, 121]
    assert [smp.num_model_calls(s, SCHED) for s in SUPPORTED_STEPS] == list(SUPPORTED_STEPS)
    c_skip, c_out = boundary_coefficients(torch.tensor([0, 1, 981]))
    assert c_skip[0] == 1 and c_out[0] == 0 and c_out[1] > 0.99 and c_skip[2] < 1e-5


@pytest.mark.parametrize("steps", SUPPORTED_STEPS)
def test_exact_denoiser_returns_the_data(steps):
    """With the exact eps of a known x0 every step maps to (almost) x0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=g)
    abar = SCHED.alphas_cumprod

    def oracle(x, t):
        a = abar[t].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    seen = []
    out = get_sampler("lcm").sample(oracle, x0.shape, generator=torch.Generator().manual_seed(1),
                                    steps=steps, schedule=SCHED,
                                    callback=lambda i, t, x, f: seen.append(t))
    torch.testing.assert_close(out, x0, rtol=1e-3, atol=1e-3)
    assert len(seen) == steps


def test_bad_inputs_raise_clear_errors():
    smp = get_sampler("lcm")
    for steps in (0, 3, 16, 2.0, True):
        with pytest.raises(ValueError, match=r"runs \[1, 2, 4, 8\] steps"):
            smp.num_model_calls(steps, SCHED)
    with pytest.raises(ValueError, match="unknown sampler 'lcm2'"):
        get_sampler("lcm2")
    with pytest.raises(ValueError, match="eta applies to DDIM only"):
        get_sampler("lcm", eta=0.5)
    with pytest.raises(ValueError, match="grid_steps"):
        ConsistencySampler(grid_steps=0)
    with pytest.raises(ValueError, match="exceeds"):
        ConsistencySampler(grid_steps=2).timesteps(4, SCHED)


def test_teacher_with_cfg_through_generate(teacher):
    """A model without a guidance embedding gets classifier-free guidance as usual."""
    calls = []
    h = teacher.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        out = teacher.generate(face_mask(), *refs(), sampler="lcm", steps=2, guidance=2.0, seed=0)
    finally:
        h.remove()
    assert out.info["sampler"] == "lcm" and out.info["model_calls"] == 2
    assert calls == [2, 2]  # batched [uncond; cond]
    with pytest.raises(ValueError, match=r"runs \[1, 2, 4, 8\] steps"):
        teacher.generate(face_mask(), *refs(), sampler="lcm", steps=50)
    with pytest.raises(ValueError, match="unknown sampler"):
        teacher.generate(face_mask(), *refs(), sampler="lmc", steps=4)


@pytest.fixture(scope="module")
def student_pipe(trained, teacher, tmp_path_factory):
    """The trained fixture's student saved as a bundle and loaded back."""
    out = tmp_path_factory.mktemp("student_full")
    save_student(out, teacher.config, trained.export(), teacher.style_encoder, teacher.vq,
                 prediction=teacher.prediction, default_guidance=2.0,
                 consistency={"sampler": trained.cfg.sampler_options(), "steps": 4})
    return SemanticPipeline.from_pretrained(out)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_student_through_generate(student_pipe, steps):
    assert isinstance(student_pipe.unet, GuidanceConditionedUNet)
    assert student_pipe.default_guidance == 2.0
    ref, ref_mask = refs()
    calls = []
    h = student_pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: calls.append(kw.get("guidance")), with_kwargs=True)
    try:
        kw = dict(reference=ref, reference_mask=ref_mask, region_sources={"hair": 1},
                  sampler="lcm", steps=steps, seed=3, guidance=3.0)
        a = student_pipe.generate(face_mask(), **kw)
        b = student_pipe.generate(face_mask(), **kw)
    finally:
        h.remove()
    assert torch.equal(a.images, b.images) and torch.isfinite(a.latents).all()
    assert a.info["model_calls"] == steps and len(a.step_latency) == steps
    assert calls == [3.0] * (2 * steps)  # the scale goes to the student, no CFG branch
    c = student_pipe.generate(face_mask(), **dict(kw, seed=4))
    assert not torch.equal(a.latents, c.latents)
    d = student_pipe.generate(face_mask(), **dict(kw, use_cache=False, cfg_batched=False))
    torch.testing.assert_close(d.latents, a.latents, rtol=1e-4, atol=1e-3)


def test_student_matches_the_trained_module(student_pipe, trained):
    """The bundle round trip keeps the student (and its guidance embedding) exactly."""
    live = export_student(trained.student)
    for (n, a), (_, b) in zip(live.state_dict().items(), student_pipe.unet.state_dict().items()):
        assert torch.equal(a, b), n


def test_lora_student_bundle_and_generate_cli(student_bundle, tmp_path):
    from PIL import Image

    from facegen_rt.pipelines.generate_cli import generate_main

    pipe = SemanticPipeline.from_pretrained(student_bundle)
    doc = json.loads((student_bundle / "pipeline.json").read_text())
    assert pipe.consistency["sampler"] == doc["consistency"]["sampler"]
    out = pipe.generate(face_mask(), *refs(), sampler="lcm", steps=4, seed=0)
    assert out.images.shape == (1, 3, S, S) and out.info["guidance"] == doc["guidance"]

    mask_png, ref_png, ref_mask_png = (tmp_path / n for n in ("m.png", "r.png", "rm.png"))
    Image.fromarray(face_mask().numpy().astype(np.uint8), mode="L").save(mask_png)
    Image.fromarray((refs()[0][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(ref_png)
    Image.fromarray(face_mask(1).numpy().astype(np.uint8), mode="L").save(ref_mask_png)
    args = ["--model", str(student_bundle), "--mask", str(mask_png), "--reference", str(ref_png),
            "--reference-mask", str(ref_mask_png), "--sampler", "lcm", "--no-progress"]
    assert generate_main(args + ["--out", str(tmp_path / "o")]) == 0
    info = json.loads((tmp_path / "o" / "generate.json").read_text())
    assert info["sampler"] == "lcm" and info["steps"] == 4 and info["model_calls"] == 4
    assert generate_main(args + ["--steps", "3", "--out", str(tmp_path / "bad")]) == 2
