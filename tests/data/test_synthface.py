"""SynthFace renderer: determinism, labels, landmarks, captions, pairs, splits, I/O."""

import json
import math
import re

import numpy as np
import pytest
import torch

from facegen_rt.data import synthface as sf
from facegen_rt.data.synthface import classes as C
from facegen_rt.data.synthface.factors import ATTRIBUTE_MARGINS, POSE_EXPRESSION_Z_INDEX, _gap
from facegen_rt.data.synthface.landmarks import LANDMARK_INDEX as LM
from facegen_rt.data.synthface.raster import Canvas, coverage
from facegen_rt.data.synthface.render import render_with_edges


def _factors(seed, index):
    return sf.factors_from_z(sf.sample_z(seed, index))


# ----------------------------------------------------------------------- determinism

def test_same_seed_same_bytes_and_different_index_differs():
    a, b = sf.sample(7, 3, 96), sf.sample(7, 3, 96)
    assert a.image.dtype == np.uint8 and a.image.shape == (96, 96, 3)
    assert a.label.dtype == np.uint8 and a.label.shape == (96, 96)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label.tobytes() == b.label.tobytes()
    assert a.landmarks.tobytes() == b.landmarks.tobytes()
    assert a.caption == b.caption and a.attributes == b.attributes
    c = sf.sample(7, 4, 96)
    assert c.image.tobytes() != a.image.tobytes()
    assert not np.array_equal(c.z, a.z)
    # the (seed, index) path is the z path
    d = sf.sample_from_z(sf.sample_z(7, 3), 96)
    assert d.image.tobytes() == a.image.tobytes() and d.caption == a.caption


def test_images_are_shaded_not_flat():
    s = sf.sample(0, 11, 128)
    skin = s.image[s.label == C.SKIN].astype(float)
    assert skin.shape[0] > 500
    assert skin.std(axis=0).mean() > 3.0          # lighting and texture vary the skin
    assert len(np.unique(s.image.reshape(-1, 3), axis=0)) > 2000


@pytest.mark.parametrize("res", [64, 97, 512])
def test_any_square_resolution(res):
    img, lab = sf.render(_factors(1, 2), res)
    assert img.shape == (res, res, 3) and lab.shape == (res, res)


@pytest.mark.parametrize("bad", [63, 513, 0, -128, 4096])
def test_resolution_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="res"):
        sf.render(_factors(0, 0), bad)
    with pytest.raises(ValueError, match="res"):
        sf.sample(0, 0, bad)
    with pytest.raises(ValueError, match="res"):
        sf.SynthFaceDataset(4, bad)


def test_resolution_type_errors():
    with pytest.raises(TypeError):
        sf.render(_factors(0, 0), 128.0)
    with pytest.raises(ValueError):
        sf.factors_from_z(np.zeros(sf.Z_DIM - 1))


# ----------------------------------------------------------------------- labels

def test_all_19_labels_occur_across_1000_samples():
    seen = np.zeros(sf.NUM_CLASSES, bool)
    for i in range(1000):
        _, lab = sf.render(_factors(0, i), 64)
        seen[np.unique(lab)] = True
    missing = [C.CLASS_NAMES[k] for k in np.flatnonzero(~seen)]
    assert not missing, f"classes never drawn: {missing}"


def test_coverage_is_antialiased_and_label_is_half_coverage():
    # a disk of radius 10.3 px: total coverage ~ its area, labels = pixel centres inside
    cv = Canvas(64, scale=1.0, roll=0.0, cx=0.0, cy=0.0)
    w = cv.full()
    r_face = 10.3 * cv.px
    f = np.sqrt(w.x * w.x + w.y * w.y) - np.float32(r_face)
    cov = coverage(f)
    assert abs(cov.sum() - math.pi * 10.3 ** 2) < 0.01 * math.pi * 10.3 ** 2
    assert ((cov > 0) & (cov < 1)).sum() > 40      # a soft edge, not a hard one
    cv.paint(w, cov, (1.0, 0.0, 0.0), C.HAT)
    assert np.array_equal(cv.label == C.HAT, f <= 0)


def test_edge_labels_give_the_coverage_and_the_class_across_the_edge():
    # a hat disk over the background, then a nose disk half over the hat's right edge
    cv = Canvas(64, scale=1.0, roll=0.0, cx=0.0, cy=0.0, edge_labels=True)
    w = cv.full()
    hat = np.sqrt(w.x * w.x + w.y * w.y) - np.float32(10.3 * cv.px)
    nose = np.sqrt((w.x - np.float32(10.3 * cv.px)) ** 2 + w.y * w.y) - np.float32(3.2 * cv.px)
    cov_hat, cov_nose = coverage(hat), coverage(nose)
    cv.paint(w, cov_hat, (1.0, 0.0, 0.0), C.HAT)
    cv.paint(w, cov_nose, (0.0, 1.0, 0.0), C.NOSE)
    conf, other = cv.edge_conf, cv.edge_other
    assert conf.min() >= 0.5 and conf.max() == 1.0
    hat_in, hat_out = cov_hat == 1, cov_hat == 0
    # the nose's rim, away from the hat's: conf is the coverage of the pixel's own class
    rim = (cov_nose > 0) & (cov_nose < 1) & (hat_in | hat_out)
    assert rim.sum() > 10
    np.testing.assert_allclose(conf[rim], np.maximum(cov_nose[rim], 1 - cov_nose[rim]), atol=1e-6)
    took = rim & (cov_nose >= 0.5)
    assert np.array_equal(other[took], np.where(hat_in[took], C.HAT, C.BACKGROUND))
    assert (other[rim & ~took] == C.NOSE).all()
    # the hat's rim, away from the nose: the background across it
    hat_rim = ~(hat_in | hat_out) & (cov_nose == 0)
    np.testing.assert_allclose(conf[hat_rim], np.maximum(cov_hat[hat_rim], 1 - cov_hat[hat_rim]), atol=1e-6)
    assert np.array_equal(other[hat_rim], np.where(cov_hat[hat_rim] >= 0.5, C.BACKGROUND, C.HAT))
    # where neither layer has an edge, the label is certain
    assert (conf[(hat_in | hat_out) & ((cov_nose == 0) | (cov_nose == 1))] == 1.0).all()


def test_render_with_edges_keeps_the_bytes_of_render():
    f = _factors(0, 5)
    image, label = sf.render(f, 96)
    image2, label2, other, conf = render_with_edges(f, 96)
    assert np.array_equal(image, image2) and np.array_equal(label, label2)
    edge = conf < 255
    assert 0.01 < edge.mean() < 0.2 and conf.min() >= 127
    assert (other[edge] != label[edge]).mean() > 0.5   # most edges separate two classes


def test_eye_mouth_nose_landmarks_match_labels():
    res, checked = 160, 0
    for i in range(60):
        s = sf.sample(3, i, res)
        f, lab, lm = s.factors, s.label, s.landmarks

        def label_at(name):
            x, y = lm[LM[name]]
            return lab[int(y), int(x)]

        def near(name, classes, tol=2):
            x, y = lm[LM[name]]
            r0, r1 = max(int(y) - tol, 0), int(y) + tol + 1
            c0, c1 = max(int(x) - tol, 0), int(x) + tol + 1
            return np.isin(lab[r0:r1, c0:c1], classes).any()

        mouth = (C.MOUTH, C.U_LIP, C.L_LIP)
        assert near("mouth_l_corner", mouth) and near("mouth_r_corner", mouth), i
        assert label_at("nose_tip") == C.NOSE, i
        if f.eye_open < 0.6 or f.sunglasses:
            continue
        checked += 1
        for side, cls in (("l", C.L_EYE), ("r", C.R_EYE)):
            assert label_at(f"{side}_eye_center") == cls, (i, side)
            assert label_at(f"{side}_pupil") == cls, (i, side)
            assert near(f"{side}_eye_outer", [cls]) and near(f"{side}_eye_inner", [cls]), (i, side)
        # image-left eye is left of the image-right eye
        assert lm[LM["l_eye_center"], 0] < lm[LM["r_eye_center"], 0]
    assert checked > 25


def test_part_crops():
    for i in range(40):
        s = sf.sample(5, i, 64)
        for name, part in s.parts.items():
            present = np.isin(s.label, sf.PART_CLASSES[name]).any()
            if not present:
                assert part is None
                continue
            crop, mask = part
            assert crop.shape[:2] == mask.shape and mask.dtype == bool and crop.dtype == np.uint8
            # tight bounding box: every border row and column touches the part
            assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
        if s.factors.hair_style == "bald":
            assert s.parts["hair"] is None


# ----------------------------------------------------------------------- captions

_COLOR_ATTR = {"black": "Black_Hair", "blond": "Blond_Hair", "brown": "Brown_Hair", "gray": "Gray_Hair"}
_WORD_ATTR = {
    r"\bbangs\b": "Bangs", r"\bbald\b": "Bald", r"\bgoatee\b": "Goatee", r"\bmustache\b": "Mustache",
    r"\byoung\b": "Young", r"\bchubby\b": "Chubby", r"\bearrings\b": "Wearing_Earrings",
    r"\bnecklace\b": "Wearing_Necklace", r"\bheavy makeup\b": "Heavy_Makeup",
    r"\blipstick\b": "Wearing_Lipstick", r"\bnarrow eyes\b": "Narrow_Eyes", r"\bbig nose\b": "Big_Nose",
    r"\bbig lips\b": "Big_Lips", r"\boval face\b": "Oval_Face", r"\brosy cheeks\b": "Rosy_Cheeks",
    r"\barched\b": "Arched_Eyebrows", r"\bbushy\b": "Bushy_Eyebrows", r"\bno beard\b": "No_Beard",
    r"5 o'clock shadow": "5_o_Clock_Shadow", r"\breceding hairline\b": "Receding_Hairline",
    r"\bwavy\b": "Wavy_Hair", r"\bstraight\b": "Straight_Hair", r"slightly open": "Mouth_Slightly_Open",
}


def test_captions_agree_with_attributes():
    for i in range(300):
        f = _factors(2, i)
        a = sf.attributes_from_factors(f)
        cap = sf.make_caption(a, f, np.random.default_rng(i)).lower()
        assert cap and cap[0].isalpha() and cap.endswith(".")
        for pattern, name in _WORD_ATTR.items():
            if re.search(pattern, cap):
                assert a[name], (name, cap)
        for color, name in _COLOR_ATTR.items():
            if re.search(rf"\b{color}\b", cap):
                assert a[name], (name, cap)
        hair_words = [c for c in ("black", "blond", "brown", "gray", "red", "blue", "pink", "purple", "teal")
                      if re.search(rf"\b{c}\b hair", cap)]
        if not a["Bald"]:
            assert hair_words == [f.hair_color], cap
        for item, name in (("smiling", "Smiling"), ("wearing eyeglasses", "Eyeglasses"),
                           ("wearing a hat", "Wearing_Hat")):
            if f"not {item}" in cap:
                assert not a[name], cap
            elif re.search(rf"\b{item.split()[-1]}\b", cap):
                assert a[name], cap
        if "sunglasses" in cap or re.search(r"\b(wears|wearing)[^.]*\beyeglasses", cap.replace("not wearing eyeglasses", "")):
            assert a["Eyeglasses"], cap
        male_words = re.search(r"\b(man|he|his|gentleman)\b", cap)
        female_words = re.search(r"\b(woman|she|her|lady)\b", cap)
        assert not (male_words and not a["Male"]), cap
        assert not (female_words and a["Male"]), cap


def test_sample_caption_matches_its_attributes():
    s = sf.sample(0, 9, 64)
    assert s.caption == sf.sample(0, 9, 64).caption
    if "smiling" in s.caption and "not smiling" not in s.caption:
        assert s.attributes["Smiling"]


def test_every_attribute_takes_both_values():
    vecs = np.stack([sf.attribute_vector(sf.attributes_from_factors(_factors(4, i))) for i in range(2000)])
    rate = vecs.mean(axis=0)
    never = [n for n, r in zip(sf.ATTRIBUTE_NAMES, rate) if r in (0.0, 1.0)]
    assert not never, never


def test_gap_is_monotone_keeps_sides_and_range():
    v = np.linspace(0.0, 1.0, 2001)
    out = np.array([_gap(x, 0.0, 1.0, (0.2, 0.55), 0.06) for x in v])
    assert np.all(np.diff(out) > 0)
    assert out[0] == 0.0 and math.isclose(out[-1], 1.0)
    for t in (0.2, 0.55):
        assert np.array_equal(out > t, v > t)                   # every face keeps its label
        assert not np.any(np.abs(out - t) < 0.06 - 1e-12)       # and sits off the threshold


def test_attribute_factors_keep_their_margins():
    seen = {name: [] for name in ATTRIBUTE_MARGINS}
    for i in range(1000):
        f = _factors(7, i)
        for name in seen:
            seen[name].append(f.face_length / f.face_width if name == "face_ratio" else getattr(f, name))
    for name, (thresholds, g) in ATTRIBUTE_MARGINS.items():
        v = np.array(seen[name])
        for t in thresholds:
            closest = np.abs(v - t).min()
            assert closest >= g - 1e-9, f"{name}: a face at {closest:.4f} from threshold {t} (margin {g})"


def test_earrings_are_visible():
    shown = 0
    for i in range(300):
        s = sf.sample(5, i, 128)
        if s.attributes["Wearing_Earrings"]:
            assert (s.label == C.CLASS_ID["ear_r"]).sum() >= 1, f"item {i}: earrings hidden"
            shown += 1
    assert shown >= 10


# ----------------------------------------------------------------------- pairs

def test_render_pair_shares_identity_and_changes_pose_expression():
    for i in range(5):
        a, b = sf.render_pair(1, i, 96)
        fa, fb = a.factors, b.factors
        for name in fa.identity_fields() + sf.Factors.ACCESSORY_FIELDS:
            assert getattr(fa, name) == getattr(fb, name), name
        assert all(getattr(fa, n) != getattr(fb, n) for n in sf.Factors.POSE_FIELDS)
        assert all(getattr(fa, n) != getattr(fb, n) for n in sf.Factors.EXPRESSION_FIELDS if n != "mouth_open"
                   or max(getattr(fa, n), getattr(fb, n)) > 0)
        keep = np.setdiff1d(np.arange(sf.Z_DIM), POSE_EXPRESSION_Z_INDEX)
        assert np.array_equal(a.z[keep], b.z[keep])
        assert a.image.tobytes() != b.image.tobytes()
        assert sf.render_pair(1, i, 96)[1].image.tobytes() == b.image.tobytes()


# ----------------------------------------------------------------------- dataset

def test_dataset_items_and_disjoint_splits():
    train = sf.SynthFaceDataset(2000, 64, seed=0, split="train")
    held = sf.SynthFaceDataset(2000, 64, seed=0, split="heldout")
    z_train = {sf.sample_z(0, train.stream_index(i)).tobytes() for i in range(2000)}
    z_held = {sf.sample_z(0, held.stream_index(i)).tobytes() for i in range(2000)}
    assert len(z_train) == 2000 and len(z_held) == 2000
    assert not z_train & z_held
    assert {train.stream_index(i) for i in range(2000)}.isdisjoint(held.stream_index(i) for i in range(2000))
    item = held[3]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["label"].dtype == torch.int64 and int(item["label"].max()) < sf.NUM_CLASSES
    assert item["landmarks"].shape == (sf.NUM_LANDMARKS, 2)
    assert item["attributes"].shape == (sf.NUM_ATTRIBUTES,)
    assert isinstance(item["caption"], str) and item["caption"]
    assert torch.equal(item["z"], torch.from_numpy(sf.sample_z(0, sf.HELDOUT_OFFSET + 3).astype(np.float32)))
    assert not torch.equal(train[3]["image"], item["image"])
    with pytest.raises(IndexError):
        train[2000]
    with pytest.raises(ValueError):
        sf.SynthFaceDataset(4, 64, split="test")
    with pytest.raises(ValueError):
        sf.SynthFaceDataset(0, 64)


# ----------------------------------------------------------------------- writer / cli

def test_write_dataset_and_cli(tmp_path):
    from PIL import Image

    out = sf.write_dataset(3, 64, tmp_path / "ds", seed=5, progress=False)
    s = sf.sample(5, 1, 64)
    img = np.asarray(Image.open(out / "00001.png"))
    lab = np.asarray(Image.open(out / "00001_label.png"))
    assert np.array_equal(img, s.image) and np.array_equal(lab, s.label)
    rec = json.loads((out / "00001.json").read_text())
    assert rec["caption"] == s.caption and rec["attributes"] == s.attributes
    assert len(rec["landmarks"]) == sf.NUM_LANDMARKS and len(rec["z"]) == sf.Z_DIM
    assert rec["factors"]["hair_style"] == s.factors.hair_style
    assert json.loads((out / "meta.json").read_text())["classes"] == list(sf.CLASS_NAMES)

    assert sf.synth_main(["--n", "2", "--res", "64", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").glob("*.png")) == [
        "00000.png", "00000_label.png", "00001.png", "00001_label.png"]

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for argv in (["--n", "0", "--out", str(tmp_path / "x")], ["--n", "1", "--res", "32", "--out", str(tmp_path / "x")],
                 ["--n", "1", "--res", "1024", "--out", str(tmp_path / "x")], ["--n", "1", "--out", str(a_file)]):
        with pytest.raises(SystemExit) as e:
            sf.synth_main(argv)
        assert e.value.code == 2
    with pytest.raises(ValueError, match="not a directory"):
        sf.write_dataset(1, 64, a_file, progress=False)
    with pytest.raises(ValueError, match="n must"):
        sf.write_dataset(0, 64, tmp_path / "y", progress=False)
