"""The StyleGAN2 mapping network: z (and label c) -> w, broadcast to num_ws, truncated.

Parameters (NVlabs names): ``fc{i}.weight`` / ``fc{i}.bias`` for the ``num_layers``
equalized-lr layers (lr_multiplier 0.01, lrelu), ``embed.*`` when c_dim > 0, and the
buffer ``w_avg`` [w_dim], the running mean of w used by the truncation trick.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .config import MappingConfig
from .layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """NVlabs MappingNetwork.

    Args:
        z_dim: latent width (0 = no latent); c_dim: label width (0 = unconditional).
        w_dim: output width; num_ws: how many copies of w to output (None = [N, w_dim]).
        config: layer count, widths, activation, lr multiplier, w_avg decay.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int],
                 config: Optional[MappingConfig] = None):
        super().__init__()
        config = config if config is not None else MappingConfig()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = config.num_layers
        self.w_avg_beta = config.w_avg_beta
        embed_features = config.embed_features if config.embed_features is not None else w_dim
        if c_dim == 0:
            embed_features = 0
        layer_features = config.layer_features if config.layer_features is not None else w_dim
        features = [z_dim + embed_features] + [layer_features] * (config.num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(config.num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(
                features[idx], features[idx + 1], activation=config.activation,
                lr_multiplier=config.lr_multiplier))
        if num_ws is not None and config.w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor] = None,
                truncation_psi: float = 1, truncation_cutoff: Optional[int] = None,
                update_emas: bool = False) -> torch.Tensor:
        """Map latents to ws.

        Args:
            z: [N, z_dim] latents (None when z_dim == 0).
            c: [N, c_dim] labels (None when c_dim == 0).
            truncation_psi: w = lerp(w_avg, w, psi); 1 = off.
            truncation_cutoff: truncate only the first this-many ws (None = all).
            update_emas: update w_avg with this batch's mean (training only).
        Returns:
            [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None), in the dtype of the
            parameters (float32 unless the model was converted).
        """
        dtype = self.fc0.weight.dtype
        x = None
        if self.z_dim > 0:
            _check_input("z", z, self.z_dim)
            x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            _check_input("c", c, self.c_dim)
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg; this mapping network does not track it")
            w_avg = self.w_avg.to(x.dtype)
            if self.num_ws is None or truncation_cutoff is None:
                x = w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([w_avg.lerp(x[:, :truncation_cutoff], truncation_psi),
                               x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


def _check_input(name: str, t: Optional[torch.Tensor], width: int) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != width:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"MappingNetwork: {name} must have shape (N, {width}), got {shape}")
