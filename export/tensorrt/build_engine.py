"""Build a TensorRT engine from an exported portable ONNX graph.

UNVERIFIED: TensorRT is not installable on the machines this project is built on, so
this script has never been run. It follows the TensorRT 10 Python API as documented;
expect to fix details on first use on a machine with TensorRT and a GPU.

    python export/tensorrt/build_engine.py out/unet_step.onnx --precision fp16 \
        --batch 1:2:4 --out unet_step.plan

Options:
    --precision fp32 | fp16 | bf16   weights and activations; normalization statistics
                                     stay fp32 in every mode (below)
    --batch N | MIN:OPT:MAX          static batch, or an optimization profile for a graph
                                     exported with --dynamic-batch
    --workspace-gb G                 builder memory pool limit

GroupNorm in fp16 (the known pitfall): the mean and variance of a group sum up to
C/G * H * W squared activations; in fp16 they overflow (max 65504) or lose all
precision, and the image collapses to NaN or grey. Opset 23 exports GroupNorm as one
GroupNormalization node, whose ``stash_type`` attribute asks for fp32 statistics;
opset 18/20 exports decompose it (an InstanceNormalization over a reshape, or
ReduceMean / Sub / Pow / ReduceMean / Sqrt / Div chains). This script pins every layer
of those patterns to fp32 (``layer.precision`` and ``set_output_type`` with
``OBEY_PRECISION_CONSTRAINTS``), and also the Softmax inputs of attention, so only
the convolutions and matmuls run in reduced precision.

The fused flavour's facegen nodes need TensorRT plugins (PLUGINS.md). The ONNX parser
does not inline ONNX local functions in every TensorRT version, so build from the
portable graphs until the plugins exist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Layer types whose inputs and outputs must stay fp32 in fp16/bf16 engines: the
# normalization statistics (mean, variance, rsqrt) and the softmax.
FP32_LAYER_TYPES = ("NORMALIZATION", "REDUCE", "SOFTMAX")
# Elementwise / unary layers inside a decomposed normalization, recognised by the
# ONNX node names the torch exporter gives them.
FP32_NAME_HINTS = ("group_norm", "native_group_norm", "layer_norm", "instance_norm", "var",
                   "mean", "rsqrt", "softmax")


def parse_batch(text: str) -> tuple[int, int, int]:
    """"N" -> (N, N, N); "MIN:OPT:MAX" -> the three ints (MIN <= OPT <= MAX)."""
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise SystemExit(f"--batch {text!r}: expected N or MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX")
    return parts[0], parts[1], parts[2]


def keep_statistics_fp32(network, trt) -> int:
    """Pin normalization statistics and softmax layers to fp32; returns how many."""
    pinned = 0
    wanted = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES
              if hasattr(trt.LayerType, name)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        name = layer.name.lower()
        if layer.type in wanted or any(h in name for h in FP32_NAME_HINTS):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float16, trt.bfloat16, trt.float32):
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def build(onnx_path: Path, out: Path, precision: str, batch: tuple[int, int, int],
          workspace_gb: float) -> None:
    try:
        import tensorrt as trt
    except ImportError:
        raise SystemExit("TensorRT is not installed (pip install tensorrt on a machine with an "
                         "NVIDIA GPU and driver); this script cannot run here") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SystemExit(f"{onnx_path}: the ONNX parser failed:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        print(f"kept {keep_statistics_fp32(network, trt)} statistics/softmax layers in fp32")
    lo, opt, hi = batch
    dynamic = False
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if shape and shape[0] == -1:  # exported with --dynamic-batch
            dynamic = True
            rest = shape[1:]
            if any(d < 0 for d in rest):
                raise SystemExit(f"input {tensor.name} has dynamic non-batch dims {shape}")
            profile.set_shape(tensor.name, [lo] + rest, [opt] + rest, [hi] + rest)
        elif lo != hi and shape and shape[0] != lo:
            raise SystemExit(f"input {tensor.name} has a static batch {shape[0]}; re-export "
                             "with --dynamic-batch for a batch profile")
    if dynamic:
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise SystemExit("TensorRT could not build the engine (see the log above)")
    out.write_bytes(bytes(engine))
    print(f"wrote {out} ({'profile ' + ':'.join(map(str, batch)) if dynamic else 'static'}, "
          f"{precision})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="ONNX -> TensorRT engine (unverified here)")
    p.add_argument("onnx", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16")
    p.add_argument("--batch", default="1", help="N (static) or MIN:OPT:MAX (dynamic profile)")
    p.add_argument("--workspace-gb", type=float, default=4.0)
    a = p.parse_args(argv)
    if not a.onnx.is_file():
        raise SystemExit(f"{a.onnx}: no such ONNX file")
    build(a.onnx, a.out, a.precision, parse_batch(a.batch), a.workspace_gb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
