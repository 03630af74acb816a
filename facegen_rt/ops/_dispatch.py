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
