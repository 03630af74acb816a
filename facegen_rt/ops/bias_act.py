"""StyleGAN2 bias + activation: ``clamp(gain * act(x + b), -clamp, clamp)``.

Every StyleGAN2 layer ends with this (NVlabs torch_utils/ops/bias_act.py): the bias is
added along one dimension, then the activation, the gain and the optional clamp. The
fused kernels do it in one pass where the eager formulation makes four.

Gradients: the backward is a closed formula (the activation's slope times the gain,
zeroed where the clamp is active). For float32/bfloat16 CPU tensors it runs in the C++
kernel (one pass for dx and db); otherwise, when a backend is forced to "reference",
and whenever a graph of the backward is recorded (create_graph=True), it runs in
plain PyTorch, so second-order gradients work too (zero second derivative, as for any
piecewise-linear function). The PyTorch formula is the oracle the C++ one is tested
against.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ._backends import Backend, OpBackends, dtype_refusals
from ._checks import FLOAT_DTYPES, check_finite, check_like
from ._dispatch import call_op, cpu_backward_applies, eager_autograd
from ._native import compiled, cpu_kernel_unavailable, triton_device_refusals, triton_unavailable

OP = "bias_act"

# Default alpha (negative slope) and gain per activation, as NVlabs activation_funcs.
ACTIVATIONS = {
    "linear": (0.0, 1.0),
    "lrelu": (0.2, math.sqrt(2)),
}


def _resolve(act: str, alpha: Optional[float], gain: Optional[float],
             clamp: Optional[float]) -> tuple[float, float, float]:
    """NVlabs defaults: per-activation alpha and gain; clamp -1 means no clamp."""
    def_alpha, def_gain = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else def_alpha)
    gain = float(gain if gain is not None else def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return alpha, gain, clamp


def _bias_shape(x: torch.Tensor, dim: int) -> list[int]:
    dim = dim % x.dim()
    return [-1 if i == dim else 1 for i in range(x.dim())]


def bias_act_reference(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1,
                       act: str = "linear", alpha: Optional[float] = None,
                       gain: Optional[float] = None, clamp: Optional[float] = None) -> torch.Tensor:
    """NVlabs ``_bias_act_ref`` in plain PyTorch.

    Args:
        x: any shape, e.g. [N, C, H, W] activations or [N, C] features.
        b: [x.shape[dim]] bias, or None.
        dim: the dimension of x that b runs along (negative counts from the end).
        act: "linear" or "lrelu".
        alpha: lrelu negative slope; None = 0.2.
        gain: output scale; None = 1 for linear, sqrt(2) for lrelu.
        clamp: clamp the output to [-clamp, clamp]; None (or negative) = no clamp.
    Returns:
        Tensor of x's shape and dtype, contiguous.
    """
    alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape(_bias_shape(x, dim))
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x.contiguous()


def _reference(x, b, dim, act, alpha, gain, clamp):
    out = bias_act_reference(x, b, dim, act, alpha, gain, clamp if clamp >= 0 else None)
    # The identity case (linear, no bias, gain 1) returns x itself; an op's output must
    # not alias its input.
    return out.clone() if out is x else out


# Argument contract for compiled backends:
# x contiguous-or-strided, b [C] or None, resolved alpha/gain, clamp < 0 = none.
def _cpu(x, b, dim, act, alpha, gain, clamp):
    return compiled().bias_act(x, b, dim, act, alpha, gain, clamp)


def _triton(x, b, dim, act, alpha, gain, clamp):
    from facegen_rt.kernels.bias_act import bias_act_triton

    return bias_act_triton(x, b, dim, act, alpha, gain, clamp)


_LOWP = (torch.float32, torch.bfloat16)


def _cpu_unavailable():
    return cpu_kernel_unavailable("bias_act")


def _cpu_refusals(x, *args):
    return dtype_refusals("x", x, _LOWP)


def _triton_refusals(x, b, *args):
    tensors = [x] if b is None else [x, b]
    return triton_device_refusals(*tensors) + dtype_refusals("x", x, _LOWP)


# Compiled kernels go ahead of the reference.
BACKENDS = OpBackends(OP, [
    Backend("cpu", _cpu, _cpu_unavailable, _cpu_refusals, devices=("cpu",)),
    Backend("triton", _triton, triton_unavailable, _triton_refusals, devices=("cuda",)),
    Backend("reference", _reference, devices=("cpu", "cuda")),
])


def _bias_act_body(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float,
                   gain: float, clamp: float, backend: str) -> torch.Tensor:
    check_finite(OP, x=x, **({} if b is None else {"b": b}))
    impl = BACKENDS.select(backend, x.device.type, x, b, dim, act, alpha, gain, clamp)
    return impl.run(x, b, dim, act, alpha, gain, clamp)


# One graph node for compile and export; plain eager calls run the body directly
# (see _dispatch).
_bias_act_op = torch.library.custom_op("facegen::bias_act", _bias_act_body, mutates_args=())


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp, backend):
    return x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp, backend = inputs
    ctx.save_for_backward(x, b)
    ctx.args = (dim, act, alpha, gain, clamp)
    ctx.backend = backend


def _backward(ctx, grad):
    """dy/dx = gain * slope(x + b), zero where the clamp cut the output; db sums dx."""
    x, b = ctx.saved_tensors
    dim, act, alpha, gain, clamp = ctx.args
    if cpu_backward_applies(BACKENDS, ctx.backend, x, grad):
        need_db = b is not None and ctx.needs_input_grad[1]
        dx, db = compiled().bias_act_backward(grad, x, b, dim, act, alpha, gain, clamp, need_db)
        return dx, db, None, None, None, None, None, None
    return _reference_backward(ctx, grad, x, b, dim, act, alpha, gain, clamp)


def _reference_backward(ctx, grad, x, b, dim, act, alpha, gain, clamp):
    """The backward in plain PyTorch (differentiable; the C++ backward's oracle)."""
    z = x if b is None else x + b.reshape(_bias_shape(x, dim))
    if act == "linear":
        slope = torch.ones_like(z)
    else:  # leaky_relu's own backward uses the same convention: slope alpha at z <= 0
        slope = (z > 0).to(z.dtype) * (1.0 - alpha) + alpha
    if clamp >= 0:
        # torch.clamp passes the gradient where lo <= y <= hi (inclusive), so do we.
        y = z * slope * gain
        slope = slope * (y.abs() <= clamp).to(z.dtype)
    dx = grad * (slope * gain)
    db = None
    if b is not None and ctx.needs_input_grad[1]:
        others = [i for i in range(dx.dim()) if i != dim]
        db = dx.sum(dim=others) if others else dx  # sum(dim=[]) would reduce everything
    return dx, db, None, None, None, None, None, None


_bias_act_autograd = eager_autograd(OP, _bias_act_op, _bias_act_body, _backward,
                                    _setup_context)


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1,
             act: str = "linear", alpha: Optional[float] = None, gain: Optional[float] = None,
             clamp: Optional[float] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Fused bias + activation + gain + clamp; see :func:`bias_act_reference` for the math.

    Args:
        x: any shape (at least 1-D), float32, bfloat16 or float64.
        b: [x.shape[dim]] bias of x's dtype and device, or None.
        dim: dimension of x that b runs along (negative counts from the end).
        act: "linear" or "lrelu".
        alpha: lrelu negative slope; None = 0.2.
        gain: output scale; None = the activation's default (1 or sqrt(2)).
        clamp: non-negative clamp bound, or None for no clamp.
        backend: force a backend by name; None chooses automatically.
    Returns:
        Tensor of x's shape and dtype, contiguous. Differentiable in x and b.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{OP}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{OP}: x has dtype {str(x.dtype).replace('torch.', '')}; "
                        "expected one of float32, bfloat16, float64")
    if x.dim() == 0:
        raise ValueError(f"{OP}: x must have at least 1 dim, got a scalar")
    if act not in ACTIVATIONS:
        raise ValueError(f"{OP}: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"{OP}: dim={dim} is out of range for x with shape {tuple(x.shape)}")
    dim = dim % x.dim()
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"{OP}: b must be a torch.Tensor or None, got {type(b).__name__}")
        check_like(OP, "x", x, b=b)
        if b.dim() != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"{OP}: b must have shape ({x.shape[dim]},) (x.shape[{dim}]), "
                             f"got {tuple(b.shape)}")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f"{OP}: clamp must be non-negative or None, got {clamp}")
    alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    tensors = (x,) if b is None else (x, b)
    return call_op(_bias_act_op, _bias_act_body, tensors, x, b, dim, act, alpha, gain, clamp,
                   backend or "", autograd=_bias_act_autograd)
