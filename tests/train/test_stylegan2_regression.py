"""The bundled generator's trainer, on a tiny 64^2 generator for a few dozen steps in
both phases: the fit to its targets improves, and the bundle loads back bit-exactly."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from facegen_rt.data.synthface.factors import Z_DIM, factors_from_z
from facegen_rt.models.stylegan2 import MappingConfig, StyleGAN2Config
from facegen_rt.train import Logger
from facegen_rt.train.stylegan2 import (evaluate, generator_factors, parse_args, regression_loss,
                                        render_batch, sphere_z, train)
from facegen_rt.weights import load_generator, save_model

from ..conftest import torch_threads

TINY = StyleGAN2Config(name="test64", z_dim=Z_DIM, w_dim=32, img_resolution=64, channel_base=512,
                       channel_max=32, use_noise=False,
                       mapping=MappingConfig(num_layers=2, lr_multiplier=1.0))


def test_targets_come_from_the_generator_world():
    z = sphere_z(np.random.default_rng(0), 5)
    assert z.shape == (5, Z_DIM)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), np.sqrt(Z_DIM))
    img, mask = render_batch(z[:2], 64)
    assert img.shape == (2, 3, 64, 64) and -1 <= img.min() and img.max() <= 1
    # the feature mask: eyes, brows, nose and lips, a small part of every face
    assert mask.shape == (2, 1, 64, 64) and 0 <= mask.min() and mask.max() <= 1
    assert all(0.005 < m < 0.2 for m in mask.mean(dim=(1, 2, 3)).tolist())
    for zi in z:
        f, g = factors_from_z(zi), generator_factors(zi)
        assert g.texture_seed == 0 and not (g.glasses or g.hat or g.earrings or g.necklace)
        assert g.cloth_pattern == "solid"
        assert (g.face_width, g.hair_style, g.roll, g.smile) == (f.face_width, f.hair_style,
                                                                   f.roll, f.smile)


def test_regression_training_fits_the_renderer(tmp_path):
    args = parse_args(["--out", str(tmp_path / "g"), "--steps", "25", "--batch", "4",
                       "--lr", "3e-3", "--coarse-res", "32", "--coarse-batch", "8",
                       "--coarse-lr", "5e-3", "--warmup", "5", "--log-every", "25",
                       "--checkpoint-every", "0", "--minutes", "5"])
    from facegen_rt.models.stylegan2 import Generator
    torch.manual_seed(args.seed)
    with torch_threads(2):
        before = evaluate(Generator(TINY).eval(), n=16)
        G = train(args, Logger(tmp_path / "train.log"), config=TINY)
        after = evaluate(G, n=16)
    log = (tmp_path / "train.log").read_text()
    assert "[32^2] done: 25 steps" in log and "[64^2] done: 25 steps" in log
    assert after["l1"] < 0.75 * before["l1"], (before, after)
    path = save_model(tmp_path / "g.safetensors", {"G": G}, G.config)
    loaded = load_generator(path)
    z = torch.randn(2, Z_DIM)
    assert torch.equal(loaded(z, noise_mode="const"), G.eval()(z, noise_mode="const"))
    assert not any(p.requires_grad for p in loaded.parameters())

    # --init continues from that bundle (here with the feature-weighted loss, full
    # resolution only, a negligible learning rate): it starts where G ended.
    more = parse_args(["--out", str(tmp_path / "g2"), "--init", str(path), "--steps", "3",
                       "--batch", "2", "--lr", "1e-7", "--coarse-fraction", "0",
                       "--feature-weight", "10", "--warmup", "1", "--checkpoint-every", "0"])
    with torch_threads(2):
        G2 = train(more, Logger(tmp_path / "more.log"), config=TINY).eval()
        ref = G.eval()(z, noise_mode="const")
        assert (G2(z, noise_mode="const") - ref).abs().max() < 1e-3
        assert (Generator(TINY).eval()(z, noise_mode="const") - ref).abs().max() > 0.1


def test_feature_weight_shifts_the_loss_to_the_masked_pixels():
    """With feature_weight w, an error on masked pixels costs (1 + w) times one elsewhere
    (the loss is normalized by the mean weight); w = 0 is the plain L1."""
    real = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :2, :] = 1  # a quarter of the pixels
    on, off = real.clone(), real.clone()
    on[..., :2, :] = 1
    off[..., 2:4, :] = 1
    for w in (0.0, 9.0):
        full_on = regression_loss(on, real, mask, w)[1]["l1"]
        full_off = regression_loss(off, real, mask, w)[1]["l1"]
        assert full_on == pytest.approx((1 + w) * full_off)
    assert regression_loss(off, real, mask, 0.0)[1]["l1"] == pytest.approx(0.25)
