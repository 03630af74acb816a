"""Consistency distillation: the loss falls, resume continues bit for bit, LoRA merges,
the guidance embedding starts neutral, the CLI records its run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facegen_rt.distill import (DistillConfig, GuidanceConditionedUNet, LoRAConv2d, LoRALinear,
                                add_lora, export_student, merge_lora, pseudo_huber)
from facegen_rt.distill.objective import ddim_teacher_step
from facegen_rt.distill.student import build_student
from facegen_rt.models.sca_dm import SCADMUNet

from .conftest import make_distiller


def unet_inputs(teacher, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = teacher.config
    x = torch.randn(B, cfg.unet.in_channels, cfg.latent_size, cfg.latent_size, generator=g)
    labels = torch.randint(0, 19, (B, cfg.image_size, cfg.image_size), generator=g)
    seg = torch.nn.functional.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    ctx = torch.randn(B, 19, cfg.unet.context_dim, generator=g)
    return x, torch.tensor([981, 241][:B]), ctx, seg


def test_loss_falls(trained):
    losses = np.array(trained.losses)
    assert len(losses) == 30 and np.isfinite(losses).all()
    first, last = losses[:8].mean(), losses[-8:].mean()
    assert last < 0.6 * first, (first, last)


def test_resume_gives_identical_continuation(teacher, tmp_path):
    straight = make_distiller(teacher, batch=2, mode="lora")
    straight.run(max_steps=4, progress=False)

    first = make_distiller(teacher, batch=2, mode="lora")
    first.run(max_steps=2, progress=False, checkpoint=tmp_path / "ckpt")
    resumed = make_distiller(teacher, batch=2, mode="lora")
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.step == 2
    resumed.run(max_steps=4, progress=False)

    assert resumed.losses == straight.losses
    for (n, a), (_, b) in zip(straight.student.named_parameters(),
                              resumed.student.named_parameters()):
        assert torch.equal(a, b), n
    for (n, a), (_, b) in zip(straight.target.module.named_parameters(),
                              resumed.target.module.named_parameters()):
        assert torch.equal(a, b), n


def test_checkpoint_of_another_recipe_is_refused(teacher, tmp_path):
    d = make_distiller(teacher, batch=2)
    d.save_checkpoint(tmp_path)
    other = make_distiller(teacher, batch=2, skip=2)
    with pytest.raises(ValueError, match="another recipe config"):
        other.load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no distillation checkpoint"):
        other.load_checkpoint(tmp_path / "missing")


def test_lora_student_merges_to_the_same_outputs(teacher):
    torch.manual_seed(0)
    student = build_student(teacher.unet, "lora", lora_rank=3)
    adapters = [m for m in student.modules() if isinstance(m, (LoRALinear, LoRAConv2d))]
    assert adapters and all(not p.requires_grad for n, p in student.named_parameters()
                            if "lora_" not in n)
    with torch.no_grad():  # a trained-looking adapter: nonzero up factors
        for m in adapters:
            m.lora_up.normal_(0, 0.05)
    x, t, ctx, seg = unet_inputs(teacher)
    with torch.no_grad():
        before = student.eval()(x, t, ctx, seg)
        merged = export_student(student)
        after = merged(x, t, ctx, seg)
        ref = teacher.unet(x, t, ctx, seg)
    assert not any(isinstance(m, (LoRALinear, LoRAConv2d)) for m in merged.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert (after - ref).abs().max() > 1e-3  # the adapters do change the model
    plain = SCADMUNet(teacher.config.unet)  # merged keys are a plain UNet's keys
    plain.load_state_dict(merged.state_dict(), strict=True)


def test_lora_layers_and_errors():
    lin = torch.nn.Linear(5, 3)
    wrapped = LoRALinear(lin, rank=2)
    x = torch.randn(4, 5)
    torch.testing.assert_close(wrapped(x), lin(x))  # zero-initialised up factor
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(lin, rank=0)
    with pytest.raises(ValueError, match="groups=1"):
        LoRAConv2d(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="unknown LoRA target"):
        add_lora(torch.nn.Sequential(lin), target="nope")
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Linear(4, 4))
    assert add_lora(net, rank=1) == ["0", "1"]
    with torch.no_grad():
        net[0].lora_up.fill_(0.1)
    x = torch.randn(1, 2, 4, 4)
    y = net(x)
    merge_lora(net)
    assert isinstance(net[0], torch.nn.Conv2d) and not isinstance(net[0], LoRAConv2d)
    torch.testing.assert_close(net(x), y)


def test_guidance_embedding_starts_as_the_teacher(teacher):
    student = build_student(teacher.unet, "full", guidance_embedding=True)
    assert isinstance(student, GuidanceConditionedUNet)
    x, t, ctx, seg = unet_inputs(teacher)
    with torch.no_grad():
        ref = teacher.unet(x, t, ctx, seg)
        torch.testing.assert_close(student(x, t, ctx, seg, guidance=5.0), ref)
        student.guidance_embed.mlp[2].weight.normal_(0, 0.1)
        a = student(x, t, ctx, seg, guidance=torch.tensor([1.0, 4.0]))
        b = student(x, t, ctx, seg, guidance=torch.tensor([2.0, 4.0]))
    assert (a[0] - b[0]).abs().max() > 0 and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="guidance"):
        student(x, t, ctx, seg)
    with torch.no_grad():  # the hook is gone after the call: the inner UNet is plain again
        torch.testing.assert_close(student.unet(x, t, ctx, seg), ref)


def test_recipe_pieces():
    d = torch.tensor([0.0, 3.0])
    assert float(pseudo_huber(d, 1.0)) == pytest.approx((0 + (10 ** 0.5 - 1)) / 2)
    x, eps = torch.randn(2, 3), torch.randn(2, 3)
    same = ddim_teacher_step(x, eps, torch.tensor([0.5, 0.2], dtype=torch.float64),
                             torch.tensor([0.5, 0.2], dtype=torch.float64))
    torch.testing.assert_close(same, x)
    with pytest.raises(ValueError, match="guidance_embedding"):
        DistillConfig(guidance_min=1.0, guidance_max=3.0).validate()
    with pytest.raises(ValueError, match="mode"):
        DistillConfig(mode="half").validate()
    with pytest.raises(ValueError, match="skip"):
        DistillConfig(skip=50).validate()


def test_cli_records_run_and_resumes(student_bundle):
    from facegen_rt.distill.train import main

    doc = json.loads((student_bundle / "distill.json").read_text())
    assert doc["seed"] == 0 and doc["steps"] == 2
    assert doc["command"].startswith("python -m facegen_rt.distill.train --teacher preset:tiny")
    assert doc["data"].startswith("random: 4 items") and doc["budget"]["max_steps"] == 2
    assert (student_bundle / "logs" / "distill.log").is_file()
    assert (student_bundle / "checkpoint" / "state.safetensors").is_file()
    pipeline = json.loads((student_bundle / "pipeline.json").read_text())
    assert pipeline["consistency"]["guidance_embedding"] is True
    assert pipeline["consistency"]["sampler"]["grid_steps"] == 50
    args = ["--teacher", "preset:tiny", "--random-data", "4", "--batch", "2", "--mode", "lora",
            "--lora-rank", "2", "--guidance", "1", "3", "--out", str(student_bundle),
            "--no-progress", "--max-steps", "3"]
    assert main(args) == 2  # an existing checkpoint needs --resume
    assert main(args + ["--resume"]) == 0
    doc = json.loads((student_bundle / "distill.json").read_text())
    assert doc["steps"] == 3 and [r["end_step"] for r in doc["runs"]] == [2, 3]


def test_bf16_autocast_step(teacher):
    d = make_distiller(teacher, batch=2, mode="lora", bf16=True)
    d.run(max_steps=1, progress=False)
    assert np.isfinite(d.losses).all()
    assert all(p.dtype == torch.float32 for p in d.student.parameters())
