"""Calling an op: through its torch.library custom op, or straight to the op's body.

Each op is one ``torch.library.custom_op``, so graph capture (torch.compile,
torch.export, ONNX export), fake tensors and every other dispatcher feature see a
single node. In plain eager mode that node only adds cost: a custom op defined in
Python goes through the C++ dispatcher and back into Python, 15-30 microseconds per
call on this project's 2-core CPU, as much as the fused kernel itself takes at the
token counts of a 128^2 UNet. So an eager call whose inputs are ordinary tensors runs
the op's body directly; the body is the very function the custom op wraps, so both
routes compute the same thing.
"""

from __future__ import annotations

from typing import Callable

import torch


def direct_call_allowed(*tensors: torch.Tensor) -> bool:
    """True when calling the op's body gives exactly what dispatching the op gives.

    That needs plain eager execution: no graph capture or tracing, no Python dispatch
    or function modes (fake tensors, functionalization, export), no functorch
    transforms (vmap, grad), ordinary tensors rather than subclasses, and no input
    that autograd should track (the op node is what autograd records or refuses).
    """
    # First, as the compilers evaluate it as a constant and trace no further.
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if (torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack()
            or torch._C._are_functorch_transforms_active()):
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if type(t) is not torch.Tensor or (grad and t.requires_grad):
            return False
    return True


def call_op(op: Callable, body: Callable, tensors: tuple, *args) -> torch.Tensor:
    """``body(*args)`` when :func:`direct_call_allowed` holds for ``tensors``, else ``op(*args)``."""
    if direct_call_allowed(*tensors):
        return body(*args)
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
