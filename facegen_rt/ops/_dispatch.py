"""Calling an op: through its torch.library custom op, or straight to the op's body.

Each op is one ``torch.library.custom_op``, so graph capture (torch.compile,
torch.export, ONNX export), fake tensors and every other dispatcher feature see a
single node. In plain eager mode that node only adds cost: a custom op defined in
Python goes through the C++ dispatcher and back into Python, 15-30 microseconds per
call on this project's 2-core CPU, as much as the fused kernel itself takes at the
token counts of a 128^2 UNet. So an eager call whose inputs are ordinary tensors (or
parameters) runs the op's body directly; the body is the very function the custom op
wraps, so both routes compute the same thing. Under autograd the op's own formulas run
as a plain ``torch.autograd.Function`` instead (:func:`eager_autograd`). Shorter still,
the diffusion ops hand the commonest call, plain CPU tensors for the "cpu" backend, to
a C++ entry that checks everything at once (:func:`eager_cpu_entry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

from ._checks import nan_checks_enabled
from ._native import cpu_entry

if TYPE_CHECKING:
    from ._backends import OpBackends


# nn.Parameter disables __torch_function__, so it dispatches as a plain tensor does.
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _plain_eager(*tensors: torch.Tensor) -> bool:
    """No graph capture or tracing, no Python dispatch or function modes (fake tensors,
    functionalization, export), no functorch transforms (vmap, grad), and ordinary
    tensors or parameters rather than other subclasses."""
    # First, as the compilers evaluate it as a constant and trace no further.
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if (torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack()
            or torch._C._are_functorch_transforms_active()):
        return False
    # Loops rather than all()/any() over generators: this runs on every op call,
    # and the generators cost about a microsecond more here.
    for t in tensors:
        if type(t) not in _PLAIN_TYPES:
            return False
    return True


def _tracked(*tensors: torch.Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t.requires_grad:
            return True
    return False


def direct_call_allowed(*tensors: torch.Tensor) -> bool:
    """True when calling the op's body gives exactly what dispatching the op gives.

    That needs plain eager execution (see :func:`_plain_eager`) and no input that
    autograd should track (the op node is what autograd records or refuses).
    """
    return _plain_eager(*tensors) and not _tracked(*tensors)


def eager_cpu_entry(table: "OpBackends", backend: Optional[str], name: str,
                    tensors: tuple) -> Optional[Callable]:
    """The C++ entry ``facegen_rt._C.<name>`` when this call may try it, else None.

    The shortest route, for the most common call: when the body would run the "cpu"
    backend (named, or chosen automatically: it heads every table), a call may go
    straight to the kernel if NaN checks are off (the body runs them), nothing is
    being compiled, and every tensor is a plain Tensor or Parameter. The entry checks
    the rest in C++ (csrc/direct_call.h, and the op's devices, dtypes and shapes) and
    returns None when the call must take the route of :func:`call_op`, which then also
    reports bad inputs or a named backend that cannot run. Both routes run the same
    kernel on the same arguments; the Python checks and dispatch around it cost 10-20 us
    a call on this project's 2-core CPU, the entry about one.
    """
    if torch.compiler.is_compiling() or nan_checks_enabled():
        return None
    if table.requested(backend) not in (None, "cpu"):
        return None
    for t in tensors:
        if type(t) not in _PLAIN_TYPES:
            return None
    return cpu_entry(name)


def eager_autograd(name: str, op, body: Callable, backward: Callable,
                   setup_context: Callable) -> Callable:
    """Registers ``backward`` as the custom op's autograd formula, and returns the same
    formula as a ``torch.autograd.Function`` over ``body`` for plain eager calls.

    Under autograd the custom-op route goes through the dispatcher, a generated autograd
    node and back into Python: a tiny modulated_conv2d forward + backward took 208 us
    that way and 122 us through this Function (bias_act: 93 and 48 us); a DragGAN step
    makes ~20 such calls. The Function runs the same body, setup_context and backward,
    so both routes compute the same values and gradients; graph capture still sees the
    custom op (see :func:`call_op`). ``name`` names the Function, so the autograd node
    reads "<name>Backward".
    """
    op.register_autograd(backward, setup_context=setup_context)

    # forward(ctx, ...) rather than a separate setup_context: with one, apply() binds
    # the arguments through inspect.signature, ~40 microseconds a call.
    def forward(ctx, *args):
        output = body(*args)
        setup_context(ctx, args, output)
        return output

    function = type(name, (torch.autograd.Function,),
                    {"forward": staticmethod(forward), "backward": staticmethod(backward)})
    return function.apply


def call_op(op: Callable, body: Callable, tensors: tuple, *args,
            autograd: Callable | None = None) -> torch.Tensor:
    """Runs the op on ``args``: ``body(*args)`` in plain eager mode without autograd,
    ``autograd(*args)`` (from :func:`eager_autograd`) in plain eager mode when autograd
    tracks an input, and the custom op ``op(*args)`` otherwise."""
    if _plain_eager(*tensors):
        if not _tracked(*tensors):
            return body(*args)
        if autograd is not None:
            return autograd(*args)
    return op(*args)


def cpu_backward_applies(table, backend: str, x: torch.Tensor, grad: torch.Tensor) -> bool:
    """True when an op's C++ backward can serve this gradient.

    That needs the op's "cpu" backend to accept ``x`` (built, float32/bfloat16 CPU
    tensor), ``grad`` in x's dtype, no other backend forced (a forced "reference" keeps
    the PyTorch backward, the oracle), and plain eager tensors: no graph of the
    backward being recorded (the C++ result is not differentiable again) and no
    tracing (torch.compile traces the PyTorch backward instead).

    Args:
        table: the op's OpBackends; backend: the backend argument the op was called with.
    """
    return (x.device.type == "cpu" and grad.dtype == x.dtype and not torch.is_grad_enabled()
            and direct_call_allowed(x, grad) and table.requested(backend) in (None, "cpu")
            and not table.reasons(table.get("cpu"), "cpu", x))
