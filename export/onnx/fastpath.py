"""onnxruntime fast path for fused graphs: facegen nodes run facegen_rt's C++ kernels.

Without this module, onnxruntime inlines each facegen node's local function (standard
ops). With it, the nodes whose op has a compiled CPU kernel in facegen_rt._C
(spade_norm, masked_cross_attention, shared_self_attention) run that kernel instead.

Route: onnxruntime-extensions' PyOp. It only serves the domain "ai.onnx.contrib", so
:func:`fast_path_model` moves those nodes to that domain (same op type, same
attributes) before the session is built, and :func:`register_kernels` registers one
Python kernel per op that hands the numpy buffers to facegen_rt._C through
torch.from_numpy (no copies). This path therefore needs torch and facegen_rt at run
time; the plain fused graph does not.

Why not a C++ custom-op library: it would need onnxruntime's C/C++ API headers, which
no package available to this project ships (the onnxruntime wheel has none); vendoring
them is ruled out. See export/tensorrt/PLUGINS.md for the TensorRT counterpart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnx

from .ops import DOMAIN, SPECS

CONTRIB = "ai.onnx.contrib"
#: ops with a compiled CPU kernel in facegen_rt._C
KERNEL_OPS = ("spade_norm", "masked_cross_attention", "shared_self_attention")
_REGISTERED = False


def fast_path_unavailable() -> Optional[str]:
    """Why the fast path can't run here, or None."""
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError:
        return "onnxruntime-extensions is not installed"
    from facegen_rt.ops._native import cpu_unavailable

    return cpu_unavailable()


def _kernel(op: str):
    import importlib

    import torch

    run = importlib.import_module(f"facegen_rt.ops.{op}")._cpu

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    if op == "spade_norm":
        def kernel(x, gamma, beta, **attrs):
            return run(tensor(x), tensor(gamma), tensor(beta), int(attrs["groups"]),
                       float(attrs["eps"]), attrs["act"]).numpy()
    elif op == "masked_cross_attention":
        def kernel(q, k, v, mask, **attrs):
            return run(tensor(q), tensor(k), tensor(v), tensor(mask),
                       float(attrs["scale"])).numpy()
    else:
        def kernel(q, k_self, v_self, k_ref, v_ref, ref_keep, **attrs):
            return run(tensor(q), tensor(k_self), tensor(v_self), tensor(k_ref), tensor(v_ref),
                       tensor(ref_keep), float(attrs["scale"]), bool(attrs["exclude"])).numpy()
    return kernel


def register_kernels() -> None:
    """Register the PyOp kernels with onnxruntime-extensions (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    why = fast_path_unavailable()
    if why:
        raise RuntimeError(f"onnxruntime fast path unavailable: {why}")
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    kinds = {"int": PyCustomOpDef.dt_int64, "bool": PyCustomOpDef.dt_int64,
             "float": PyCustomOpDef.dt_float, "str": PyCustomOpDef.dt_string}
    for op in KERNEL_OPS:
        spec = SPECS[op]
        inputs = [PyCustomOpDef.dt_bool if n == "ref_keep" else PyCustomOpDef.dt_float
                  for n in spec.input_names]
        onnx_op(op_type=spec.op_type, inputs=inputs, outputs=[PyCustomOpDef.dt_float],
                attrs={name: kinds[kind] for name, kind in spec.attrs})(_kernel(op))
    _REGISTERED = True


def fast_path_model(model: Union[str, Path, onnx.ModelProto]) -> onnx.ModelProto:
    """A copy of a fused model with its kernel-backed facegen nodes in ai.onnx.contrib."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types = {SPECS[op].op_type for op in KERNEL_OPS}
    moved = 0
    for node in out.graph.node:
        if node.domain == DOMAIN and node.op_type in types:
            node.domain = CONTRIB
            node.overload = ""
            moved += 1
    if moved and not any(o.domain == CONTRIB for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(CONTRIB, 1))
    return out


def fast_path_session(model: Union[str, Path, onnx.ModelProto], threads: Optional[int] = None,
                      session_options=None):
    """An onnxruntime InferenceSession of a fused model running facegen_rt kernels."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    register_kernels()
    so = session_options or ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(fast_path_model(model).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
