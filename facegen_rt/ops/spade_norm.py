"""SPADE normalization: ``act(GroupNorm(x, affine off) * (1 + gamma) + beta)``.

SCA-DM applies it twice in every SDMResBlock, with gamma and beta predicted from
the semantic mask. The fused kernels read x, gamma and beta once each (statistics
per group in fp32, then one apply pass), where the eager formulation makes five
passes over [B, C, H, W] tensors.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._backends import Backend, OpBackends, dtype_refusals
from ._checks import check_finite, check_like, check_shape, check_tensor
from ._dispatch import call_op, eager_cpu_entry
from ._native import compiled, cpu_unavailable, triton_device_refusals, triton_unavailable

OP = "spade_norm"
ACTIVATIONS = ("", "silu")


def spade_norm_reference(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                         groups: int = 32, eps: float = 1e-5, act: str = "") -> torch.Tensor:
    """The seed's formulation in plain PyTorch (SCA-DM's SPADEGroupNorm forward).

    Args:
        x: [B, C, H, W] features.
        gamma, beta: [B, C, H, W] modulation maps (already computed from the mask).
        groups: number of GroupNorm groups; C % groups == 0.
        eps: GroupNorm epsilon.
        act: "" (none) or "silu", applied after the modulation.
    Returns:
        [B, C, H, W], contiguous, dtype of x.
    """
    out = F.group_norm(x, groups, eps=eps) * (1 + gamma) + beta
    if act == "silu":
        out = F.silu(out)
    return out.contiguous()


def _cpu(x, gamma, beta, groups, eps, act):
    return compiled().spade_norm(x, gamma, beta, groups, eps, act == "silu")


def _triton(x, gamma, beta, groups, eps, act):
    from facegen_rt.kernels.spade_norm import spade_norm_triton

    return spade_norm_triton(x, gamma, beta, groups, eps, act)


_LOWP = (torch.float32, torch.bfloat16)
BACKENDS = OpBackends(OP, [
    Backend("cpu", _cpu, cpu_unavailable,
            lambda x, *a: dtype_refusals("x", x, _LOWP), devices=("cpu",)),
    Backend("triton", _triton, triton_unavailable,
            lambda x, g, b, *a: triton_device_refusals(x, g, b) + dtype_refusals("x", x, _LOWP),
            devices=("cuda",)),
    Backend("reference", spade_norm_reference, devices=("cpu", "cuda")),
])


def _spade_norm_body(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int,
                     eps: float, act: str, backend: str) -> torch.Tensor:
    check_finite(OP, x=x, gamma=gamma, beta=beta)
    impl = BACKENDS.select(backend, x.device.type, x, gamma, beta, groups, eps, act)
    return impl.run(x, gamma, beta, groups, eps, act)


# One graph node for compile and export; plain eager calls run the body directly
# (see _dispatch).
_spade_norm_op = torch.library.custom_op(
    "facegen::spade_norm", _spade_norm_body, mutates_args=())


@_spade_norm_op.register_fake
def _(x, gamma, beta, groups, eps, act, backend):
    return x.new_empty(x.shape)


def spade_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int = 32,
               eps: float = 1e-5, act: Optional[str] = None,
               backend: Optional[str] = None) -> torch.Tensor:
    """Fused SPADE normalization; see :func:`spade_norm_reference` for the math.

    Args:
        x, gamma, beta: [B, C, H, W], same dtype (float32, bfloat16 or float64) and device.
        groups: GroupNorm groups, must divide C.
        eps: GroupNorm epsilon.
        act: None or "silu".
        backend: force "cpu", "triton" or "reference"; None chooses automatically.
    Returns:
        [B, C, H, W] contiguous tensor of x's dtype.
    """
    entry = eager_cpu_entry(BACKENDS, backend, "spade_norm_eager", (x, gamma, beta))
    if (entry is not None and type(groups) is int and type(eps) is float
            and act in (None, "silu")):
        out = entry(x, gamma, beta, groups, eps, act == "silu")
        if out is not None:
            return out
    check_tensor(OP, "x", x, 4)
    check_tensor(OP, "gamma", gamma, 4)
    check_tensor(OP, "beta", beta, 4)
    check_like(OP, "x", x, gamma=gamma, beta=beta)
    check_shape(OP, "gamma", gamma, x.shape, "same as x")
    check_shape(OP, "beta", beta, x.shape, "same as x")
    if not isinstance(groups, int) or groups <= 0 or x.shape[1] % groups:
        raise ValueError(f"{OP}: groups={groups!r} must be a positive divisor of C={x.shape[1]}")
    if not eps > 0:
        raise ValueError(f"{OP}: eps must be positive, got {eps}")
    act = act or ""
    if act not in ACTIVATIONS:
        raise ValueError(f"{OP}: act must be None or 'silu', got {act!r}")
    return call_op(_spade_norm_op, _spade_norm_body, (x, gamma, beta),
                   x, gamma, beta, groups, float(eps), act, backend or "")
