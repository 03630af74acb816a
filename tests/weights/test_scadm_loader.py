"""Checkpoint reading and SCA-DM loading: safety, key mapping, EMA, reports, bundles."""

from __future__ import annotations

import json
import os
import random
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facegen_rt.models.sca_dm import build_scadm, get_preset
from facegen_rt.weights import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointTooLargeError,
    UnsafeCheckpointError,
    ema_key_map,
    load_scadm,
    load_scadm_official,
    load_vq,
    safe_torch_load,
    save_scadm,
)
from facegen_rt.weights.safetensors_io import bundle_paths
from tests import keys

pytestmark = pytest.mark.filterwarnings("ignore:facegen_rt.*backend:UserWarning")

SCHEDULE_KEYS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2")


def official_schema() -> dict[str, list[int]]:
    return keys.official_schema("scadm_official")["keys"]


def onehot(B: int, H: int, W: int) -> torch.Tensor:
    return F.one_hot(torch.randint(0, 19, (B, H, W)), 19).permute(0, 3, 1, 2).float()


def lightning(sd: dict, **extra) -> dict:
    """A Lightning-1.4-like checkpoint around a state_dict."""
    return {"state_dict": sd, "epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.4.2",
            **extra}


def schedule_buffers(cfg) -> dict[str, torch.Tensor]:
    out = {k: torch.rand(cfg.schedule.num_timesteps) for k in SCHEDULE_KEYS}
    out["betas"] = cfg.schedule.betas().float()
    return out


# ---------------------------------------------------------------------------- official preset
def test_official_synthetic_checkpoint_loads_and_runs(tmp_path):
    """A checkpoint with every key and shape of the official schema loads with nothing
    missing or unexpected, and the loaded models run.

    The tensors are views into one ~70 MB random buffer (fan-in friendly scale, ones for
    norm weights), so the file stays small; the loader copies each into its own
    parameter, so the loaded UNet and style encoder are full-size (505M float32 values).
    The forward runs at a 16x16 latent (64x64 mask) to keep the test short: the network
    is the full official one.
    """
    schema = official_schema()
    n_rand = 1 << 24
    buf = torch.cat([torch.randn(n_rand) * 0.02, torch.ones(8192)])
    sd: dict[str, torch.Tensor] = {}
    for i, (key, shape) in enumerate(schema.items()):
        if key in SCHEDULE_KEYS:
            continue
        n = 1
        for s in shape:
            n *= s
        if len(shape) == 1 and key.endswith("weight"):  # norm scales
            sd[key] = buf[n_rand:n_rand + n]
        else:
            start = (i * 7919) % (n_rand - n + 1)
            sd[key] = buf[start:start + n].view(shape)
    cfg = get_preset("official")
    sd.update(schedule_buffers(cfg))
    path = tmp_path / "last.ckpt"
    torch.save(lightning(sd), path)
    probe = sd["model.diffusion_model.out.2.weight"].clone()
    del sd, buf

    unet, style, vq, report = load_scadm_official(path)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    assert len(report.loaded) == len(schema) - len(SCHEDULE_KEYS)
    assert sorted(report.ignored) == sorted(SCHEDULE_KEYS)
    assert any("betas match" in n for n in report.notes), report.notes
    assert vq is None and report.ema is False
    assert torch.equal(unet.out[2].weight, probe)
    assert unet.out[2].weight.untyped_storage().nbytes() == probe.numel() * 4  # owned, not a view

    seg = onehot(1, 64, 64)
    with torch.no_grad():
        ctx = style(torch.rand(1, 3, 64, 64) * 2 - 1, seg)
        eps = unet(torch.randn(1, 3, 16, 16), torch.tensor([999]), ctx, seg)
    assert ctx.shape == (1, 19, 1280) and eps.shape == (1, 3, 16, 16)
    assert torch.isfinite(eps).all()


def test_ema_names_for_official_unet():
    schema_about = "model_ema.diffusion_modelinput_blocks100emb_layers1bias"
    unet = build_scadm("official", with_vq=False, device="meta")["unet"]
    mapping = ema_key_map(unet)
    assert len(mapping) == sum(1 for _ in unet.parameters())  # no collisions
    assert mapping[schema_about] == "input_blocks.10.0.emb_layers.1.bias"
    assert mapping["model_ema.diffusion_modelinput_blocks00weight"] == "input_blocks.0.0.weight"


# ---------------------------------------------------------------------------- tiny, official format
@pytest.fixture(scope="module")
def tiny_modules():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    return cfg, build_scadm(cfg)


def official_format(modules, cfg, *, ema: bool = True, vq: bool = True) -> dict[str, torch.Tensor]:
    """The state_dict layout of an official SCA-DM checkpoint, for the given modules.
    EMA copies are the raw weights + 1, so the two are told apart."""
    sd = dict(schedule_buffers(cfg))
    for k, v in modules["unet"].state_dict().items():
        sd["model.diffusion_model." + k] = v.clone()
        if ema:
            sd["model_ema.diffusion_model" + k.replace(".", "")] = v + 1
    if ema:
        sd["model_ema.decay"] = torch.tensor(0.9999)
        sd["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
    for k, v in modules["style_encoder"].state_dict().items():
        sd["cond_stage_model." + k] = v.clone()
    if vq:
        for k, v in modules["vq"].state_dict().items():
            sd["first_stage_model." + k] = v.clone()
    return sd


@pytest.fixture
def fake_lightning_class(monkeypatch):
    """A class pickled under Lightning 1.x's ModelCheckpoint name; removed before loading."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    cls = type("ModelCheckpoint", (), {"__module__": name})
    for part in ("pytorch_lightning", "pytorch_lightning.callbacks", name):
        monkeypatch.setitem(sys.modules, part, types.ModuleType(part))
    sys.modules[name].ModelCheckpoint = cls
    return cls


def assert_same_weights(module, state, prefix=""):
    for k, v in module.state_dict().items():
        assert torch.equal(v, state[prefix + k]), k


def test_raw_load_with_lightning_extras(tmp_path, tiny_modules, fake_lightning_class):
    cfg, m = tiny_modules
    sd = official_format(m, cfg)
    ckpt = lightning(sd, callbacks={fake_lightning_class: {"monitor": "val/loss",
                                                           "best_model_score": torch.tensor(0.1)}},
                     optimizer_states=[{"state": {},
                                        "param_groups": [{"lr": 1e-6, "params": [0]}]}],
                     lr_schedulers=[{"last_epoch": 3, "lr_lambdas": [{"warm_up_steps": 10}]}])
    torch.save(ckpt, tmp_path / "last.ckpt")
    for mod in list(sys.modules):  # Lightning is gone when the checkpoint is read
        if mod.startswith("pytorch_lightning"):
            del sys.modules[mod]
    unet, style, vq, report = load_scadm_official(tmp_path / "last.ckpt", preset="tiny")
    assert report.ok and not report.ema
    assert_same_weights(unet, sd, "model.diffusion_model.")
    assert_same_weights(style, sd, "cond_stage_model.")
    assert_same_weights(vq, sd, "first_stage_model.")
    assert report.ignored["model_ema.diffusion_modelout2weight"] == "EMA weights, use_ema=False"
    assert "raw weights" in report.weights["unet"]
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())


def test_use_ema_maps_dotless_names(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    sd = official_format(m, cfg)
    torch.save(lightning(sd), tmp_path / "last.ckpt")
    unet, style, _, report = load_scadm_official(tmp_path / "last.ckpt", preset="tiny",
                                                 use_ema=True)
    assert report.ok and report.ema
    for name, p in unet.named_parameters():
        assert torch.equal(p, sd["model.diffusion_model." + name] + 1), name
    assert_same_weights(style, sd, "cond_stage_model.")  # no EMA exists for it
    assert "EMA" in report.weights["unet"] and "EMA" in str(report)
    assert report.ignored["model.diffusion_model.out.2.weight"] == "raw UNet weights, EMA requested"
    assert report.ignored["model_ema.decay"] == "EMA bookkeeping"


def test_use_ema_without_ema_weights_is_refused(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    torch.save(lightning(official_format(m, cfg, ema=False)), tmp_path / "last.ckpt")
    with pytest.raises(CheckpointMismatchError, match="no model_ema") as info:
        load_scadm_official(tmp_path / "last.ckpt", preset="tiny", use_ema=True)
    assert "unet.out.2.weight" in info.value.report.missing


def test_separate_vq_file(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    torch.save(lightning(official_format(m, cfg, vq=False)), tmp_path / "last.ckpt")
    vq_sd = {k: v.clone() for k, v in m["vq"].state_dict().items()}
    vq_sd["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    torch.save({"state_dict": vq_sd}, tmp_path / "vq.ckpt")
    unet, style, vq, report = load_scadm_official(tmp_path / "last.ckpt", tmp_path / "vq.ckpt",
                                                  preset="tiny")
    assert report.ok
    assert_same_weights(vq, vq_sd)
    assert "vq:loss.discriminator.main.0.weight" in report.ignored
    assert str(tmp_path / "vq.ckpt") in report.source

    vq2, rep2 = load_vq(tmp_path / "vq.ckpt", "tiny")
    assert rep2.ok
    assert torch.equal(vq2.quantize.embedding.weight, vq_sd["quantize.embedding.weight"])


def test_missing_and_mismatched_keys_are_named(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    sd = official_format(m, cfg)
    del sd["model.diffusion_model.middle_block.1.proj_in.bias"]
    sd["cond_stage_model.out.out_0.0.bias"] = torch.zeros(7)
    torch.save(lightning(sd), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_scadm_official(tmp_path / "bad.ckpt", preset="tiny")
    msg = str(info.value)
    assert "unet.middle_block.1.proj_in.bias" in msg
    assert "cond_stage_model.out.out_0.0.bias: model [4864], checkpoint [7]" in msg

    with pytest.warns(UserWarning, match="unexpected"):
        sd2 = official_format(m, cfg)
        sd2["model.diffusion_model.extra.weight"] = torch.zeros(3)
        torch.save(sd2, tmp_path / "extra.ckpt")  # a bare state_dict works as well
        _, _, _, report = load_scadm_official(tmp_path / "extra.ckpt", preset="tiny")
    assert report.unexpected == ["model.diffusion_model.extra.weight"]

    unet, _, _, report = load_scadm_official(tmp_path / "bad.ckpt", preset="tiny", strict=False)
    assert report.missing == ["unet.middle_block.1.proj_in.bias"]
    assert torch.count_nonzero(unet.middle_block[1].proj_in.bias) == 0


def test_wrong_preset_is_a_shape_mismatch(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    torch.save(lightning(official_format(m, cfg)), tmp_path / "tiny.ckpt")
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_scadm_official(tmp_path / "tiny.ckpt", preset="small")


# ---------------------------------------------------------------------------- safe loading
class RunsAShellCommand:
    """Unpickling this would run a shell command (it must never be unpickled here)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_code_in_pickle_is_refused_and_not_run(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(lightning({"w": torch.ones(2), "x": RunsAShellCommand(marker)}), path,
               _use_new_zipfile_serialization=zip_format)
    refused = r"refused: .*outside the safe allow-list \(.*system"
    with pytest.raises(UnsafeCheckpointError, match=refused):
        safe_torch_load(path)
    assert not marker.exists(), "the command in the pickle ran"


def test_unknown_class_is_refused(tmp_path, monkeypatch):
    mod = types.ModuleType("omegaconf_like")
    cls = type("DictConfig", (), {"__module__": "omegaconf_like"})
    mod.DictConfig = cls
    monkeypatch.setitem(sys.modules, "omegaconf_like", mod)
    torch.save(lightning({"w": torch.ones(1)}, hyper_parameters=cls()), tmp_path / "h.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="omegaconf_like.DictConfig"):
        safe_torch_load(tmp_path / "h.ckpt")


def test_lightning_like_dict_loads(tmp_path):
    torch.save(lightning({"a.weight": torch.ones(3)}), tmp_path / "l.ckpt")
    ckpt = safe_torch_load(tmp_path / "l.ckpt")
    assert ckpt["epoch"] == 3 and ckpt["pytorch-lightning_version"] == "1.4.2"
    assert torch.equal(ckpt["state_dict"]["a.weight"], torch.ones(3))


@pytest.mark.parametrize("cut", ["half", "tail", "empty"])
def test_truncated_or_corrupt_file(tmp_path, cut):
    good = tmp_path / "good.ckpt"
    torch.save(lightning({"w": torch.randn(4096)}), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes({"half": data[: len(data) // 2], "tail": data[:-10], "empty": b""}[cut])
    with pytest.raises(CheckpointCorruptError, match="is truncated or corrupt"):
        safe_torch_load(bad)


def test_random_bytes_are_corrupt(tmp_path):
    """The unpickler fails on random bytes in many ways (unknown opcodes, an empty
    stack, a missing memo entry); every one must come out as CheckpointCorruptError.
    64 fixed streams include several of each kind."""
    bad = tmp_path / "bad.ckpt"
    for seed in range(64):
        bad.write_bytes(random.Random(seed).randbytes(2000))
        with pytest.raises(CheckpointCorruptError, match="is truncated or corrupt"):
            safe_torch_load(bad)


def test_size_limit_and_type_checks(tmp_path):
    path = tmp_path / "w.ckpt"
    torch.save({"w": torch.zeros(1000)}, path)
    with pytest.raises(CheckpointTooLargeError, match="over the limit"):
        safe_torch_load(path, max_bytes=1000)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list, expected a dict"):
        safe_torch_load(path)
    with pytest.raises(FileNotFoundError):
        safe_torch_load(tmp_path / "nope.ckpt")


# ---------------------------------------------------------------------------- bundles
def test_bundle_roundtrip(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    save_scadm(tmp_path / "bundle", cfg, m["unet"], m["style_encoder"], m["vq"])
    modules, cfg2, report = load_scadm(tmp_path / "bundle")
    assert cfg2 == cfg and report.ok and set(modules) == {"unet", "style_encoder", "vq"}
    for name in modules:
        assert_same_weights(modules[name], m[name].state_dict())
    doc = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert doc["modules"]["unet"]["parameters"] == sum(p.numel() for p in m["unet"].parameters())

    file_form = tmp_path / "tiny.safetensors"
    save_scadm(file_form, cfg, m["unet"], m["style_encoder"])
    modules, _, report = load_scadm(file_form, dtype=torch.bfloat16)
    assert set(modules) == {"unet", "style_encoder"} and report.ok
    assert modules["unet"].out[2].weight.dtype == torch.bfloat16


def test_bundle_errors(tmp_path, tiny_modules):
    cfg, m = tiny_modules
    weights = save_scadm(tmp_path / "b", cfg, m["unet"], m["style_encoder"])
    _, config = bundle_paths(tmp_path / "b")
    with pytest.raises(CheckpointTooLargeError):
        load_scadm(tmp_path / "b", max_bytes=1024)

    doc = json.loads(config.read_text())  # a config that no longer fits the weights
    doc["config"]["unet"]["model_channels"] = 64
    config.write_text(json.dumps(doc))
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_scadm(tmp_path / "b")

    config.write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="not valid JSON"):
        load_scadm(tmp_path / "b")

    save_scadm(tmp_path / "b", cfg, m["unet"], m["style_encoder"])
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointCorruptError, match="truncated or corrupt"):
        load_scadm(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        load_scadm(tmp_path / "missing")
