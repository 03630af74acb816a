"""Every exported graph: onnx.checker, the flavour's node domains, the manifest, and
onnxruntime vs torch parity on fresh random inputs at batch sizes 1 and 3."""

from __future__ import annotations

import json
import random

import onnx
import onnxruntime as ort
import pytest
import torch

from facegen_rt.export.onnx.exporter import example_inputs, relative_error, sha256_file

TOL = 1e-4  # relative error, max |ort - torch| / max |torch|, fp32


def _graphs(export):
    out, top, loaded = export
    for flavour, graphs in top["flavours"].items():
        for spec in loaded.graphs:
            yield flavour, spec, out / graphs[spec.name]["file"], out / graphs[spec.name]["manifest"]


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_checker_passes_on_every_graph(exported):
    paths = [p for _, _, p, _ in _graphs(exported)]
    assert len(paths) >= 4
    for path in paths:
        onnx.checker.check_model(str(path), full_check=True)


def test_flavour_domains(exported):
    for flavour, spec, path, _ in _graphs(exported):
        model = onnx.load(str(path))
        domains = {n.domain or "" for n in model.graph.node}
        if flavour == "portable":
            assert domains <= {"", "ai.onnx"}, (spec.name, domains)
            assert not model.functions
            continue
        assert domains <= {"", "ai.onnx", "facegen"}, (spec.name, domains)
        bodies = {(f.domain, f.name, f.overload) for f in model.functions}
        for node in model.graph.node:
            if node.domain == "facegen":  # one node per op, each with its local function
                assert ("facegen", node.op_type, node.overload) in bodies, node.name
                body = next(f for f in model.functions
                            if (f.domain, f.name, f.overload) == ("facegen", node.op_type,
                                                                   node.overload))
                assert all(n.domain in ("", "ai.onnx") for n in body.node)


def test_fused_graphs_hold_the_facegen_ops(scadm_export, stylegan2_export):
    def ops(export, graph):
        out, top, _ = export
        model = onnx.load(str(out / top["flavours"]["fused"][graph]["file"]))
        return {n.op_type for n in model.graph.node if n.domain == "facegen"}

    assert ops(scadm_export, "unet_step") == {"SpadeNorm", "MaskedCrossAttention"}
    assert ops(stylegan2_export, "synthesis") == {"ModulatedConv2d", "BiasAct", "Upfirdn2d"}
    assert ops(stylegan2_export, "mapping") == {"BiasAct"}


def test_manifests(exported):
    out, top, _ = exported
    assert json.loads((out / "manifest.json").read_text()) == top
    for flavour, spec, path, mpath in _graphs(exported):
        m = json.loads(mpath.read_text())
        assert m["flavour"] == flavour and m["opset"] == 18 and m["dynamic_batch"]
        assert [i["name"] for i in m["inputs"]] == spec.input_names
        assert [o["name"] for o in m["outputs"]] == spec.output_names
        assert m["sha256"] == sha256_file(path)
        assert m["weights"]["source"] == "random-init, seed 0"
        assert m["facegen_rt_version"]
        for io in m["inputs"] + m["outputs"]:
            assert io["dtype"] in ("float32", "int64")
        batched = [i for i, b in zip(m["inputs"], spec.batched) if b]
        assert all(i["shape"][0] == "batch" for i in batched)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(exported, batch):
    for flavour, spec, path, _ in _graphs(exported):
        inputs = example_inputs(spec, batch, seed=random.randrange(2 ** 31))
        with torch.no_grad():
            want = spec.module(*inputs)
        want = want if isinstance(want, tuple) else (want,)
        got = _session(path).run(None, {n: t.numpy() for n, t in zip(spec.input_names, inputs)})
        assert len(got) == len(want)
        for g, w, name in zip(got, want, spec.output_names):
            assert g.shape == tuple(w.shape), (spec.name, name)
            err = relative_error(g, w.numpy())
            assert err <= TOL, f"{spec.name}.{flavour} {name} batch {batch}: rel err {err:.2e}"


def test_fast_path_kernels_match_torch(scadm_export):
    from facegen_rt.export.onnx.fastpath import fast_path_session, fast_path_unavailable

    why = fast_path_unavailable()
    if why:
        pytest.skip(f"onnxruntime fast path unavailable: {why}")
    out, top, loaded = scadm_export
    spec = loaded.graphs[0]
    session = fast_path_session(out / top["flavours"]["fused"]["unet_step"]["file"], threads=1)
    for batch in (1, 3):
        inputs = example_inputs(spec, batch, seed=random.randrange(2 ** 31))
        with torch.no_grad():
            want = spec.module(*inputs).numpy()
        got = session.run(None, {n: t.numpy() for n, t in zip(spec.input_names, inputs)})[0]
        assert relative_error(got, want) <= TOL


def test_drag_features_output(tmp_path):
    from facegen_rt.export.onnx import export_model
    from facegen_rt.export.onnx.models import load

    export_model("stylegan2", tmp_path / "sg", preset="tiny", feature_res=16,
                 graphs=["synthesis"], log=lambda m: None)
    spec = load("stylegan2", preset="tiny", feature_res=16).graphs[1]
    m = json.loads((tmp_path / "sg" / "synthesis.json").read_text())
    assert [o["name"] for o in m["outputs"]] == ["image", "features"]
    inputs = example_inputs(spec, 1, seed=1)
    with torch.no_grad():
        img, feats = spec.module(*inputs)
    got = _session(tmp_path / "sg" / "synthesis.onnx").run(None, {"ws": inputs[0].numpy()})
    assert got[1].shape == tuple(feats.shape) == (1, 32, 16, 16)
    assert relative_error(got[0], img.numpy()) <= TOL
    assert relative_error(got[1], feats.numpy()) <= TOL


def test_opset_23_emits_attention_and_group_normalization(tmp_path):
    from facegen_rt.export.onnx import export_model
    from facegen_rt.export.onnx.models import load

    export_model("sca-dm", tmp_path, flavours=("portable", "fused"), dynamic_batch=True,
                 preset="tiny", opset=23, graphs=["vq_decoder"], force=True, log=lambda m: None)
    spec = load("sca-dm", preset="tiny").graphs[2]
    for flavour in ("portable", "fused"):
        path = tmp_path / f"vq_decoder.{flavour}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"Attention", "GroupNormalization"} <= kinds
        inputs = example_inputs(spec, 3, seed=random.randrange(2 ** 31))
        with torch.no_grad():
            want = spec.module(*inputs).numpy()
        got = _session(path).run(None, {"latent": inputs[0].numpy()})[0]
        assert relative_error(got, want) <= TOL
