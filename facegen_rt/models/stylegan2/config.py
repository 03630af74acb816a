"""Configuration of the StyleGAN2 generator (NVlabs networks_stylegan2), with presets.

Presets:
    "config-f-256", "config-f-512", "config-f-1024": the paper's config F
        (channel_base 32768: 512 channels up to 64^2, then halving per block).
    "paper256": stylegan2-ada's 256^2 config (channel_base 16384), the init kwargs of
        the DragGAN 256^2 generator in the reference key list.
    "small": 128^2 with 64-dim latents and at most 64 channels, for quick sessions.
    "synthface256": 256^2, at most 128 channels (16 at 256^2): the bundled generator.
    "tiny": 32^2 with 32-dim latents, for tests.

Channels at block resolution r are ``min(channel_base // r, channel_max)``.
``num_fp16_res`` is kept so configs round-trip to NVlabs init kwargs, but it does not
change the computation: the generator runs in float32, or in the dtype a caller
requests (see :class:`~facegen_rt.models.stylegan2.synthesis.SynthesisNetwork`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

ARCHITECTURES = ("orig", "skip")


@dataclass(frozen=True)
class MappingConfig:
    """MappingNetwork arguments (NVlabs ``mapping_kwargs``)."""

    num_layers: int = 8
    embed_features: Optional[int] = None  # label embedding width; None = w_dim
    layer_features: Optional[int] = None  # hidden width; None = w_dim
    activation: str = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: Optional[float] = 0.998


@dataclass(frozen=True)
class StyleGAN2Config:
    """A StyleGAN2 generator: mapping z (+ label c) -> ws, synthesis ws -> image.

    ``fused_modconv_default`` is True, False or "inference_only" (fused in eval mode,
    non-fused in training mode, the setting of the stylegan3-repo pickles DragGAN uses).
    ``resize`` is DragGAN's optional output resize (bilinear up, area down), None = off.
    """

    name: str = "config-f-256"
    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 256
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 4
    conv_clamp: Optional[float] = 256
    architecture: str = "skip"
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)
    kernel_size: int = 3
    use_noise: bool = True
    activation: str = "lrelu"
    fused_modconv_default: Union[bool, str] = "inference_only"
    resize: Optional[int] = None
    mapping: MappingConfig = field(default_factory=MappingConfig)

    @property
    def block_resolutions(self) -> list[int]:
        """[4, 8, ..., img_resolution]: one synthesis block per resolution."""
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def channels(self, res: int) -> int:
        """Feature channels of the block at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)

    @property
    def num_ws(self) -> int:
        """Number of w vectors: two per block (one for b4) plus the last ToRGB."""
        return 2 * len(self.block_resolutions)

    def validate(self) -> "StyleGAN2Config":
        r = self.img_resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"StyleGAN2Config {self.name!r}: img_resolution must be a power of "
                             f"two >= 4, got {r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"StyleGAN2Config {self.name!r}: architecture {self.architecture!r} "
                             f"is not supported; use one of {ARCHITECTURES}")
        if self.fused_modconv_default not in (True, False, "inference_only"):
            raise ValueError(f"StyleGAN2Config {self.name!r}: fused_modconv_default must be "
                             f"True, False or 'inference_only', got {self.fused_modconv_default!r}")
        for res in self.block_resolutions:
            if self.channels(res) < 1:
                raise ValueError(f"StyleGAN2Config {self.name!r}: no channels left at {res}^2 "
                                 f"(channel_base {self.channel_base})")
        if self.z_dim <= 0 and self.c_dim <= 0:
            raise ValueError(f"StyleGAN2Config {self.name!r}: z_dim or c_dim must be positive")
        if self.activation != "lrelu" or self.mapping.activation not in ("lrelu", "linear"):
            raise ValueError(f"StyleGAN2Config {self.name!r}: only 'lrelu' layers are supported")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StyleGAN2Config":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        values = dict(d)
        if "mapping" in values:
            values["mapping"] = _build(MappingConfig, values["mapping"])
        return _build(cls, values).validate()

    def to_init_kwargs(self) -> dict[str, Any]:
        """NVlabs Generator init kwargs (the stylegan3-repo layout, synthesis kwargs flat)."""
        m = self.mapping
        mapping_kwargs = {"num_layers": m.num_layers}
        for key, default in (("embed_features", None), ("layer_features", None),
                             ("activation", "lrelu"), ("lr_multiplier", 0.01),
                             ("w_avg_beta", 0.998)):
            if getattr(m, key) != default:
                mapping_kwargs[key] = getattr(m, key)
        kwargs = dict(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim,
                      img_resolution=self.img_resolution, img_channels=self.img_channels,
                      mapping_kwargs=mapping_kwargs, channel_base=self.channel_base,
                      channel_max=self.channel_max, num_fp16_res=self.num_fp16_res,
                      conv_clamp=self.conv_clamp, fused_modconv_default=self.fused_modconv_default)
        for key, default in (("architecture", "skip"), ("resample_filter", (1, 3, 3, 1)),
                             ("kernel_size", 3), ("use_noise", True), ("resize", None)):
            if getattr(self, key) != default:
                value = getattr(self, key)
                kwargs[key] = list(value) if isinstance(value, tuple) else value
        return kwargs

    @classmethod
    def from_init_kwargs(cls, kwargs: Mapping[str, Any], args: Sequence[Any] = (),
                         name: str = "checkpoint") -> "StyleGAN2Config":
        """A config from NVlabs Generator init args/kwargs.

        Accepts the stylegan3-repo layout (synthesis kwargs flat), the stylegan2-ada
        layout (``synthesis_kwargs={...}``) and DragGAN's extra ``resize``. Memory-format
        and fp16 switches are accepted and have no effect. Unknown keys raise ValueError.
        """
        positional = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
        if len(args) > len(positional):
            raise ValueError(f"StyleGAN2Config: too many positional init args: {list(args)}")
        flat = dict(zip(positional, args))
        flat.update(kwargs)
        flat.update(dict(flat.pop("synthesis_kwargs", None) or {}))
        mapping_kwargs = dict(flat.pop("mapping_kwargs", None) or {})
        for ignored in ("fp16_channels_last", "channels_last"):
            flat.pop(ignored, None)
        # NVlabs' class default (the stylegan3-repo pickles store "inference_only").
        values: dict[str, Any] = {"name": name, "fused_modconv_default": True}
        for key, value in flat.items():
            if key == "resample_filter":
                value = tuple(int(v) for v in value)
            values[key] = _plain(value)
        missing = [k for k in positional if k not in values]
        if missing:
            raise ValueError(f"StyleGAN2Config: init kwargs lack {missing}")
        values["mapping"] = _build(MappingConfig, {k: _plain(v) for k, v in mapping_kwargs.items()})
        return _build(cls, values).validate()


def _plain(value: Any) -> Any:
    """numpy scalars (common in pickled kwargs) -> Python numbers."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value


def _build(cls, values: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _preset(name: str, res: int, **kw: Any) -> StyleGAN2Config:
    return StyleGAN2Config(name=name, img_resolution=res, **kw)


PRESETS: dict[str, StyleGAN2Config] = {
    "config-f-256": _preset("config-f-256", 256),
    "config-f-512": _preset("config-f-512", 512),
    "config-f-1024": _preset("config-f-1024", 1024),
    "paper256": _preset("paper256", 256, channel_base=16384),
    "small": _preset("small", 128, z_dim=64, w_dim=64, channel_base=2048, channel_max=64,
                     mapping=MappingConfig(num_layers=4)),
    # The bundled SynthFace generator (facegen_rt/assets/stylegan2): SynthFace's 64-dim z,
    # no noise inputs (its regression target is deterministic), mapping at full lr.
    "synthface256": _preset("synthface256", 256, z_dim=64, w_dim=256, channel_base=4096,
                            channel_max=128, use_noise=False,
                            mapping=MappingConfig(num_layers=4, lr_multiplier=1.0)),
    "tiny": _preset("tiny", 32, z_dim=32, w_dim=32, channel_base=512, channel_max=32,
                    mapping=MappingConfig(num_layers=2)),
}


def get_preset(name: str) -> StyleGAN2Config:
    """The named preset, validated; ValueError lists the known names."""
    try:
        return PRESETS[name].validate()
    except KeyError:
        raise ValueError(f"unknown StyleGAN2 preset {name!r}; "
                         f"choose one of {sorted(PRESETS)}") from None
