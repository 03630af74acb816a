"""SCA-DM models: official key schema, block semantics, caches, tiny-preset forward."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from facegen_rt.models.sca_dm import (
    PRESETS,
    SCADMConfig,
    SCADMUNet,
    SDMResBlock,
    UNetConditioning,
    build_scadm,
    get_preset,
)
from facegen_rt.models.sca_dm.attention import SpatialTransformer
from tests import keys

pytestmark = pytest.mark.filterwarnings("ignore:facegen_rt.*backend:UserWarning")


def official_schema() -> dict[str, list[int]]:
    return keys.official_schema("scadm_official")["keys"]


def onehot(B: int, H: int, W: int, R: int = 19) -> torch.Tensor:
    labels = torch.randint(0, R, (B, H, W))
    return F.one_hot(labels, R).permute(0, 3, 1, 2).float()


def init_weights(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deterministic nonzero weights with fan-in scaling (zero-initialized convs included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                centre = 1.0 if name.endswith("weight") else 0.0
                p.copy_(centre + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
    return module.eval()


# ---------------------------------------------------------------------------- schema
@pytest.mark.parametrize("part,prefix", [("unet", "model.diffusion_model."),
                                         ("style_encoder", "cond_stage_model.")])
def test_official_keys_and_shapes_match_schema(part, prefix):
    schema = official_schema()
    module = build_scadm("official", with_vq=False, device="meta")[part]
    ours = {prefix + k: list(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: v for k, v in schema.items() if k.startswith(prefix)}
    assert sorted(set(theirs) - set(ours)) == [], "keys in the official checkpoint we lack"
    assert sorted(set(ours) - set(theirs)) == [], "keys we have that the checkpoint lacks"
    bad = {k: (ours[k], theirs[k]) for k in theirs if ours[k] != theirs[k]}
    assert bad == {}
    assert list(ours) == list(theirs), "registration order differs from the official module"


def test_parameter_counts():
    m = build_scadm("official", device="meta")
    counts = {k: sum(p.numel() for p in v.parameters()) for k, v in m.items()}
    assert counts["unet"] == 486_912_387
    assert counts["style_encoder"] == 18_069_304
    assert counts["vq"] == 55_322_782


def test_presets_validate_and_roundtrip():
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg.unet.context_dim == 1280 == cfg.style.context_dim
        assert SCADMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown SCA-DM preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="unknown field"):
        SCADMConfig.from_dict({"unet": {"model_chanels": 3}})


def test_official_schedule_is_ldm_linear():
    betas = get_preset("official").schedule.betas()
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(0.0015) and betas[-1].item() == pytest.approx(0.0195)
    # sqrt(beta) is linear in t (LDM "linear"), so beta itself is not
    root = betas.sqrt()
    assert torch.allclose(root.diff(), root.diff()[0].expand(999), atol=1e-12)


def test_official_forward_on_meta_device():
    """The whole official graph at 64x64 latent runs shape-only (no memory, no compute)."""
    unet = build_scadm("official", with_vq=False, device="meta")["unet"]
    with torch.device("meta"):
        x, t = torch.empty(2, 3, 64, 64), torch.zeros(2, dtype=torch.long)
        eps = unet(x, t, torch.empty(2, 19, 1280), torch.empty(2, 19, 256, 256))
    assert eps.shape == (2, 3, 64, 64)


# ---------------------------------------------------------------------------- blocks
def test_sdm_resblock_matches_formula():
    """SDMResBlock against the seed's formula, written out, in float64."""
    torch.manual_seed(1)
    block = init_weights(SDMResBlock(64, 128, 32, num_classes=19)).double()
    x = torch.randn(2, 64, 8, 6, dtype=torch.float64)
    emb = torch.randn(2, 128, dtype=torch.float64)
    seg = onehot(2, 32, 24).double()
    block.ds = 1
    block.in_norm.cache_key, block.out_norm.cache_key = "in", "out"
    out = block(x, emb, UNetConditioning(seg=seg, context=torch.zeros(2, 19, 1280)))

    def spade(norm, h):
        s = F.interpolate(seg, size=h.shape[-2:], mode="nearest")
        a = F.relu(norm.mlp_shared[0](s))
        return F.group_norm(h, 32, eps=1e-5) * (1 + norm.mlp_gamma(a)) + norm.mlp_beta(a)

    h = block.in_layers[1](F.silu(spade(block.in_norm, x)))
    h = h + block.emb_layers[1](F.silu(emb))[:, :, None, None]
    h = block.out_layers[2](F.silu(spade(block.out_norm, h)))
    ref = block.skip_connection(x) + h
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_cross_attention_is_a_region_gather():
    """With a one-hot mask each pixel takes to_out(v[its region]) (see seed-systems.md)."""
    torch.manual_seed(2)
    st = init_weights(SpatialTransformer(64, heads=2, head_dim=32, context_dim=1280)).double()
    attn = st.transformer_blocks[0].attn2
    attn.cache_key = "attn2"
    B, H, W = 2, 6, 5
    seg = onehot(B, 4 * H, 4 * W).double()
    context = torch.randn(B, 19, 1280, dtype=torch.float64)
    cond = UNetConditioning(seg=seg, context=context)
    tokens = torch.randn(B, H * W, 64, dtype=torch.float64)
    out = attn(tokens, cond, (H, W))

    region = F.interpolate(seg, size=(H, W), mode="nearest").argmax(1).flatten(1)  # [B, H*W]
    v = attn.to_v(context)  # [B, 19, inner]
    gathered = torch.gather(v, 1, region[..., None].expand(-1, -1, v.shape[-1]))
    torch.testing.assert_close(out, attn.to_out[0](gathered), rtol=1e-9, atol=1e-9)

    # Unconditional branch (all-zero mask and context): the mean of V, the same everywhere.
    zero = UNetConditioning(seg=torch.zeros_like(seg), context=torch.zeros_like(context))
    out0 = attn(tokens, zero, (H, W))
    torch.testing.assert_close(out0, out0[:, :1].expand_as(out0), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- tiny UNet
@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny")
    m = build_scadm(cfg)
    for i, mod in enumerate(m.values()):
        init_weights(mod, seed=10 + i)
    return cfg, m


def test_tiny_forward_deterministic_and_cached(tiny):
    cfg, m = tiny
    unet, se = m["unet"], m["style_encoder"]
    B, s = 2, cfg.latent_size
    seg = onehot(B, cfg.image_size, cfg.image_size)
    image = torch.rand(B, 3, cfg.image_size, cfg.image_size) * 2 - 1
    x, t = torch.randn(B, 3, s, s), torch.tensor([5, 900])
    with torch.no_grad():
        ctx = se(image, seg)
        a = unet(x, t, ctx, seg)
        b = unet(x, t, ctx, seg)
        cond = unet.prepare_conditioning(seg, ctx, latent_size=(s, s))
        c = unet(x, t, cond=cond)
    assert a.shape == (B, 3, s, s) and torch.isfinite(a).all()
    assert torch.equal(a, b), "forward is not deterministic"
    assert torch.equal(a, c), "cached conditioning changes the result"
    assert len(cond.spade) == 2 * sum(isinstance(mod, SDMResBlock) for mod in unet.modules())
    assert a.abs().mean() > 1e-3  # the output depends on the input, not a constant
    with torch.no_grad():
        other = unet(x, torch.tensor([6, 901]), ctx, seg)
    assert not torch.equal(a, other), "timestep has no effect"


def test_tiny_batch1_conditioning_broadcasts(tiny):
    cfg, m = tiny
    unet = m["unet"]
    s = cfg.latent_size
    seg = onehot(1, cfg.image_size, cfg.image_size)
    ctx = torch.randn(1, 19, 1280).tanh()
    x, t = torch.randn(3, 3, s, s), torch.tensor([1, 2, 3])
    with torch.no_grad():
        shared = unet(x, t, ctx, seg)
        full = unet(x, t, ctx.expand(3, -1, -1), seg.expand(3, -1, -1, -1))
    # equal up to float32 rounding (batch-1 and batch-3 convolutions take different kernels)
    torch.testing.assert_close(shared, full, rtol=1e-5, atol=1e-5)


def test_tiny_unconditional_inputs_run(tiny):
    cfg, m = tiny
    s = cfg.latent_size
    with torch.no_grad():
        eps = m["unet"](torch.randn(1, 3, s, s), torch.tensor([500]), torch.zeros(1, 19, 1280),
                        torch.zeros(1, 19, cfg.image_size, cfg.image_size))
    assert torch.isfinite(eps).all()


def test_conditioning_misuse_is_explained(tiny):
    cfg, m = tiny
    unet = m["unet"]
    s = cfg.latent_size
    seg, ctx = onehot(1, cfg.image_size, cfg.image_size), torch.zeros(1, 19, 1280)
    cond = unet.prepare_conditioning(seg, ctx, latent_size=(s, s))
    with torch.no_grad(), pytest.raises(ValueError, match="latent size changed"):
        unet(torch.randn(1, 3, 2 * s, 2 * s), torch.tensor([1]), cond=cond)
    other = SCADMUNet(cfg.unet)
    with pytest.raises(ValueError, match="another UNet"):
        other(torch.randn(1, 3, s, s), torch.tensor([1]), cond=cond)
    with pytest.raises(ValueError, match="context must have shape"):
        unet(torch.randn(1, 3, s, s), torch.tensor([1]), torch.zeros(1, 19, 64), seg)
    with pytest.raises(ValueError, match="multiple of 2"):
        unet(torch.randn(1, 3, s + 1, s), torch.tensor([1]), ctx, seg)
    with pytest.raises(ValueError, match="either cond, or both"):
        unet(torch.randn(1, 3, s, s), torch.tensor([1]), ctx)


# ---------------------------------------------------------------------------- style encoder
def test_style_encoder_tokens(tiny):
    cfg, m = tiny
    se = m["style_encoder"]
    labels = torch.randint(0, 19, (2, cfg.image_size, cfg.image_size))
    labels[labels == 7] = 0  # region 7 absent
    seg = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        ctx = se(torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1, seg)
    assert ctx.shape == (2, 19, 1280)
    assert ctx.abs().max() <= 1.0
    # An absent region pools to zero features, so its token is tanh(bias) at every scale.
    bias = torch.cat([se.out[f"out_{j}"][0].bias.view(19, -1)[7] for j in range(5)])
    torch.testing.assert_close(ctx[:, 7], bias.tanh().expand(2, -1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 64"):
        se(torch.zeros(1, 3, 48, 48), torch.zeros(1, 19, 48, 48))


# ---------------------------------------------------------------------------- VQ
def test_vq_roundtrip_and_quantizer(tiny):
    cfg, m = tiny
    vq = m["vq"]
    img = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        z = vq.encode(img)
        zq, idx = vq.quantize(z)
        out = vq.decode(z)
        out_nq = vq.decode(zq, quantize=False)
    assert z.shape == (2, 3, cfg.latent_size, cfg.latent_size)
    assert out.shape == img.shape
    torch.testing.assert_close(out, out_nq, rtol=0, atol=0)  # decode = decoder(quantize(z))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    brute = torch.cdist(flat.double(), vq.quantize.embedding.weight.double()).argmin(1)
    assert torch.equal(idx.flatten(), brute)
    torch.testing.assert_close(zq, vq.quantize.embedding.weight[idx].permute(0, 3, 1, 2))
    assert torch.equal(vq.encode(img, quantize=True), zq)


def test_models_warn_only_about_backends(tiny):
    """Forward passes raise no warnings other than the op backend notice."""
    cfg, m = tiny
    s = cfg.latent_size
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        m["unet"](torch.randn(1, 3, s, s), torch.tensor([3]), torch.zeros(1, 19, 1280),
                  onehot(1, cfg.image_size, cfg.image_size))
    others = [w for w in caught if "backend" not in str(w.message)]
    assert others == [], [str(w.message) for w in others]
