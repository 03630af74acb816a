"""Low-rank adapters (LoRA) for nn.Linear and nn.Conv2d, with merging for inference.

A wrapped layer keeps the frozen base weight W and learns W' = W + (alpha / r) U D
(D: [r, in] or [r, in, kh, kw], U: [out, r], U zero-initialised so a fresh adapter
changes nothing). The adapted weight is exposed as ``.weight`` and the forward runs
``F.linear`` / ``F.conv2d`` with it, because the SCA-DM UNet reads some layers'
weights directly (SpatialTransformer's proj_in/proj_out run as ``F.linear`` on
``.weight``; cache checks read ``.weight.dtype``): a "base(x) + U(D(x))" adapter
would be silently skipped there. For these model sizes forming the [out, in] delta
costs far less than the layer itself.

:func:`merge_lora` replaces every adapter by a plain layer holding W', so a merged
student is an ordinary UNet (same outputs, same state_dict keys as the teacher).
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Named layer filters for :func:`add_lora`.
TARGETS = ("all", "attention")


class _LoRABase(nn.Module):
    """Shared bookkeeping: the frozen base layer and the two low-rank factors."""

    base: Union[nn.Linear, nn.Conv2d]

    def __init__(self, base, rank: int, alpha: Optional[float]):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.scale = self.alpha / rank

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.base.bias

    def delta(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        """The adapted weight W + scale * U D (differentiable in U and D)."""
        return self.base.weight + self.delta().to(self.base.weight.dtype)

    def merged(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def _filled(self, layer: nn.Module) -> nn.Module:
        """``layer`` (a fresh plain layer of the base's kind) given the adapted weight
        and the base bias."""
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer


class LoRALinear(_LoRABase):
    """nn.Linear with a rank-r adapter: [*, in] -> [*, out]."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: Optional[float] = None):
        super().__init__(base, rank, alpha)
        w = base.weight
        self.lora_down = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype,
                                                  device=w.device))
        self.lora_up = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype,
                                                device=w.device))
        nn.init.kaiming_uniform_(self.lora_down, a=math.sqrt(5))

    def delta(self) -> torch.Tensor:
        """[out, in]."""
        return self.scale * (self.lora_up @ self.lora_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def merged(self) -> nn.Linear:
        b = self.base
        return self._filled(nn.Linear(b.in_features, b.out_features, bias=b.bias is not None,
                                      device=b.weight.device, dtype=b.weight.dtype))


class LoRAConv2d(_LoRABase):
    """nn.Conv2d (groups = 1) with a rank-r adapter: D has the base kernel, U is 1x1."""

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: Optional[float] = None):
        if base.groups != 1:
            raise ValueError("LoRAConv2d supports groups=1 convolutions only")
        super().__init__(base, rank, alpha)
        w = base.weight
        self.lora_down = nn.Parameter(torch.empty(rank, *w.shape[1:], dtype=w.dtype,
                                                  device=w.device))
        self.lora_up = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_down, a=math.sqrt(5))

    def delta(self) -> torch.Tensor:
        """[out, in, kh, kw]."""
        d = self.lora_down.flatten(1)
        return self.scale * (self.lora_up @ d).view_as(self.base.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base
        if b.padding_mode != "zeros":
            raise ValueError("LoRAConv2d supports padding_mode='zeros' only")
        return F.conv2d(x, self.weight, self.bias, b.stride, b.padding, b.dilation, b.groups)

    def merged(self) -> nn.Conv2d:
        b = self.base
        return self._filled(nn.Conv2d(b.in_channels, b.out_channels, b.kernel_size, b.stride,
                                      b.padding, b.dilation, b.groups, bias=b.bias is not None,
                                      device=b.weight.device, dtype=b.weight.dtype))


LORA_TYPES = (LoRALinear, LoRAConv2d)


LayerFilter = Callable[[str, nn.Module], bool]


def _filter(target: Union[str, LayerFilter]) -> LayerFilter:
    if callable(target):
        return target
    if target == "all":
        return lambda name, m: True
    if target == "attention":
        # the transformer blocks' projections and feed-forward, plus proj_in/proj_out
        pat = re.compile(r"(transformer_blocks|proj_in|proj_out)")
        return lambda name, m: bool(pat.search(name))
    raise ValueError(f"unknown LoRA target {target!r}; choose one of {list(TARGETS)} "
                     "or pass a callable(name, module) -> bool")


def add_lora(model: nn.Module, rank: int = 4, alpha: Optional[float] = None,
             target: Union[str, Callable[[str, nn.Module], bool]] = "all") -> list[str]:
    """Wrap the model's Linear/Conv2d layers (those ``target`` selects) in place.

    Every base weight is frozen; only the adapters' ``lora_down``/``lora_up`` train.
    Returns the wrapped layers' qualified names. Grouped convolutions are skipped.
    """
    keep = _filter(target)
    model.requires_grad_(False)
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, LORA_TYPES) or not name:
            continue
        if any(name.startswith(n + ".") for n in names):
            continue  # inside an adapter already made (its .base)
        if isinstance(module, nn.Linear):
            wrapper = LoRALinear
        elif isinstance(module, nn.Conv2d) and module.groups == 1:
            wrapper = LoRAConv2d
        else:
            continue
        if not keep(name, module):
            continue
        _set_child(model, name, wrapper(module, rank, alpha))
        names.append(name)
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every adapter in ``model`` by a plain layer with the merged weight (in place;
    also returns ``model``). A bare adapter passed as ``model`` comes back merged."""
    if isinstance(model, LORA_TYPES):
        return model.merged()
    for name, module in list(model.named_modules()):
        if isinstance(module, LORA_TYPES):
            _set_child(model, name, module.merged())
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' trainable factors, in module order."""
    out = []
    for module in model.modules():
        if isinstance(module, LORA_TYPES):
            out += [module.lora_down, module.lora_up]
    return out


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
