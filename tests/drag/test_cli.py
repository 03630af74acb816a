"""`facegen-rt drag`: a headless edit writes its images and report; bad input exits 2."""

import json

import numpy as np
import pytest
from PIL import Image

from facegen_rt.drag.cli import drag_main, parse_point
from facegen_rt.weights import save_model
from facegen_rt.weights.stylegan2_bundle import BUNDLED_GENERATOR

from .conftest import drag_config, make_generator


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    G = make_generator(drag_config())
    return str(save_model(tmp_path_factory.mktemp("g") / "tiny.safetensors", {"G": G}, G.config))


def test_parse_point():
    assert parse_point("10,20.5:30,40") == ((10.0, 20.5), (30.0, 40.0))
    for bad in ("10,20", "10,20:30", "a,b:c,d", "1,2,3:4,5"):
        with pytest.raises(ValueError, match="HX,HY:TX,TY"):
            parse_point(bad)


def test_drag_writes_images_and_report(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "edit"
    rc = drag_main(["--weights", tiny_bundle, "--point", "60,70:70,76", "--steps", "3",
                    "--mask", "lower", "--no-progress", "--out", str(out)])
    assert rc == 0
    info = json.loads((out / "drag.json").read_text())
    assert 1 <= info["steps"] <= 3 and len(info["step_ms"]) == info["steps"]
    assert all(ms > 0 for ms in info["step_ms"])
    (point,) = info["points"]
    assert point["handle_start"] == [60, 70] and point["target"] == [70.0, 76.0]
    assert np.hypot(point["handle_end"][0] - 70, point["handle_end"][1] - 76) == \
        pytest.approx(point["distance_end"], abs=1e-3)
    assert info["mask"] == "lower" and info["landmark"] is None
    before, after = (np.asarray(Image.open(out / n)) for n in ("before.png", "after.png"))
    assert before.shape == after.shape == (128, 128, 3)
    edit = np.asarray(Image.open(out / "edit.png"))
    assert edit.shape == (128, 256, 3)
    assert np.array_equal(edit[:, 128:][:60], after[:60])  # the marks sit lower down
    assert "median" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--point", "60,70-70,76"], "HX,HY:TX,TY"),
    (["--point", "60,700:70,76"], "handle"),
    (["--point", "60,70:70,76", "--mask", "sideways"], "--mask must be one of"),
    (["--point", "60,70:70,76", "--steps", "0"], "--steps must be >= 1"),
])
def test_bad_input_exits_2(tiny_bundle, tmp_path, capsys, extra, message):
    rc = drag_main(["--weights", tiny_bundle, "--no-progress", "--out", str(tmp_path)] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "drag.json").exists()


def test_mask_png_of_the_wrong_size(tiny_bundle, tmp_path, capsys):
    png = tmp_path / "mask.png"
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(png)
    rc = drag_main(["--weights", tiny_bundle, "--point", "60,70:70,76", "--mask", str(png),
                    "--no-progress", "--out", str(tmp_path / "o")])
    assert rc == 2 and "64x64" in capsys.readouterr().err


def test_missing_weights(tmp_path, capsys):
    rc = drag_main(["--weights", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not BUNDLED_GENERATOR.exists(), reason="bundled generator not installed")
def test_default_edit_on_the_bundled_generator(tmp_path):
    out = tmp_path / "edit"
    assert drag_main(["--steps", "2", "--no-progress", "--out", str(out)]) == 0
    info = json.loads((out / "drag.json").read_text())
    (point,) = info["points"]
    assert info["landmark"] and info["resolution"] == 256
    distance = np.hypot(*np.subtract(point["target"], point["handle_start"]))
    assert 9 <= distance <= 31  # the protocol's 10-30 px, from a rounded handle
