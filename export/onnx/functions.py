"""Local function bodies for the fused flavour's facegen nodes.

A fused graph has one ``facegen::<OpType>`` node per custom op call. ONNX lets a model
carry a *local function* for such a node (a FunctionProto with a standard-op body), so
any runtime without a kernel for the op inlines the body and still runs the graph,
while a runtime with a kernel (see :mod:`.fastpath`) runs the kernel instead.

The body of a node is the op's own reference (:data:`.ops.SPECS`), exported on its own
for that node's attributes and input shapes, so the body computes exactly what the
portable flavour computes. One op type can therefore have several bodies (say, one per
feature-map size); ONNX tells them apart by the function ``overload`` id, which every
node names. The batch dimension stays symbolic in each body, so a dynamic-batch graph
keeps working at any batch size.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Optional

import onnx
import torch
from onnx import helper

from .ops import BY_OP_TYPE, DOMAIN, OpSpec, facegen_nodes

_DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
           onnx.TensorProto.BFLOAT16: torch.bfloat16, onnx.TensorProto.FLOAT16: torch.float16,
           onnx.TensorProto.BOOL: torch.bool}

#: Shape of one node input: a dim is an int (static) or a str (symbolic, e.g. "batch").
Shape = tuple


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, Shape]]:
    """name -> (elem_type, shape) for every typed value of the main graph."""
    out = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = v.type.tensor_type
        dims = tuple(d.dim_param if d.HasField("dim_param") else int(d.dim_value)
                     for d in t.shape.dim)
        out[v.name] = (t.elem_type, dims)
    for init in model.graph.initializer:
        out[init.name] = (init.data_type, tuple(int(d) for d in init.dims))
    return out


def _attr_values(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _key(op_type: str, attrs: dict, inputs: list) -> tuple[str, str]:
    """(canonical text, overload id) of a node's specialization."""
    def plain(v):
        return v.decode() if isinstance(v, bytes) else v

    text = json.dumps({"op": op_type, "attrs": {k: plain(v) for k, v in sorted(attrs.items())},
                       "inputs": inputs}, sort_keys=True, default=list)
    return text, hashlib.sha1(text.encode()).hexdigest()[:12]


class _Body(torch.nn.Module):
    """Calls one op's reference with fixed attributes; absent optional inputs are None."""

    def __init__(self, spec: OpSpec, attrs: dict, present: list[bool]):
        super().__init__()
        self.spec, self.attrs, self.present = spec, attrs, present

    def forward(self, *tensors):
        it = iter(tensors)
        args = [next(it) if p else None for p in self.present]
        return self.spec.reference(*args, **self.attrs)


def _example(shape: Shape, dtype: torch.dtype, sizes: dict[str, int]) -> torch.Tensor:
    dims = [sizes.setdefault(d, 2 + len(sizes)) if isinstance(d, str) else d for d in shape]
    if dtype == torch.bool:
        return torch.rand(dims) > 0.3
    return torch.randn(dims, dtype=dtype)


def build_function(spec: OpSpec, attrs: dict, inputs: list, overload: str,
                   opset: int) -> tuple[onnx.FunctionProto, list[onnx.FunctionProto]]:
    """Export ``spec.reference`` for one specialization as a FunctionProto.

    Args:
        spec: the op.
        attrs: the node's attributes, as python values (strings decoded).
        inputs: per formal input, None (absent) or (elem_type, shape).
        overload: the function's overload id.
        opset: default-domain opset, the same as the model's.
    Returns:
        (the function, any functions its body calls).
    """
    names = spec.input_names
    present = [i is not None for i in inputs]
    sizes: dict[str, int] = {}
    examples, dyn = [], []
    for info in inputs:
        if info is None:
            continue
        elem, shape = info
        examples.append(_example(shape, _DTYPES[elem], sizes))
        dyn.append({i: torch.export.Dim(f"d_{d}".replace("-", "_"), min=1, max=1 << 20)
                    for i, d in enumerate(shape) if isinstance(d, str)} or None)
    # One torch.export.Dim object per symbol, shared by every input that uses it.
    dims: dict[str, torch.export.Dim] = {}
    for spec_dyn in dyn:
        if spec_dyn:
            for i, d in list(spec_dyn.items()):
                spec_dyn[i] = dims.setdefault(d.__name__, d)
    kwargs_names = [n for n, p in zip(names, present) if p]
    body = _Body(spec, attrs, present).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            body, tuple(examples), dynamo=True, opset_version=opset, verbose=False,
            input_names=kwargs_names, output_names=["y"],
            dynamic_shapes=(tuple(dyn),), optimize=True)  # forward(*tensors)
    graph = program.model_proto.graph
    nodes = [helper.make_node("Constant", [], [init.name], value=init)
             for init in graph.initializer]
    nodes += list(graph.node)
    attr_protos = [helper.make_attribute(k, v) for k, v in sorted(attrs.items())]
    func = helper.make_function(
        DOMAIN, spec.op_type, names, ["y"], nodes,
        opset_imports=list(program.model_proto.opset_import), attributes=[],
        attribute_protos=attr_protos, overload=overload,
        doc_string=f"body: facegen_rt.ops {spec.name} reference for "
                   f"{json.dumps(_pretty(inputs))}")
    return func, list(program.model_proto.functions)


def _pretty(inputs: list) -> list:
    return [None if i is None else list(i[1]) for i in inputs]


def attach_functions(model: onnx.ModelProto, opset: int,
                     cache: Optional[dict] = None) -> int:
    """Give every facegen node an overload id and the model a body for each id.

    ``cache`` (canonical key -> FunctionProto list) lets several graphs of one export
    share bodies. Returns the number of distinct bodies in the model.
    """
    cache = {} if cache is None else cache
    types = _value_types(model)
    have = {(f.domain, f.name, f.overload) for f in model.functions}
    added = 0
    for node in facegen_nodes(model):
        spec = BY_OP_TYPE[node.op_type]
        attrs = {k: (v.decode() if isinstance(v, bytes) else v)
                 for k, v in _attr_values(node).items()}
        inputs = []
        for i, name in enumerate(spec.input_names):
            value = node.input[i] if i < len(node.input) else ""
            if not value:
                inputs.append(None)
                continue
            if value not in types:
                raise RuntimeError(f"fused export: no shape recorded for input {name!r} "
                                   f"({value}) of {node.op_type} node {node.name}")
            inputs.append(types[value])
        text, overload = _key(node.op_type, attrs, _pretty(inputs) + [
            [None if i is None else i[0] for i in inputs]])
        node.overload = overload
        if text not in cache:
            cache[text] = build_function(spec, attrs, inputs, overload, opset)
        func, extra = cache[text]
        for f in [func] + extra:
            ident = (f.domain, f.name, f.overload)
            if ident not in have:
                model.functions.append(f)
                have.add(ident)
                added += 1
    model.ir_version = max(model.ir_version, 10)  # function overloads need IR version 10
    return added
