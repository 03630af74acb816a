"""StyleGAN2 layers with NVlabs parameter names: FullyConnectedLayer, SynthesisLayer,
ToRGBLayer.

Equalized learning rate: weights are stored unscaled (N(0, 1) / lr_multiplier at
init) and scaled at run time by ``weight_gain = lr_multiplier / sqrt(fan_in)``; biases
by ``bias_gain = lr_multiplier``. Checkpoint tensors therefore load unchanged.

Every layer computes in the dtype of its input activations; parameters are cast to
that dtype where they are used (float32 unless the caller asks for another dtype).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from facegen_rt.ops.bias_act import ACTIVATIONS, bias_act
from facegen_rt.ops.modulated_conv2d import modulated_conv2d
from facegen_rt.ops.upfirdn2d import setup_filter

NOISE_MODES = ("random", "const", "none")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) along ``dim`` (the mapping network's input norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate and an optional activation.

    Parameters: ``weight`` [out_features, in_features], ``bias`` [out_features].
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_features] -> [N, out_features], x's dtype."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling) + noise + bias + lrelu.

    Parameters: ``weight`` [out, in, k, k], ``noise_strength`` [], ``bias`` [out],
    ``affine.{weight,bias}`` [in, w_dim] / [in]. Buffers: ``resample_filter`` [4, 4],
    ``noise_const`` [resolution, resolution].
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = True,
                 activation: str = "lrelu", resample_filter: Sequence[int] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation][1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        shape = [out_channels, in_channels, kernel_size, kernel_size]
        self.weight = nn.Parameter(torch.randn(shape))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool = True, gain: float = 1) -> torch.Tensor:
        """x [N, in, res/up, res/up], w [N, w_dim] -> [N, out, res, res] in x's dtype.

        noise_mode: "random" (fresh N(0, 1) per call), "const" (the noise_const buffer)
        or "none".
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        styles = self.affine(w.to(x.dtype))
        noise = None
        if self.use_noise and noise_mode == "random":
            # Drawn in float32 as NVlabs does, so a seed gives the same noise in any dtype.
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                device=x.device) * self.noise_strength
            noise = noise.to(x.dtype)
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).to(x.dtype)
        # NVlabs flips the kernel only for the upsampling layers (it is slightly faster);
        # the result is the same math with a different weight orientation.
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation,
                        gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"w_dim={self.w_dim}, resolution={self.resolution}, up={self.up}")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation.

    Parameters: ``weight`` [img_channels, in, 1, 1], ``bias`` [img_channels],
    ``affine.{weight,bias}``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        shape = [out_channels, in_channels, kernel_size, kernel_size]
        self.weight = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        """x [N, in, H, W], w [N, w_dim] -> [N, img_channels, H, W] in x's dtype."""
        styles = self.affine(w.to(x.dtype)) * self.weight_gain
        x = modulated_conv2d(x, self.weight.to(x.dtype), styles, demodulate=False,
                             fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"w_dim={self.w_dim}")
