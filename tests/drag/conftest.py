"""Fixtures for the drag tests: tiny randomly initialised StyleGAN2 generators."""

import pytest
import torch

from facegen_rt.models.stylegan2 import Generator, MappingConfig, StyleGAN2Config

from tests.conftest import torch_threads


def drag_config(res: int = 128, **kw) -> StyleGAN2Config:
    """128^2 with 16 channels (8 at b128) and 16-dim latents: a step takes ~50 ms on one
    thread. 128^2 is the smallest size where DragGAN's r1 = 3 keeps a non-empty disk."""
    values = dict(name="drag-test", z_dim=16, w_dim=16, img_resolution=res, channel_base=1024,
                  channel_max=16, mapping=MappingConfig(num_layers=2))
    values.update(kw)
    return StyleGAN2Config(**values)


def make_generator(config: StyleGAN2Config, seed: int = 0, noise: float = 0.0,
                   random_w_avg: bool = False) -> Generator:
    """Weights from a fixed seed (whether a drag on random weights moves depends on them).

    NVlabs initialises noise strengths to 0; on random weights the constant noise
    would dominate the features and pin the handles, so movement tests keep it at 0.
    Parity tests turn it (and a random w_avg) on to exercise those paths.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = Generator(config)
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name.endswith("noise_strength"):
                    p.fill_(noise)
            if random_w_avg:
                G.mapping.w_avg.normal_()
    return G


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="package")
def generator():
    return make_generator(drag_config())
