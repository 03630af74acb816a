"""SCA-DM (semantic latent diffusion for faces): UNet, style encoder, VQ-f4 first stage.

Parameter names equal the official state_dict keys once the prefixes
``model.diffusion_model.`` / ``cond_stage_model.`` / ``first_stage_model.`` are removed.
"""

from .attention import MaskedCrossAttention, SpatialTransformer
from .blocks import SDMResBlock, SPADEGroupNorm, UNetConditioning, timestep_embedding
from .config import (PRESETS, SCADMConfig, ScheduleConfig, StyleEncoderConfig, UNetConfig,
                     VQConfig, get_preset)
from .style_encoder import MultiScaleStyleEncoder
from .unet import SCADMUNet
from .vq import VQModel

__all__ = [
    "MaskedCrossAttention", "MultiScaleStyleEncoder", "PRESETS", "SCADMConfig", "SCADMUNet",
    "SDMResBlock", "SPADEGroupNorm", "ScheduleConfig", "SpatialTransformer", "StyleEncoderConfig",
    "UNetConditioning", "UNetConfig", "VQConfig", "VQModel", "build_scadm", "get_preset",
    "timestep_embedding",
]


def build_scadm(config: "SCADMConfig | str" = "official", with_vq: bool = True,
                device=None) -> dict:
    """{"unet", "style_encoder"[, "vq"]} modules for a preset name or config.

    ``device="meta"`` builds them without allocating (for key/shape checks and loaders).
    """
    import torch

    cfg = get_preset(config) if isinstance(config, str) else config.validate()
    with torch.device(device) if device is not None else _nullcontext():
        modules = {"unet": SCADMUNet(cfg.unet), "style_encoder": MultiScaleStyleEncoder(cfg.style)}
        if with_vq:
            modules["vq"] = VQModel(cfg.vq)
    return modules


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
