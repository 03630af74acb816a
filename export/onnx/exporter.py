"""Export one graph to ONNX in either flavour, check it, write it with its manifest.

Flow for a :class:`~.graphs.GraphSpec`:

1. ``torch.export.export`` the wrapper once (batch dimension symbolic with
   ``dynamic_batch``), so both flavours come from the same program;
2. portable: ``run_decompositions(DECOMPOSITIONS)`` swaps every facegen custom op for
   its reference, then torch.onnx translates standard ops only;
   fused: torch.onnx translates each custom op to one facegen node
   (:func:`.ops.translation_table`), then :func:`.functions.attach_functions` gives each
   node its local function body;
3. the batch symbol is renamed "batch", the file written (weights as external data
   above 1.5 GB, the protobuf limit being 2 GB), ``onnx.checker`` run on the file
   with full_check (shape inference through every function body), and the manifest
   written next to it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import onnx
import torch

import facegen_rt

from .functions import attach_functions
from .graphs import GraphSpec
from .ops import DECOMPOSITIONS, DOMAIN, facegen_nodes, translation_table

FLAVOURS = ("portable", "fused")
#: Default-domain opsets this exporter is verified with (see tests/export).
SUPPORTED_OPSETS = (18, 20, 23)
DEFAULT_OPSET = 18
EXAMPLE_BATCH = 2  # a dynamic batch is traced at 2: sizes 0 and 1 get specialized by torch
EXTERNAL_DATA_BYTES = 1_500_000_000

_ELEM = {v: k for k, v in {
    "float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE,
    "float16": onnx.TensorProto.FLOAT16, "bfloat16": onnx.TensorProto.BFLOAT16,
    "int64": onnx.TensorProto.INT64, "int32": onnx.TensorProto.INT32,
    "bool": onnx.TensorProto.BOOL}.items()}


def check_opset(opset) -> int:
    """The opset as an int; ValueError naming --opset when it is not supported."""
    try:
        value = int(opset)
    except (TypeError, ValueError):
        value = None
    if value not in SUPPORTED_OPSETS or isinstance(opset, bool):
        raise ValueError(f"--opset {opset!r} is not supported; choose one of "
                         f"{', '.join(map(str, SUPPORTED_OPSETS))}")
    return value


def check_flavour(flavour: str) -> str:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {FLAVOURS}")
    return flavour


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def example_inputs(spec: GraphSpec, batch: int, seed: int = 0) -> tuple:
    return spec.make_inputs(batch, torch.Generator().manual_seed(seed))


def program(spec: GraphSpec, dynamic_batch: bool, batch: int) -> torch.export.ExportedProgram:
    """torch.export of the wrapper; dim 0 of every batched input shares one symbol."""
    args = example_inputs(spec, EXAMPLE_BATCH if dynamic_batch else batch)
    dyn = None
    if dynamic_batch:
        b = torch.export.Dim("batch", min=1, max=4096)
        dyn = tuple({0: b} if batched else None for batched in spec.batched)
        if len(spec.input_names) > 0 and _varargs(spec.module):
            dyn = (dyn,)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(spec.module, args, dynamic_shapes=dyn, strict=False)


def _varargs(module: torch.nn.Module) -> bool:
    import inspect

    params = inspect.signature(module.forward).parameters.values()
    return any(p.kind is p.VAR_POSITIONAL for p in params)


def to_onnx(spec: GraphSpec, ep: torch.export.ExportedProgram, flavour: str, opset: int,
            function_cache: Optional[dict] = None) -> onnx.ModelProto:
    """Translate an exported program to a ModelProto of the given flavour."""
    check_flavour(flavour)
    args = tuple(ep.example_inputs[0])
    kwargs = dict(input_names=spec.input_names, output_names=spec.output_names,
                  opset_version=opset, dynamo=True, verbose=False, optimize=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flavour == "portable":
            onx = torch.onnx.export(ep.run_decompositions(DECOMPOSITIONS), args, **kwargs)
        else:
            onx = torch.onnx.export(ep, args, custom_translation_table=translation_table(),
                                    **kwargs)
    model = onx.model_proto
    _name_batch(model, spec)
    if flavour == "fused":
        attach_functions(model, opset, function_cache)
    elif facegen_nodes(model):  # the decomposition table missed an op
        raise RuntimeError(f"{spec.name}: portable export still has facegen nodes: "
                           f"{sorted({n.op_type for n in facegen_nodes(model)})}")
    return model


def _name_batch(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Rename the batch symbol (torch calls it s0, s13, ...) to "batch" everywhere."""
    symbol = None
    for value, batched in zip(model.graph.input, spec.batched):
        dim = value.type.tensor_type.shape.dim[0] if batched else None
        if dim is not None and dim.HasField("dim_param"):
            symbol = dim.dim_param
            break
    if symbol is None:
        return
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param == symbol:
                dim.dim_param = "batch"


def _io(values) -> list[dict]:
    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({"name": v.name,
                    "shape": [d.dim_param if d.HasField("dim_param") else int(d.dim_value)
                              for d in t.shape.dim],
                    "dtype": _ELEM.get(t.elem_type, str(t.elem_type))})
    return out


def save_checked(model: onnx.ModelProto, path: Path) -> None:
    """Write ``path`` (external data when large) and run onnx.checker on the file."""
    path = Path(path)
    big = model.ByteSize() > EXTERNAL_DATA_BYTES
    data = path.with_suffix(".onnx.data")
    if data.exists():
        data.unlink()
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=data.name)
    onnx.checker.check_model(str(path), full_check=True)


def graph_manifest(model: onnx.ModelProto, spec: GraphSpec, flavour: str, opset: int,
                   dynamic_batch: bool, model_name: str, weights: dict, path: Path) -> dict:
    """The JSON manifest of one written graph."""
    ops = sorted({n.op_type for n in facegen_nodes(model)})
    return {
        "graph": spec.name,
        "file": path.name,
        "model": model_name,
        "doc": spec.doc,
        "flavour": flavour,
        "opset": opset,
        "ir_version": model.ir_version,
        "custom_domain": {"name": DOMAIN, "version": 1, "ops": ops,
                          "local_functions": len(model.functions)} if flavour == "fused" else None,
        "dynamic_batch": dynamic_batch,
        "inputs": _io(model.graph.input),
        "outputs": _io(model.graph.output),
        "facegen_rt_version": facegen_rt.__version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "weights": weights,
        "sha256": sha256_file(path),
        **spec.extra,
    }


def export_graph(spec: GraphSpec, out_dir: Path, flavours=("portable",), opset: int = DEFAULT_OPSET,
                 dynamic_batch: bool = False, batch: int = 1, model_name: str = "",
                 weights: Optional[dict] = None, function_cache: Optional[dict] = None,
                 suffix_flavour: bool = False) -> dict[str, dict]:
    """Export ``spec`` in each flavour; returns {flavour: manifest}.

    Files: ``<out_dir>/<name>.onnx`` + ``<name>.json`` (``<name>.<flavour>.onnx`` with
    ``suffix_flavour``, so both flavours can share a folder).
    """
    opset = check_opset(opset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ep = program(spec, dynamic_batch, batch)
    manifests = {}
    for flavour in flavours:
        model = to_onnx(spec, ep, flavour, opset, function_cache)
        stem = f"{spec.name}.{flavour}" if suffix_flavour else spec.name
        path = out_dir / f"{stem}.onnx"
        save_checked(model, path)
        manifest = graph_manifest(model, spec, flavour, opset, dynamic_batch, model_name,
                                  weights or {}, path)
        (out_dir / f"{stem}.json").write_text(json.dumps(manifest, indent=1) + "\n")
        manifests[flavour] = manifest
    return manifests


def relative_error(got, want) -> float:
    """max |got - want| / max |want| (the parity criterion; 0/0 counts as 0)."""
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = float(np.abs(want).max()) if want.size else 0.0
    diff = float(np.abs(got - want).max()) if want.size else 0.0
    return diff / scale if scale > 0 else diff

