"""The facegen custom ops as ONNX: schemas, fused-node translations, portable decompositions.

Every op in :mod:`facegen_rt.ops` is one ``torch.library`` custom op
(``torch.ops.facegen.<op>``). An export sees it as one FX node and has two ways out:

* portable: :data:`DECOMPOSITIONS` replaces the node by the op's pure-PyTorch reference
  before translation, so the graph holds standard ONNX ops only;
* fused: :func:`translation_table` turns the node into one ONNX node
  ``facegen::<OpType>`` (schema registered with :func:`register_schemas`); the
  exporter then attaches a local function body to it (see :mod:`.functions`).

:data:`SPECS` is the one table both use: ONNX op type, tensor inputs (in the custom op's
order), attributes (name, kind) and the reference that defines the math.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import onnx
import torch
from onnx import defs

from facegen_rt.ops import (bias_act_reference, masked_cross_attention_reference,
                            modulated_conv2d_reference, shared_self_attention_reference,
                            spade_norm_reference, upfirdn2d_reference)

DOMAIN = "facegen"
DOMAIN_VERSION = 1


@dataclass(frozen=True)
class OpSpec:
    """How one custom op maps to ONNX.

    Attributes:
        name: custom op name in namespace facegen (``torch.ops.facegen.<name>``).
        op_type: ONNX node type in domain "facegen".
        inputs: tensor input names in the custom op's order; a trailing "?" = optional.
        attrs: (name, kind) of the non-tensor arguments that follow, in order; kind is
            "int", "float", "str", "bool" (stored as an int) or "ints". The custom op's
            last argument, ``backend``, is a dispatch hint and is dropped.
        reference: ``reference(*tensors, **attrs)`` computes the op (tensors in ``inputs``
            order, None for an absent optional one).
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    attrs: tuple[tuple[str, str], ...]
    reference: Callable[..., torch.Tensor]

    @property
    def input_names(self) -> list[str]:
        return [n.rstrip("?") for n in self.inputs]

    @property
    def torch_op(self):
        return getattr(torch.ops.facegen, self.name).default

    def split(self, args: tuple) -> tuple[list, dict]:
        """Custom op positional args -> (tensors, {attr: python value})."""
        n = len(self.inputs)
        tensors = list(args[:n])
        attrs = {}
        for (name, kind), value in zip(self.attrs, args[n:n + len(self.attrs)]):
            if kind == "bool":
                value = int(bool(value))
            elif kind == "ints":
                value = [int(v) for v in value]
            attrs[name] = value
        return tensors, attrs


def _bias_act(x, b, dim, act, alpha, gain, clamp):
    out = bias_act_reference(x, b, dim, act, alpha, gain, clamp if clamp >= 0 else None)
    return out.clone() if out is x else out  # an exported graph output must not alias x


def _upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    return upfirdn2d_reference(x, f, [upx, upy], [downx, downy], [px0, px1, py0, py1],
                               bool(flip_filter), gain)


def _modconv(x, weight, styles, noise, resample_filter, up, down, padding, demodulate,
             flip_weight, fused_modconv):
    return modulated_conv2d_reference(x, weight, styles, noise, up, down, list(padding),
                                      resample_filter, bool(demodulate), bool(flip_weight),
                                      bool(fused_modconv))


def _spade(x, gamma, beta, groups, eps, act):
    return spade_norm_reference(x, gamma, beta, groups, eps, act)


def _mca(q, k, v, mask, scale):
    return masked_cross_attention_reference(q, k, v, mask, scale)


def _ssa(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude):
    return shared_self_attention_reference(q, k_self, v_self, k_ref, v_ref, ref_keep, scale,
                                           bool(exclude))


SPECS: dict[str, OpSpec] = {s.name: s for s in (
    OpSpec("spade_norm", "SpadeNorm", ("x", "gamma", "beta"),
           (("groups", "int"), ("eps", "float"), ("act", "str")), _spade),
    OpSpec("masked_cross_attention", "MaskedCrossAttention", ("q", "k", "v", "mask"),
           (("scale", "float"),), _mca),
    OpSpec("shared_self_attention", "SharedSelfAttention",
           ("q", "k_self", "v_self", "k_ref", "v_ref", "ref_keep"),
           (("scale", "float"), ("exclude", "bool")), _ssa),
    OpSpec("bias_act", "BiasAct", ("x", "b?"),
           (("dim", "int"), ("act", "str"), ("alpha", "float"), ("gain", "float"),
            ("clamp", "float")), _bias_act),
    OpSpec("upfirdn2d", "Upfirdn2d", ("x", "f"),
           (("upx", "int"), ("upy", "int"), ("downx", "int"), ("downy", "int"),
            ("px0", "int"), ("px1", "int"), ("py0", "int"), ("py1", "int"),
            ("flip_filter", "bool"), ("gain", "float")), _upfirdn2d),
    OpSpec("modulated_conv2d", "ModulatedConv2d",
           ("x", "weight", "styles", "noise?", "resample_filter?"),
           (("up", "int"), ("down", "int"), ("padding", "ints"), ("demodulate", "bool"),
            ("flip_weight", "bool"), ("fused_modconv", "bool")), _modconv),
)}
BY_OP_TYPE: dict[str, OpSpec] = {s.op_type: s for s in SPECS.values()}

_ATTR_TYPES = {"int": defs.OpSchema.AttrType.INT, "bool": defs.OpSchema.AttrType.INT,
               "float": defs.OpSchema.AttrType.FLOAT, "str": defs.OpSchema.AttrType.STRING,
               "ints": defs.OpSchema.AttrType.INTS}
_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"]


def _schema(spec: OpSpec) -> defs.OpSchema:
    param = defs.OpSchema.FormalParameter
    option = defs.OpSchema.FormalParameterOption
    inputs = []
    for raw in spec.inputs:
        name = raw.rstrip("?")
        kind = "B" if name == "ref_keep" else "T"
        inputs.append(param(name, kind, "", param_option=option.Optional if raw.endswith("?")
                            else option.Single))
    constraints = [("T", _FLOATS, "floating point tensors")]
    if any(n == "ref_keep" for n in spec.input_names):
        constraints.append(("B", ["tensor(bool)"], "boolean mask"))
    attrs = [defs.OpSchema.Attribute(name, _ATTR_TYPES[kind], "", required=True)
             for name, kind in spec.attrs]
    return defs.OpSchema(spec.op_type, DOMAIN, DOMAIN_VERSION,
                         doc=f"facegen_rt.ops.{spec.name}; the node's local function holds "
                             "its standard-op body",
                         inputs=inputs, outputs=[param("y", "T", "")],
                         type_constraints=constraints, attributes=attrs)


def register_schemas() -> None:
    """Register the facegen domain's schemas with onnx (once per process).

    torch.onnx's translator looks every emitted op up in onnx's schema registry, so a
    fused export needs them; onnx.checker does not (it checks function bodies instead).
    """
    for spec in SPECS.values():
        try:
            defs.get_schema(spec.op_type, DOMAIN_VERSION, DOMAIN)
        except defs.SchemaError:
            defs.register_schema(_schema(spec))


def _translator(spec: OpSpec, opset) -> Callable:
    """An onnxscript translation emitting one facegen::<OpType> node."""
    op = getattr(opset, spec.op_type)

    def translate(*args, **kwargs):
        tensors, attrs = spec.split(args)
        return op(*tensors, **attrs)

    translate.__name__ = f"facegen_{spec.name}"
    return translate


def translation_table(specs: Optional[list[str]] = None) -> dict:
    """{torch op overload: translation} for torch.onnx.export's custom_translation_table."""
    import onnxscript

    register_schemas()
    opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
    return {s.torch_op: _translator(s, opset) for s in SPECS.values()
            if specs is None or s.name in specs}


def _decomposition(spec: OpSpec) -> Callable:
    def decompose(*args, **kwargs):
        tensors, attrs = spec.split(args)
        return spec.reference(*tensors, **attrs)

    return decompose


#: {torch op overload: reference} for ExportedProgram.run_decompositions (portable flavour).
DECOMPOSITIONS = {s.torch_op: _decomposition(s) for s in SPECS.values()}


def facegen_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every node of the main graph in domain facegen."""
    return [n for n in model.graph.node if n.domain == DOMAIN]
