"""Real-image editing: inversion, then a session from the found latent."""

import numpy as np
import pytest
import torch

from facegen_rt.drag import DragSession, invert_image
from facegen_rt.drag.inversion import image_to_tensor


def test_inversion_reduces_the_loss_and_starts_a_session(generator):
    with torch.no_grad():
        z = torch.randn(1, generator.z_dim)
        target = generator(z, truncation_psi=0.7, noise_mode="const")[0]
    result = invert_image(generator, target, steps=25, progress=False)
    assert result.ws.shape == (1, generator.num_ws, generator.w_dim)
    assert result.losses[-1] < 0.5 * result.losses[0]

    u8 = ((target.permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8)).numpy()
    s = DragSession.from_image(generator, u8, steps=5, progress=False,
                               inversion={"w_plus": True}, seed=123)
    assert isinstance(s.inversion_loss, float)
    s.add_point((60, 60), (70, 64))
    assert s.step().optimized


def test_image_conversion():
    u8 = np.zeros((256, 256, 3), dtype=np.uint8)
    x = image_to_tensor(u8, 128)
    assert x.shape == (1, 3, 128, 128) and torch.all(x == -1)
    with pytest.raises(ValueError, match="square"):
        image_to_tensor(np.zeros((20, 30, 3), dtype=np.uint8), 128)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        image_to_tensor(np.zeros((20, 20), dtype=np.uint8), 128)
    with pytest.raises(ValueError, match="non-finite"):
        image_to_tensor(torch.full((3, 8, 8), float("nan")), 128)
