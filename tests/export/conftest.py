"""Shared exports for tests/export: each model is exported once per session, both
flavours, dynamic batch, opset 18, from randomly initialised "tiny" presets."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import torch_threads

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SEED = 0


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def _export(tmp_path_factory, model: str):
    from facegen_rt.export.onnx import export_model
    from facegen_rt.export.onnx.models import load

    out = tmp_path_factory.mktemp(model.replace("-", ""))
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        top = export_model(model, out, flavours=("portable", "fused"), dynamic_batch=True,
                           preset="tiny", seed=SEED, force=True, log=lambda m: None)
    finally:
        torch.set_num_threads(saved)
    return out, top, load(model, preset="tiny", seed=SEED)


@pytest.fixture(scope="session")
def scadm_export(tmp_path_factory):
    return _export(tmp_path_factory, "sca-dm")


@pytest.fixture(scope="session")
def stylegan2_export(tmp_path_factory):
    return _export(tmp_path_factory, "stylegan2")


@pytest.fixture(params=["sca-dm", "stylegan2"])
def exported(request):
    return request.getfixturevalue("scadm_export" if request.param == "sca-dm"
                                   else "stylegan2_export")
