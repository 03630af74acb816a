"""Model definitions: plain nn.Modules whose parameter names match the seed checkpoints.

Subpackages (imported on demand, so one model family never breaks another's import):
    sca_dm     SCA-DM semantic latent diffusion: UNet, style encoder, VQ-f4 first stage.
    stylegan2  StyleGAN2 generator.
"""

__all__ = ["sca_dm", "stylegan2"]
