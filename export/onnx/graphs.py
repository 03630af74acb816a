"""The exported graphs: small wrapper modules with fixed, named tensor inputs.

Each wrapper turns a model's Python-level options into a fixed computation (ONNX has
no keyword arguments) and says what the graph's inputs and outputs are:

SCA-DM
    unet_step      x [B, C, h, w], timesteps [B] int64, context [B, 19, D],
                   seg [B, 19, H, W] one-hot (zeros: unconditional) -> eps (or v) [B, C, h, w]
    style_encoder  image [B, 3, H, W] in [-1, 1], seg [B, 19, H, W] -> context [B, 19, D]
    vq_decoder     latent [B, C, h, w] (diffusion scale) -> image [B, 3, H, W] in [0, 1]
StyleGAN2
    mapping        z [B, z_dim] (, c [B, c_dim]), truncation_psi [1] -> ws [B, num_ws, w_dim]
    synthesis      ws [B, num_ws, w_dim] -> image [B, 3, R, R]
                   (, features [B, C_k, r_k, r_k]: block k's output, for drag tracking)

The UNet step recomputes the mask-dependent SPADE maps and the style K/V inside the
graph: the eager pipeline caches them per run, which an ONNX step graph with four
inputs cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GraphSpec:
    """One graph to export.

    Attributes:
        name: file stem ("unet_step").
        module: the wrapper, in eval mode.
        input_names, output_names: graph value names, in forward order.
        make_inputs: ``make_inputs(batch, generator) -> tuple of tensors`` (example and
            parity-test inputs; random, but valid: one-hot masks, in-range timesteps).
        batched: per input, whether dim 0 is the batch (dynamic with --dynamic-batch).
        doc: one line for the manifest.
    """

    name: str
    module: nn.Module
    input_names: list[str]
    output_names: list[str]
    make_inputs: Callable[[int, torch.Generator], tuple]
    batched: list[bool]
    doc: str = ""
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- SCA-DM

class UNetStep(nn.Module):
    """One denoiser evaluation: (x, timesteps, context, seg) -> model output."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, timesteps, context, seg):
        return self.unet(x, timesteps, context=context, seg=seg)


class StyleEncoderGraph(nn.Module):
    """Reference image in [-1, 1] and its one-hot mask -> style tokens."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, image, seg):
        return self.encoder(image, seg)


class VQDecoderGraph(nn.Module):
    """Diffusion-scale latent -> image in [0, 1], as SemanticPipeline.decode.

    Quantization is the codebook argmin of VectorQuantizer.indices, written without its
    chunk loop (a Python loop over a symbolic length cannot be exported); the distance
    keeps the expanded form |z|^2 + |e|^2 - 2 z.e, so ties resolve as in eager.
    """

    def __init__(self, vq: nn.Module, scale_factor: float):
        super().__init__()
        self.vq = vq
        self.scale_factor = float(scale_factor)

    def forward(self, latent):
        z = latent / self.scale_factor
        B, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)
        e = self.vq.quantize.embedding.weight
        d = (flat ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * (flat @ e.t())
        zq = F.embedding(d.argmin(1), e).reshape(B, h, w, D).permute(0, 3, 1, 2)
        z = z + (zq - z)  # the straight-through form eager returns, for bit parity
        x = self.vq.decoder(self.vq.post_quant_conv(z))
        return (x.clamp(-1, 1) + 1) / 2


def _onehot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def scadm_graphs(modules: dict, cfg) -> list[GraphSpec]:
    """The three SCA-DM graphs for modules {"unet", "style_encoder", "vq"} of config cfg."""
    R, D, S = cfg.unet.num_classes, cfg.unet.context_dim, cfg.image_size
    C, lat = cfg.unet.in_channels, cfg.latent_size
    T = cfg.schedule.num_timesteps

    def seg(B, g):
        return _onehot(torch.randint(0, R, (B, S, S), generator=g), R)

    def unet_inputs(B, g):
        return (torch.randn(B, C, lat, lat, generator=g),
                torch.randint(0, T, (B,), generator=g),
                torch.randn(B, R, D, generator=g) * 0.5, seg(B, g))

    def style_inputs(B, g):
        return (torch.rand(B, 3, S, S, generator=g) * 2 - 1, seg(B, g))

    def vq_inputs(B, g):
        return (torch.randn(B, cfg.vq.embed_dim, lat, lat, generator=g) * cfg.scale_factor,)

    return [
        GraphSpec("unet_step", UNetStep(modules["unet"]).eval(),
                  ["x", "timesteps", "context", "seg"], ["model_output"], unet_inputs,
                  [True] * 4, "one SCA-DM UNet evaluation (eps or v, see prediction)"),
        GraphSpec("style_encoder", StyleEncoderGraph(modules["style_encoder"]).eval(),
                  ["image", "seg"], ["context"], style_inputs, [True, True],
                  "reference image in [-1, 1] + one-hot mask -> region style tokens"),
        GraphSpec("vq_decoder", VQDecoderGraph(modules["vq"], cfg.scale_factor).eval(),
                  ["latent"], ["image"], vq_inputs, [True],
                  "diffusion-scale latent -> quantize -> VQ decoder -> image in [0, 1]"),
    ]


# ----------------------------------------------------------------------------- StyleGAN2

class MappingGraph(nn.Module):
    """z (and c) -> ws [B, num_ws, w_dim], truncated towards w_avg by ``truncation_psi``.

    psi is an input, so one graph serves every truncation; psi = 1 is no truncation.
    """

    def __init__(self, mapping: nn.Module):
        super().__init__()
        self.mapping = mapping
        self.has_c = mapping.c_dim > 0
        self.has_avg = hasattr(mapping, "w_avg")

    def forward(self, *inputs):
        z = inputs[0] if self.mapping.z_dim > 0 else None
        c = inputs[1] if self.has_c else None
        psi = inputs[-1]
        ws = self.mapping(z, c)
        if not self.has_avg:
            return ws
        w_avg = self.mapping.w_avg.to(ws.dtype)
        return w_avg + psi.reshape(1, 1, 1) * (ws - w_avg)


class SynthesisGraph(nn.Module):
    """ws -> image (and one block's features), with constant noise and non-fused modconv.

    noise_mode "const" (the noise_const buffers) makes the graph deterministic;
    fused_modconv=False is DragGAN's renderer path, and the only one whose grouped
    convolution does not depend on the batch size.
    """

    def __init__(self, synthesis: nn.Module, feature_block: Optional[int] = None):
        super().__init__()
        self.synthesis = synthesis
        self.feature_block = feature_block

    def forward(self, ws):
        if self.feature_block is None:
            return self.synthesis(ws, noise_mode="const", fused_modconv=False)
        img, feats = self.synthesis(ws, noise_mode="const", fused_modconv=False,
                                    return_features=True)
        return img, feats[self.feature_block]


def stylegan2_graphs(generator: nn.Module, feature_res: Optional[int] = None) -> list[GraphSpec]:
    """mapping and synthesis graphs of a Generator; ``feature_res`` adds a features output."""
    mapping, synthesis = generator.mapping, generator.synthesis
    num_ws, w_dim = synthesis.num_ws, synthesis.w_dim
    names = (["z"] if mapping.z_dim > 0 else []) + (["c"] if mapping.c_dim > 0 else [])

    def mapping_inputs(B, g):
        out = []
        if mapping.z_dim > 0:
            out.append(torch.randn(B, mapping.z_dim, generator=g))
        if mapping.c_dim > 0:
            out.append(torch.randn(B, mapping.c_dim, generator=g))
        out.append(torch.rand(1, generator=g) * 0.5 + 0.5)
        return tuple(out)

    def synthesis_inputs(B, g):
        return (torch.randn(B, num_ws, w_dim, generator=g),)

    block = None if feature_res is None else synthesis.block_index(int(feature_res))
    outputs = ["image"] + ([] if block is None else ["features"])
    extra = {} if block is None else {"feature_resolution": int(feature_res),
                                      "feature_block": block}
    return [
        GraphSpec("mapping", MappingGraph(mapping).eval(), names + ["truncation_psi"], ["ws"],
                  mapping_inputs, [True] * len(names) + [False],
                  "z (, c) -> ws, truncated: ws = w_avg + psi (ws - w_avg)"),
        GraphSpec("synthesis", SynthesisGraph(synthesis, block).eval(), ["ws"], outputs,
                  synthesis_inputs, [True],
                  "ws -> image (noise_mode const, non-fused modconv)"
                  + ("" if block is None else f", plus block {block} features for drag"),
                  extra),
    ]
