"""`facegen-rt export`: the happy path, and clear errors for bad arguments."""

from __future__ import annotations

import json

import pytest

from facegen_rt.cli import main
from facegen_rt.export.cli import export_main


def _fails(argv, *needles):
    with pytest.raises(SystemExit) as info:
        export_main(argv)
    msg = str(info.value.code)
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_unknown_model(tmp_path):
    _fails(["nosuchmodel", "--out", str(tmp_path / "o")], "unknown model 'nosuchmodel'",
           "MODEL", "sca-dm", "stylegan2")


@pytest.mark.parametrize("opset", ["17", "99", "abc"])
def test_unsupported_opset(tmp_path, opset):
    _fails(["sca-dm", "--preset", "tiny", "--opset", opset, "--out", str(tmp_path / "o")],
           f"--opset {opset!r} is not supported", "18")


def test_existing_out_dir_needs_force(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    _fails(["stylegan2", "--preset", "tiny", "--out", str(out)], f"--out {out}", "--force")
    assert (out / "keep.txt").read_text() == "x"  # nothing written or removed


def test_unknown_format_and_missing_preset(tmp_path):
    _fails(["sca-dm", "--format", "tensorrt", "--out", str(tmp_path / "a")], "--format",
           "export/tensorrt")
    _fails(["stylegan2", "--out", str(tmp_path / "b")], "--preset")
    _fails(["stylegan2", "--preset", "nosuch", "--out", str(tmp_path / "c")], "nosuch")


def test_export_through_facegen_rt_command(tmp_path):
    out = tmp_path / "mapping"
    assert main(["export", "stylegan2", "--format", "onnx", "--preset", "tiny", "--graphs",
                 "mapping", "--batch", "2", "--out", str(out)]) == 0
    top = json.loads((out / "manifest.json").read_text())
    assert top["flavours"] == {"portable": {"mapping": {"file": "mapping.onnx",
                                                        "manifest": "mapping.json"}}}
    m = json.loads((out / "mapping.json").read_text())
    assert m["inputs"][0] == {"name": "z", "shape": [2, 32], "dtype": "float32"}
    assert m["outputs"][0]["shape"] == [2, 8, 32]
    # --force allows writing into it again
    assert main(["export", "stylegan2", "--preset", "tiny", "--graphs", "mapping",
                 "--out", str(out), "--force"]) == 0


def test_sca_dm_without_weights_needs_a_bundled_model(tmp_path):
    from facegen_rt.pipelines.semantic import BUNDLED_MODEL

    if (BUNDLED_MODEL / "model.safetensors").is_file():
        pytest.skip("a bundled SCA-DM model is installed: it is the default")
    _fails(["sca-dm", "--out", str(tmp_path / "o")], "no bundled model", "--weights", "--preset")
