"""Configuration of the SCA-DM models, with the official preset and two smaller ones.

Presets:
    "official": the published model (config diffusion-sem-with_uc-mask-attn): 256^2
        images, VQ-f4 latent 3x64x64, UNet with 224 base channels (about 487M
        parameters), style encoder with 4 features per region (about 18M).
    "small": a 128^2 model for the bundled weights: latent 3x32x32, 64 base channels,
        levels [1, 2, 3] with attention at 16^2 and 8^2, a style encoder with one
        feature per region, a lighter VQ-f4.
    "tiny": for tests: 64^2 images, latent 16^2, 32 base channels, two levels.

Every preset keeps 19 region tokens of 1280 values (5 upsampling scales x 256), as
the official UNet requires; smaller presets shrink the style encoder's channel count
(``num_feat``) instead of the token width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

NUM_CLASSES = 19  # CelebAMask-HQ semantic classes


@dataclass(frozen=True)
class ScheduleConfig:
    """The diffusion noise schedule.

    ``schedule="linear"`` is LDM's "linear": sqrt(beta) is linear in t between
    sqrt(beta_start) and sqrt(beta_end), then squared (diffusers: "scaled_linear").
    """

    num_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    schedule: str = "linear"

    def betas(self) -> torch.Tensor:
        """[num_timesteps] float64 betas, computed as LDM's make_beta_schedule does."""
        n = self.num_timesteps
        if self.schedule == "linear":
            return torch.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, n,
                                  dtype=torch.float64) ** 2
        if self.schedule == "sqrt_linear":
            return torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)
        raise ValueError(f"schedule {self.schedule!r} is not supported; "
                         "use 'linear' or 'sqrt_linear'")

    def alphas_cumprod(self) -> torch.Tensor:
        """[num_timesteps] float64 cumulative products of (1 - beta)."""
        return torch.cumprod(1.0 - self.betas(), dim=0)


@dataclass(frozen=True)
class UNetConfig:
    """The denoiser (LDM openaimodel UNetModel as modified by SCA-DM).

    ``attention_ds`` lists the downsampling factors (not resolutions) with a
    SpatialTransformer, as the official ``attention_resolutions`` does.
    """

    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 224
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (2, 4, 8)
    num_head_channels: int = 32
    context_dim: int = 1280
    num_classes: int = NUM_CLASSES
    spade_hidden: int = 128
    groups: int = 32
    dropout: float = 0.0

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def downsample_factor(self) -> int:
        """Latent height and width must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)

    def validate(self) -> None:
        g = self.groups
        for mult in self.channel_mult:
            c = mult * self.model_channels
            if c % g or c % self.num_head_channels:
                raise ValueError(
                    f"UNetConfig: level width {c} must be a multiple of groups={g} and "
                    f"num_head_channels={self.num_head_channels}")
        if self.num_res_blocks < 1:
            raise ValueError("UNetConfig: num_res_blocks must be >= 1")


@dataclass(frozen=True)
class StyleEncoderConfig:
    """SCA-DM's MultiScaleEffStyleEncoder.

    Channels at encoder depth i are ``num_classes * num_feat * 2**i``; each of the
    ``num_upsample`` decoder scales yields ``output_dim`` values per region, so the
    context is [B, num_classes, num_upsample * output_dim].
    """

    input_channels: int = 3
    num_classes: int = NUM_CLASSES
    num_downsample: int = 6
    num_upsample: int = 5
    num_feat: int = 4
    output_dim: int = 256

    @property
    def context_dim(self) -> int:
        return self.num_upsample * self.output_dim

    def validate(self) -> None:
        if self.num_upsample != self.num_downsample - 1:
            # The official skip connections index the encoder features with
            # num_upsample - 1 - i, which only lines up when num_upsample = num_downsample - 1.
            raise ValueError(
                f"StyleEncoderConfig: num_upsample ({self.num_upsample}) must equal "
                f"num_downsample - 1 ({self.num_downsample - 1})")


@dataclass(frozen=True)
class VQConfig:
    """The first stage: LDM VQModel (taming Encoder/Decoder + VectorQuantizer2).

    ``mid_attention`` keeps the single-head AttnBlock in the middle of the encoder and
    decoder (attn_type "vanilla", present in vq-f4 even though attn_resolutions is
    empty); the vq-f4-noattn model has none.
    """

    embed_dim: int = 3
    n_embed: int = 8192
    z_channels: int = 3
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    mid_attention: bool = True
    resolution: int = 256

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class SCADMConfig:
    """A whole SCA-DM model: UNet, style encoder, VQ first stage and schedule."""

    name: str = "official"
    image_size: int = 256
    latent_size: int = 64
    unet: UNetConfig = field(default_factory=UNetConfig)
    style: StyleEncoderConfig = field(default_factory=StyleEncoderConfig)
    vq: VQConfig = field(default_factory=VQConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    scale_factor: float = 1.0  # LDM multiplies latents by this; 1.0 for SCA-DM

    def validate(self) -> "SCADMConfig":
        self.unet.validate()
        self.style.validate()
        if self.style.context_dim != self.unet.context_dim:
            raise ValueError(
                f"SCADMConfig {self.name!r}: style encoder yields {self.style.context_dim} "
                f"values per region but the UNet expects context_dim={self.unet.context_dim}")
        if self.style.num_classes != self.unet.num_classes:
            raise ValueError(f"SCADMConfig {self.name!r}: style encoder and UNet disagree on "
                             "the number of classes")
        if self.image_size != self.latent_size * self.vq.factor:
            raise ValueError(
                f"SCADMConfig {self.name!r}: image_size {self.image_size} != latent_size "
                f"{self.latent_size} x VQ factor {self.vq.factor}")
        if self.latent_size % self.unet.downsample_factor:
            raise ValueError(f"SCADMConfig {self.name!r}: latent_size {self.latent_size} is not "
                             f"a multiple of {self.unet.downsample_factor}")
        if self.image_size % 2 ** self.style.num_downsample:
            raise ValueError(f"SCADMConfig {self.name!r}: image_size {self.image_size} is not a "
                             f"multiple of 2**{self.style.num_downsample}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SCADMConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        sub = {"unet": UNetConfig, "style": StyleEncoderConfig, "vq": VQConfig,
               "schedule": ScheduleConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in sub:
                kwargs[key] = _build(sub[key], value)
            else:
                kwargs[key] = value
        return _build(cls, kwargs).validate()


def _build(cls, values: Mapping[str, Any]):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
    kwargs = {}
    for key, value in values.items():
        if isinstance(value, list):  # JSON lists back to the tuples the dataclasses use
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


PRESETS: dict[str, SCADMConfig] = {
    "official": SCADMConfig(),
    "small": SCADMConfig(
        name="small", image_size=128, latent_size=32,
        unet=UNetConfig(model_channels=64, channel_mult=(1, 2, 3), num_res_blocks=2,
                        attention_ds=(2, 4)),
        style=StyleEncoderConfig(num_feat=1),
        vq=VQConfig(n_embed=1024, ch=64, ch_mult=(1, 2, 4), num_res_blocks=1, resolution=128),
    ),
    "tiny": SCADMConfig(
        name="tiny", image_size=64, latent_size=16,
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                        attention_ds=(2,), spade_hidden=32),
        style=StyleEncoderConfig(num_feat=1),
        vq=VQConfig(n_embed=64, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, resolution=64),
    ),
    # The bundled SynthFace model (facegen_rt/assets/scadm_small): sized so that VQ + UNet
    # + style encoder stay well under 25 MB and train in under an hour on two CPU cores.
    # The VQ encoder has no residual blocks (conv_in, two stride-2 convs, a mid block):
    # it only has to produce latents once per training image, while the decoder keeps one
    # residual block per level. Latent statistics are normalized by ``scale_factor``,
    # which the trainer measures on the encoded training set.
    "synthface128": SCADMConfig(
        name="synthface128", image_size=128, latent_size=32,
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                        attention_ds=(2, 4), spade_hidden=32, groups=16),
        style=StyleEncoderConfig(num_feat=1),
        vq=VQConfig(n_embed=512, ch=32, ch_mult=(1, 2, 2), num_res_blocks=0,
                    mid_attention=False, resolution=128),
    ),
}


def get_preset(name: str) -> SCADMConfig:
    """The named preset, validated; ValueError lists the known names."""
    try:
        return PRESETS[name].validate()
    except KeyError:
        raise ValueError(f"unknown SCA-DM preset {name!r}; "
                         f"choose one of {sorted(PRESETS)}") from None
