"""The StyleGAN2 synthesis network (ws -> image, with per-block features) and the
Generator that pairs it with the mapping network.

Parameter and buffer names follow NVlabs networks_stylegan2 (``synthesis.b{res}.*``,
``mapping.*``), so NVlabs state dicts load unchanged. Architecture "skip" (every
block adds its ToRGB output to the upsampled image) is the generator's default;
"orig" is supported too.

Features: block i (resolution 4 * 2**i) outputs x [N, channels(res), res, res].
DragGAN tracks points on block 5, b128 (256 channels in config F), at 256^2 and
512^2 alike; :meth:`SynthesisNetwork.block_index` maps a resolution to its index.
``up_to_block`` runs blocks 0..k only and skips every ToRGB: the cheap forward a
drag step needs.

Precision: ``num_fp16_res`` is not used. The network computes in the dtype of its
parameters (float32), or in the ``dtype`` passed to forward (e.g. torch.bfloat16;
weights are cast where used); the image accumulates in at least float32.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from facegen_rt.ops.upfirdn2d import setup_filter, upsample2d

from .config import StyleGAN2Config, get_preset
from .layers import SynthesisLayer, ToRGBLayer
from .mapping import MappingNetwork

FusedModconv = Union[bool, str, None]


class SynthesisBlock(nn.Module):
    """One resolution: [const or 2x-upsampling conv0] -> conv1 -> [ToRGB].

    Parameters: ``const`` [C, 4, 4] (first block only), ``conv0`` (not in the first
    block), ``conv1``, ``torgb`` (every block for "skip", the last for "orig").
    Buffer: ``resample_filter`` [4, 4] (upsamples the running image).
    """

    def __init__(self, in_channels: int, out_channels: int, resolution: int, is_last: bool,
                 config: StyleGAN2Config):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = config.w_dim
        self.resolution = resolution
        self.img_channels = config.img_channels
        self.is_last = is_last
        self.architecture = config.architecture
        self.fused_modconv_default = config.fused_modconv_default
        self.register_buffer("resample_filter", setup_filter(list(config.resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        layer_kwargs = dict(w_dim=config.w_dim, resolution=resolution,
                            kernel_size=config.kernel_size, use_noise=config.use_noise,
                            activation=config.activation, resample_filter=config.resample_filter,
                            conv_clamp=config.conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_conv += 1
        if is_last or config.architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, config.img_channels, w_dim=config.w_dim,
                                    conv_clamp=config.conv_clamp)
            self.num_torgb += 1

    def resolve_fused(self, fused_modconv: FusedModconv) -> bool:
        """None -> the config default; "inference_only" -> fused in eval mode only."""
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == "inference_only":
            return not self.training
        return bool(fused_modconv)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                dtype: torch.dtype, noise_mode: str = "random",
                fused_modconv: FusedModconv = None, rgb: bool = True
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run one block.

        Args:
            x: [N, in_channels, res/2, res/2] features (None for the first block).
            img: [N, img_channels, res/2, res/2] running image, or None.
            ws: [N, num_conv + num_torgb, w_dim] this block's ws.
            dtype: compute dtype of the features.
            rgb: False skips the ToRGB layer and the image (features only).
        Returns:
            (x [N, out_channels, res, res] in ``dtype``, img [N, img_channels, res, res] or None).
        """
        fused = self.resolve_fused(fused_modconv)
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)
        if not rgb:
            return x, None
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused)
            y = y.to(torch.promote_types(dtype, torch.float32))
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R], blocks ``b4`` ... ``b{R}``."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        config.validate()
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.num_fp16_res = config.num_fp16_res
        self.block_resolutions = config.block_resolutions
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = config.channels(res // 2) if res > 4 else 0
            is_last = res == self.img_resolution
            block = SynthesisBlock(in_channels, config.channels(res), res, is_last, config)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def block_index(self, resolution: int) -> int:
        """Index of the block at ``resolution`` (DragGAN's b128 is block 5)."""
        if resolution not in self.block_resolutions:
            raise ValueError(f"no synthesis block at {resolution}; "
                             f"blocks: {self.block_resolutions}")
        return self.block_resolutions.index(resolution)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random",
                fused_modconv: FusedModconv = None, return_features: bool = False,
                up_to_block: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                update_emas: bool = False, force_fp32: bool = False):
        """Synthesize images, optionally returning (or only computing) block features.

        Args:
            ws: [N, num_ws, w_dim].
            noise_mode: "random", "const" or "none".
            fused_modconv: True, False, "inference_only", or None (the config default).
                DragGAN's renderer runs the non-fused path (its generator is in training
                mode with "inference_only"): pass False to match it.
            return_features: also return every block's output features.
            up_to_block: run blocks 0..up_to_block only, without any ToRGB, and return
                their features (negative values count from the end).
            dtype: compute dtype; None = the parameters' dtype.
            update_emas, force_fp32: NVlabs arguments, accepted and without effect here
                (nothing to update at inference; float16 is never used).
        Returns:
            img [N, img_channels, R, R]; or (img, features) with ``return_features``;
            or features (a list of [N, C_i, r_i, r_i]) with ``up_to_block``.
        """
        if ws.dim() != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"synthesis: ws must have shape (N, {self.num_ws}, {self.w_dim}), "
                             f"got {tuple(ws.shape)}")
        blocks = self.blocks()
        last = len(blocks) - 1
        if up_to_block is not None:
            if not -len(blocks) <= up_to_block < len(blocks):
                raise ValueError(f"synthesis: up_to_block={up_to_block} is out of range for "
                                 f"{len(blocks)} blocks")
            last = up_to_block % len(blocks)
        if dtype is None:
            dtype = self.b4.const.dtype
        ws = ws.to(dtype)
        rgb = up_to_block is None
        x = img = None
        features = []
        w_idx = 0
        for block in blocks[:last + 1]:
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, dtype, noise_mode=noise_mode,
                           fused_modconv=fused_modconv, rgb=rgb)
            features.append(x)
        if up_to_block is not None:
            return features
        if return_features:
            return img, features
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}")


class Generator(nn.Module):
    """NVlabs StyleGAN2 Generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image).

    Build one with ``Generator(config)``, :meth:`from_preset` or :meth:`from_init_kwargs`
    (the init kwargs stored in NVlabs pickles).
    """

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        config = config.validate()
        self.config = config
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.c_dim, config.w_dim, self.num_ws,
                                      config.mapping)

    @classmethod
    def from_preset(cls, name: str) -> "Generator":
        return cls(get_preset(name))

    @classmethod
    def from_init_kwargs(cls, kwargs: dict, args: tuple = ()) -> "Generator":
        return cls(StyleGAN2Config.from_init_kwargs(kwargs, args))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor] = None,
                truncation_psi: float = 1, truncation_cutoff: Optional[int] = None,
                update_emas: bool = False, **synthesis_kwargs):
        """z [N, z_dim] (and c [N, c_dim]) -> image [N, img_channels, R, R] in [-1, 1]-ish.

        ``synthesis_kwargs`` go to :meth:`SynthesisNetwork.forward` (noise_mode,
        fused_modconv, return_features, up_to_block, dtype), and so does its return form.
        DragGAN's ``resize`` (config) resizes the image: bilinear up, area down.
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi,
                          truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        out = self.synthesis(ws, **synthesis_kwargs)
        if self.config.resize is None or synthesis_kwargs.get("up_to_block") is not None:
            return out
        if isinstance(out, tuple):
            return _resize(out[0], self.config.resize), out[1]
        return _resize(out, self.config.resize)


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """DragGAN's imresize: bilinear when enlarging, area when shrinking."""
    h = img.shape[-2]
    if size > h:
        return F.interpolate(img, [size, size], mode="bilinear")
    if size < h:
        return F.interpolate(img, [size, size], mode="area")
    return img
