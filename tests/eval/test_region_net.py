"""The region attribute heads: crop geometry, config round trip, and a short training run."""

import json

import pytest
import torch

from facegen_rt.data.synthface import ATTRIBUTE_NAMES, LANDMARK_NAMES
from facegen_rt.eval import nets
from facegen_rt.eval.evaluators import assets_present, load_net

L = {n: i for i, n in enumerate(LANDMARK_NAMES)}


def _landmarks(l_eye, r_eye, **others) -> torch.Tensor:
    lm = torch.rand(1, len(LANDMARK_NAMES), 2, dtype=torch.float64) * 100
    lm[0, L["l_eye_center"]] = torch.tensor(l_eye, dtype=torch.float64)
    lm[0, L["r_eye_center"]] = torch.tensor(r_eye, dtype=torch.float64)
    for k, v in others.items():
        lm[0, L[k]] = torch.tensor(v, dtype=torch.float64)
    return lm


def test_level_crop_is_the_pixel_block():
    # eyes 20 px apart on a level line; half-size 0.5 x 20 px -> the 20 x 20 block around the nose tip
    img = torch.randn(1, 3, 64, 80, dtype=torch.float64)
    lm = _landmarks((30, 20), (50, 20), nose_tip=(41, 33))
    crop = nets.aligned_crops(img, lm, [L["nose_tip"]], (0.5, 0.5), (20, 20))
    torch.testing.assert_close(crop, img[..., 23:43, 31:51])


def test_crop_follows_the_eye_line():
    # the same face turned a quarter turn: the crop is unchanged
    img = torch.randn(1, 3, 60, 60, dtype=torch.float64)
    lm = _landmarks((20, 24), (38, 24), nose_tip=(29, 36))
    turned = torch.rot90(img, 1, (2, 3))          # new[y, x] = old[x, 59 - y]  (pixel indices)
    # a point at continuous (x, y) moves to (y, 60 - x)
    lm_turned = torch.stack([lm[..., 1], 60 - lm[..., 0]], -1)
    a = nets.aligned_crops(img, lm, [L["nose_tip"]], (0.6, 0.4), (12, 8))
    b = nets.aligned_crops(turned, lm_turned, [L["nose_tip"]], (0.6, 0.4), (12, 8))
    torch.testing.assert_close(a, b)


def test_config_round_trip_and_outputs():
    net = nets.build("regions").eval()
    again = nets.build("regions", json.loads(json.dumps(net.cfg.to_dict())))
    assert again.cfg == net.cfg
    assert [ATTRIBUTE_NAMES[i] for i in net.attribute_ids] == list(net.attributes)
    assert len(set(net.attributes)) == len(net.attributes)
    x = torch.rand(3, 3, 128, 128)
    lm = torch.rand(3, len(LANDMARK_NAMES), 2) * 60 + 34
    out = net(x, lm)
    assert out.shape == (3, len(net.attributes)) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown evaluator net kind"):
        nets.build("nope")


@pytest.mark.skipif(not assets_present(), reason="the validation crops need the bundled face net")
def test_trainer_runs_and_its_output_loads(tmp_path):
    from facegen_rt.eval import train as T
    T.main(["regions", "--steps", "3", "--n-train", "64", "--batch", "16", "--val-n", "8", "--workers", "1",
            "--threads", "1", "--no-bf16", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    net, cfg = load_net("regions", tmp_path / "out")
    assert cfg["training"]["steps"] == 3 and cfg["training"]["data"]["split"] == "train"
    assert set(cfg["training"]["final_validation"]) == {f"{a}_{d}" for a in net.attributes for d in ("clean", "blur")}
