"""SemanticPipeline: input validation, determinism, region transfer, caches, CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from facegen_rt.pipelines import semantic
from facegen_rt.pipelines.semantic import (BUNDLED_MODEL, SemanticPipeline, bundled_example_mask,
                                           mix_contexts, region_ids)

S = 64  # the tiny preset's image size


@pytest.fixture(scope="module")
def pipe():
    return SemanticPipeline.from_preset("tiny", seed=0)


def face_mask(seed=0):
    """A blocky label map with most classes present."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 19, (1, 1, 8, 8), generator=g).float()
    return torch.nn.functional.interpolate(coarse, size=(S, S), mode="nearest")[0, 0].long()


def refs(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, S, S, generator=g), torch.stack([face_mask(seed + i) for i in range(n)])


def run(pipe, **kw):
    ref, ref_mask = refs()
    args = dict(reference=ref, reference_mask=ref_mask, steps=2, seed=0)
    args.update(kw)
    return pipe.generate(face_mask(), **args)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("mask, message", [
    (torch.zeros(32, 32, dtype=torch.long), "does not match the model's 64x64"),
    (torch.full((S, S), 19), r"unknown labels \[19\]"),
    (torch.full((S, S), -1), r"unknown labels \[-1\]"),
    (torch.full((S, S), 2.5), "fractional values"),
    (torch.full((S, S), float("nan")), "NaN"),
    (torch.zeros(2, 3, S, S), "label map"),
])
def test_mask_errors(pipe, mask, message):
    with pytest.raises(ValueError, match=message):
        run(pipe) if mask is None else pipe.generate(mask, *refs(), steps=2)


def test_float_mask_with_whole_numbers_is_accepted(pipe):
    out = pipe.generate(face_mask().float(), *refs(), steps=2)
    assert out.images.shape == (1, 3, S, S)


def test_reference_errors(pipe):
    ref, ref_mask = refs()
    with pytest.raises(ValueError, match="does not match the model's 64x64"):
        pipe.generate(face_mask(), torch.rand(1, 3, 32, 32), ref_mask[:1], steps=2)
    bad = ref.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="reference: contains NaN"):
        pipe.generate(face_mask(), bad, ref_mask, steps=2)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        pipe.generate(face_mask(), ref * 2 - 1, ref_mask, steps=2)
    with pytest.raises(ValueError, match="reference_mask: size"):
        pipe.generate(face_mask(), ref, torch.zeros(2, 32, 32, dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="2 maps for 1 references|1 maps for 2"):
        pipe.generate(face_mask(), ref, ref_mask[:1], steps=2)


def test_reference_without_mask_needs_parser(pipe, monkeypatch):
    import facegen_rt.eval.evaluators as ev

    monkeypatch.setattr(ev, "assets_present", lambda *a, **k: False)
    ref, _ = refs(1)
    with pytest.raises(ValueError, match="reference_mask is needed"):
        pipe.generate(face_mask(), ref, None, steps=2)


def test_no_reference_without_default(pipe):
    with pytest.raises(ValueError, match="needs a reference"):
        pipe.generate(face_mask(), steps=2)


def test_dtype_backend_sampler_errors(pipe):
    with pytest.raises(ValueError, match="unsupported dtype"):
        SemanticPipeline.from_preset("tiny", dtype=torch.float16)
    with pytest.raises(ValueError, match="unsupported dtype"):
        SemanticPipeline.from_preset("tiny", dtype="fp16")
    with pytest.raises(ValueError, match="unsupported backend"):
        run(pipe, backend="cuda-magic")
    with pytest.raises(ValueError, match="unknown sampler"):
        run(pipe, sampler="euler")
    with pytest.raises(ValueError, match="guidance"):
        run(pipe, guidance=float("nan"))
    with pytest.raises(ValueError, match="batch"):
        run(pipe, batch=0)


def test_region_errors(pipe):
    with pytest.raises(ValueError, match="unknown region 'tail'"):
        run(pipe, region_sources={"tail": 1})
    with pytest.raises(ValueError, match="only 2 reference"):
        run(pipe, region_sources={"hair": 2})
    assert region_ids("eyes") == (4, 5) and region_ids("hair") == (13,) and region_ids(18) == (18,)


# ---------------------------------------------------------------------------- behaviour
def test_deterministic_for_a_seed(pipe):
    a, b, c = run(pipe, seed=7, steps=3), run(pipe, seed=7, steps=3), run(pipe, seed=8, steps=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, c.latents)
    d = run(pipe, seed=7, sampler="dpmpp2m", guidance=2.0)
    e = run(pipe, seed=7, sampler="dpmpp2m", guidance=2.0)
    assert torch.equal(d.images, e.images)
    # steps=3 walks 4 grid points with LDM's uniform spacing (c = 333: t = 1, 334, 667, 999)
    assert len(a.step_latency) == a.info["model_calls"] == 4
    assert all(t > 0 for t in a.step_latency)


def test_region_transfer_copies_exact_rows(pipe):
    out = run(pipe, region_sources={"hair": 1, "eyes": 1})
    ctx, refs_ctx = out.context, out.reference_contexts
    assert refs_ctx.shape[0] == 2 and ctx.shape == (1, 19, pipe.config.unet.context_dim)
    moved = {13, 4, 5}
    for r in range(19):
        src = 1 if r in moved else 0
        assert torch.equal(ctx[0, r], refs_ctx[src, r]), r
    assert not torch.equal(refs_ctx[0, 13], refs_ctx[1, 13])
    full = run(pipe)
    assert torch.equal(full.context[0], full.reference_contexts[0])
    mixed = mix_contexts(torch.arange(3 * 19 * 2.0).view(3, 19, 2), {"hair": 1, "skin": 2})
    assert mixed[0, 13].tolist() == [1 * 38 + 26.0, 1 * 38 + 27.0]
    assert mixed[0, 1].tolist() == [2 * 38 + 2.0, 2 * 38 + 3.0]


def test_caches_and_cfg_modes_agree(pipe):
    base = run(pipe, guidance=3.0, seed=2)
    sep = run(pipe, guidance=3.0, seed=2, cfg_batched=False)
    nocache = run(pipe, guidance=3.0, seed=2, use_cache=False)
    scale = float(base.latents.abs().max())  # random weights: latents grow large
    for other in (sep, nocache):
        assert (base.latents - other.latents).abs().max() <= 1e-5 * scale + 1e-5
    assert len(pipe._uncond) >= 1  # the unconditional constants were kept for reuse


def test_batch_and_several_masks(pipe):
    ref, ref_mask = refs()
    masks = torch.stack([face_mask(1), face_mask(2)])
    out = pipe.generate(masks, ref, ref_mask, steps=2, batch=2)
    assert out.images.shape == (4, 3, S, S) and out.info["samples"] == 4
    assert 0 <= float(out.images.min()) and float(out.images.max()) <= 1


def test_reference_backend_matches_auto(pipe):
    a = run(pipe, backend="reference", seed=4)
    b = run(pipe, seed=4)
    assert (a.latents - b.latents).abs().max() <= 1e-5 * float(a.latents.abs().max()) + 1e-5


# ---------------------------------------------------------------------------- bundled model
bundled = pytest.mark.skipif(not (BUNDLED_MODEL / "model.safetensors").is_file(),
                             reason="bundled SCA-DM weights are not installed")


@bundled
def test_bundled_model_generates_from_example(tmp_path):
    pipe = SemanticPipeline.from_pretrained()
    out = pipe.generate(bundled_example_mask(0), steps=2, seed=0, guidance=1.0)
    assert out.images.shape == (1, 3, pipe.image_size, pipe.image_size)
    assert torch.isfinite(out.images).all() and float(out.images.std()) > 0.02
    paths = out.save(tmp_path)
    assert paths[0].is_file()


@bundled
def test_generate_cli_defaults(tmp_path, capsys):
    from facegen_rt.pipelines.generate_cli import generate_main

    assert generate_main(["--steps", "2", "--guidance", "1", "--out", str(tmp_path),
                          "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "step   1/2" in out and "total" in out
    assert (tmp_path / "sample_000.png").is_file() and (tmp_path / "generate.json").is_file()


def test_pair_references_style_each_mask(pipe):
    ref, ref_mask = refs(2)
    masks = torch.stack([face_mask(1), face_mask(2)])
    both = pipe.generate(masks, ref, ref_mask, steps=2, seed=3, pair_references=True)
    one = pipe.generate(masks[1], ref[1], ref_mask[1], steps=2, seed=3)
    assert torch.equal(both.context, both.reference_contexts)
    # sample 1 of the pair run saw its own reference: same tokens as the single run
    assert torch.allclose(both.context[1], one.context[0], atol=1e-5)
    with pytest.raises(ValueError, match="cannot be combined"):
        pipe.generate(masks, ref, ref_mask, steps=2, pair_references=True, region_sources={"hair": 1})


def test_v_prediction_is_converted_to_eps():
    pipe_v = SemanticPipeline.from_preset("tiny", seed=0, prediction="v")
    cond = pipe_v.unet.prepare_conditioning(torch.zeros(1, 19, S, S), torch.zeros(1, 19, 1280))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    v = pipe_v.unet(x, t, cond=cond)
    a = pipe_v.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    eps = pipe_v.denoiser(cond=cond)(x, t)
    assert torch.allclose(eps, a.sqrt() * v + (1 - a).sqrt() * x, atol=1e-6)
    assert run(pipe_v).info["prediction"] == "v"
    with pytest.raises(ValueError, match="prediction"):
        SemanticPipeline.from_preset("tiny", prediction="x0")


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    import facegen_rt.info as info

    for instructions in ([], ["avx512_bf16"]):
        monkeypatch.setattr(info, "cpu_bf16_instructions", lambda: instructions)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            SemanticPipeline.from_preset("tiny", seed=0, dtype="bf16")
        slow = [w for w in caught if "without bf16 instructions" in str(w.message)]
        assert len(slow) == (0 if instructions else 1)
