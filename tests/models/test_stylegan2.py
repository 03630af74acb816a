"""StyleGAN2 generator: official key names and shapes, forward semantics, early stop."""

import dataclasses
import json

import pytest
import torch

from facegen_rt.models.stylegan2 import (
    PRESETS,
    Generator,
    MappingConfig,
    StyleGAN2Config,
    get_preset,
)
from tests import keys


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one OpenMP thread avoids hand-off costs on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def micro_config(**kw) -> StyleGAN2Config:
    """8^2, 4 channels, 4-dim latents: small enough for float64 gradcheck."""
    return StyleGAN2Config(name="micro", z_dim=4, w_dim=4, img_resolution=8, channel_base=32,
                           channel_max=4, mapping=MappingConfig(num_layers=2), **kw)


def seeded_generator(config, seed=0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(config).eval()
    with torch.no_grad():  # non-zero noise strengths and w_avg, so they matter in tests
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping.w_avg.normal_()
    return G


def test_keys_and_shapes_match_the_official_list():
    schema = keys.official_schema("stylegan2_256")
    want = {key: tuple(shape) for key, shape in schema["keys"].items()}
    assert len(want) == 144
    for G in _on_meta(lambda: Generator.from_init_kwargs(schema["init_kwargs"]),
                      lambda: Generator.from_preset("paper256")):
        sd = G.state_dict()
        assert list(sd) == list(want), "same names in the same order"
        assert {k: tuple(t.shape) for k, t in sd.items()} == want
        assert G.num_ws == 14


def _on_meta(*builders):
    with torch.device("meta"):
        return [b() for b in builders]


@pytest.mark.parametrize("name,res,num_ws,b128_channels", [
    ("config-f-256", 256, 14, 256), ("config-f-512", 512, 16, 256),
    ("config-f-1024", 1024, 18, 256), ("paper256", 256, 14, 128)])
def test_presets(name, res, num_ws, b128_channels):
    (G,) = _on_meta(lambda: Generator.from_preset(name))
    sd = G.state_dict()
    assert G.num_ws == num_ws and G.img_resolution == res
    assert sd["synthesis.b128.conv1.weight"].shape[0] == b128_channels
    assert sd[f"synthesis.b{res}.torgb.weight"].shape == (3, get_preset(name).channels(res), 1, 1)
    # DragGAN's feature block, b128, is block 5 at every resolution >= 128.
    assert G.synthesis.block_index(128) == 5
    assert f"synthesis.b{res}.skip.weight" not in sd  # "skip" G: no resnet skip layers


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="choose one of"):
        get_preset("config-e")


def test_forward_is_deterministic_with_const_noise():
    G = seeded_generator(get_preset("tiny"))
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        a = G(z, truncation_psi=0.7, noise_mode="const")
        b = G(z, truncation_psi=0.7, noise_mode="const")
        r1 = G(z, noise_mode="random")
        r2 = G(z, noise_mode="random")
        none = G(z, noise_mode="none")
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(r1, r2)  # fresh noise per call
    assert not torch.equal(none, G(z, noise_mode="const").detach())
    torch.manual_seed(5)
    r3 = G(z, noise_mode="random")
    torch.manual_seed(5)
    assert torch.equal(r3, G(z, noise_mode="random"))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "nonfused"])
def test_early_stop_features_equal_the_full_run(fused):
    G = seeded_generator(get_preset("tiny"))
    ws = G.mapping(torch.randn(2, G.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        img, features = G.synthesis(ws, noise_mode="const", fused_modconv=fused,
                                    return_features=True)
        for k in range(len(features)):
            early = G.synthesis(ws, noise_mode="const", fused_modconv=fused, up_to_block=k)
            assert len(early) == k + 1
            assert torch.equal(early[k], features[k])
    assert [f.shape[-1] for f in features] == [4, 8, 16, 32]
    assert torch.equal(img, G.synthesis(ws, noise_mode="const", fused_modconv=fused))


def test_fused_and_nonfused_paths_agree():
    G = seeded_generator(get_preset("tiny"))
    ws = G.mapping(torch.randn(3, G.z_dim))
    with torch.no_grad():
        a = G.synthesis(ws, noise_mode="const", fused_modconv=True)
        b = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        G.train()  # "inference_only": training mode takes the non-fused path, as in DragGAN
        c = G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    assert torch.equal(b, c)


def test_drag_step_gradients_reach_only_the_ws_that_feed_the_block():
    G = seeded_generator(get_preset("tiny")).requires_grad_(False)  # frozen, as in DragGAN
    ws = G.mapping(torch.randn(1, G.z_dim)).requires_grad_()
    feat = G.synthesis(ws, noise_mode="const", fused_modconv=False, up_to_block=2)[-1]
    feat.square().mean().backward()
    # blocks b4, b8, b16 read ws 0 .. 4; b16's ToRGB w (index 5) is skipped with the image
    used = ws.grad.abs().sum(dim=2)[0]
    assert (used[:5] > 0).all() and (used[5:] == 0).all()
    assert all(p.grad is None for p in G.parameters())


def test_truncation():
    G = seeded_generator(get_preset("tiny"))
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        w = G.mapping(z)
        w0 = G.mapping(z, truncation_psi=0)
        wc = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert w.shape == (2, G.num_ws, G.w_dim)
    torch.testing.assert_close(w0, G.mapping.w_avg.expand_as(w0))
    torch.testing.assert_close(wc[:, :3], G.mapping.w_avg.lerp(w[:, :3], 0.5))
    assert torch.equal(wc[:, 3:], w[:, 3:])


def test_generator_gradcheck_in_float64():
    G = seeded_generator(micro_config()).double()
    ws = torch.randn(1, G.num_ws, G.w_dim, dtype=torch.float64, requires_grad=True)

    def fn(ws):
        img, feats = G.synthesis(ws, noise_mode="const", fused_modconv=False,
                                 return_features=True)
        return img, feats[0]

    assert torch.autograd.gradcheck(fn, (ws,), fast_mode=True)


def test_bfloat16_compute_stays_close_to_float32():
    G = seeded_generator(get_preset("tiny"))
    ws = G.mapping(torch.randn(2, G.z_dim))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const")
        img, feats = G.synthesis(ws, noise_mode="const", dtype=torch.bfloat16,
                                 return_features=True)
    assert img.dtype == torch.float32 and feats[-1].dtype == torch.bfloat16
    assert (img - ref).abs().max() <= 0.05 * ref.abs().max()


def test_ws_shape_is_checked():
    G = seeded_generator(get_preset("tiny"))
    with pytest.raises(ValueError, match=r"ws must have shape \(N, 8, 32\)"):
        G.synthesis(torch.randn(1, 7, 32))
    with pytest.raises(ValueError, match="up_to_block=4 is out of range"):
        G.synthesis(torch.randn(1, 8, 32), up_to_block=4)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 32\)"):
        G(torch.randn(1, 31))


def test_conditional_and_orig_architecture():
    cfg = dataclasses.replace(micro_config(), c_dim=3, architecture="orig")
    G = seeded_generator(cfg)
    sd = G.state_dict()
    assert "mapping.embed.weight" in sd and "synthesis.b4.torgb.weight" not in sd
    out = G(torch.randn(2, 4), torch.randn(2, 3), noise_mode="const")
    assert out.shape == (2, 3, 8, 8)


def test_config_round_trips():
    for cfg in PRESETS.values():
        assert StyleGAN2Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        back = StyleGAN2Config.from_init_kwargs(cfg.to_init_kwargs(), name=cfg.name)
        assert back == cfg
    # stylegan2-ada layout: synthesis kwargs nested, no fused_modconv_default (NVlabs: True)
    ada = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
               mapping_kwargs=dict(num_layers=8),
               synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4,
                                     conv_clamp=256))
    cfg = StyleGAN2Config.from_init_kwargs(ada)
    assert cfg.channel_base == 16384 and cfg.fused_modconv_default is True
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['mystery'\]"):
        StyleGAN2Config.from_init_kwargs({**ada, "mystery": 1})
    with pytest.raises(ValueError, match="architecture 'resnet' is not supported"):
        StyleGAN2Config.from_init_kwargs({**ada, "architecture": "resnet"})
