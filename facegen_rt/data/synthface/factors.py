"""Factors of variation of a SynthFace image and the deterministic map z -> factors.

A face is fully described by a :class:`Factors` record. Factors come from a latent
vector ``z`` of ``Z_DIM`` standard-normal numbers through :func:`factors_from_z`, and
sampling by ``(seed, index)`` only draws that ``z`` (:func:`sample_z`), so a dataset
sample and a generator's ``z -> face`` target are one and the same path.

The map
-------
Coordinate ``z[i]`` drives the factor ``Z_NAMES[i]``. A few factors also read the
``male`` coordinate (hair-style table, makeup, beard, earring and necklace rates, and
small offsets of face width, jaw, brow thickness, nose width, lip fullness, neck and
shoulder width) or ``age`` (gray-hair rate, receding hairline, wrinkles), brow and
lip colours mix the hair, skin and makeup colours, and earrings come only with a hair
style that leaves the ear lobes free (``EAR_COVERING_STYLES``). Let ``u = Phi(z[i])`` be the
standard normal CDF of a coordinate, uniform on (0, 1):

* continuous factors are affine in ``u``: ``lo + (hi - lo) * u`` (ranges in the code);
* binary factors are thresholds: ``u > 1 - p`` for a probability ``p``;
* categorical factors pick the bin of ``u`` in a cumulative probability table;
* "style" coordinates hold several small choices as mixed-radix digits of ``u``
  (``_digits``): the first digit picks a shape, the remaining fraction a colour, ...
* colours are palette look-ups or HSV built from the relevant coordinates.

Attribute margins: a factor that a CelebA attribute thresholds (attributes.py) leaves
no borderline faces. :func:`_gap` squeezes its range away from each threshold, so
every face sits at least a margin ``g`` from the decision (smile in [0, 0.3] or
[0.7, 1], for instance). The map stays monotone and keeps each side's probability,
and a binary label then names something the picture shows, as an annotator's does.

``texture_seed`` (the seed of the texture noise) is a hash of the identity coordinates,
so it is shared by every render of one identity (see :func:`with_new_pose_expression`).

Splits: the training stream of a dataset seed uses indices ``0 <= index <
HELDOUT_OFFSET``; the held-out split reads index ``HELDOUT_OFFSET + i``. Index ranges
are disjoint, so the two splits never share a ``(seed, index)`` stream.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass, fields

import numpy as np

Z_DIM = 64

#: Z_NAMES[i] names the factor driven by z[i].
Z_NAMES = (
    # identity: face geometry and skin
    "face_width", "face_length", "forehead", "jaw", "fullness", "skin_tone", "skin_undertone",
    # identity: eyes, brows, nose, mouth, ears
    "eye_width", "eye_ratio", "eye_spacing", "eye_tilt", "iris_color",
    "brow_thickness", "brow_arch", "brow_height", "nose_length", "nose_width",
    "mouth_width", "lip_fullness", "lip_color", "ear_size",
    # identity: hair
    "hair_style", "hair_length", "hair_color", "hair_shade", "bangs", "hair_volume",
    "hair_wave", "hair_part",
    # identity: person, grooming, clothes, scene
    "male", "age", "makeup", "beard", "blush",
    "cloth_hue", "cloth_tone", "cloth_pattern", "cloth_detail", "neckline", "neck_width",
    "bg_hue", "bg_hue_shift", "bg_tone", "bg_angle", "light_dir", "light_contrast",
    # accessories
    "glasses", "glasses_style", "hat", "hat_style", "earrings", "earring_style",
    "necklace", "necklace_style",
    # pose
    "roll", "yaw", "shift_x", "shift_y", "scale",
    # expression
    "smile", "mouth_open", "eye_open", "gaze", "brow_raise",
)
assert len(Z_NAMES) == Z_DIM and len(set(Z_NAMES)) == Z_DIM
Z_INDEX = {name: i for i, name in enumerate(Z_NAMES)}

POSE_Z = ("roll", "yaw", "shift_x", "shift_y", "scale")
EXPRESSION_Z = ("smile", "mouth_open", "eye_open", "gaze", "brow_raise")
#: z coordinates re-drawn by a pose/expression re-render; all others are identity.
POSE_EXPRESSION_Z_INDEX = tuple(Z_INDEX[n] for n in POSE_Z + EXPRESSION_Z)
IDENTITY_Z_INDEX = tuple(i for i in range(Z_DIM) if i not in POSE_EXPRESSION_Z_INDEX)

#: First index of the held-out split (training indices must stay below it).
HELDOUT_OFFSET = 2 ** 40
#: Extra entropy word that selects the second render of a pair.
PAIR_STREAM = 1

#: factor -> (attribute thresholds, margin): the thresholds of the CelebA attributes
#: defined on that factor (attributes.py reads them from here) and the margin g that
#: :func:`_gap` keeps free around each. ``face_ratio`` is face_length / face_width.
ATTRIBUTE_MARGINS = {
    "brow_arch": ((0.05,), 0.015), "brow_thickness": ((0.052,), 0.012),
    "nose_width": ((0.128,), 0.018), "lip_fullness": ((0.072,), 0.016),
    "fullness": ((0.85,), 0.1), "eye_open": ((0.5,), 0.12), "jaw": ((1.9, 2.5), 0.1),
    "face_ratio": ((1.25,), 0.06), "skin_tone": ((0.12,), 0.03), "blush": ((0.75,), 0.12),
    "smile": ((0.5,), 0.2), "mouth_open": ((0.25,), 0.1), "age": ((0.6,), 0.15),
    "makeup": ((0.2, 0.55), 0.06), "hair_wave": ((0.3, 0.65), 0.1),
}


def threshold(factor: str, i: int = 0) -> float:
    """The i-th attribute threshold on ``factor`` (see ATTRIBUTE_MARGINS)."""
    return ATTRIBUTE_MARGINS[factor][0][i]


HAIR_STYLES = ("bald", "buzz", "short", "bob", "long", "bun")
#: hair colour categories drawn from z; "dyed" is then named by its hue (DYED_COLORS)
HAIR_COLORS = ("black", "brown", "blond", "red", "gray", "dyed")
DYED_COLORS = ("blue", "pink", "purple", "teal")
BEARDS = ("none", "stubble", "goatee", "mustache")
CLOTH_PATTERNS = ("solid", "stripes", "checks")
#: hair styles whose sides cover the ear lobes: faces with them wear no earrings, so
#: that Wearing_Earrings always names something visible
EAR_COVERING_STYLES = ("bob", "long")
NECKLINES = ("round", "v", "crew")
GLASSES_SHAPES = ("round", "rect", "cat")
HAT_STYLES = ("beanie", "brim", "cap")
EARRING_STYLES = ("stud", "hoop", "drop")
NECKLACE_STYLES = ("chain", "beads", "pendant")
IRIS_COLORS = ("dark_brown", "brown", "hazel", "green", "blue", "gray")

RGB = tuple  # (r, g, b) floats in [0, 1], sRGB

# skin palette, pale -> dark; skin_tone interpolates these stops
_SKIN_STOPS = np.array([
    [0.98, 0.87, 0.80], [0.94, 0.77, 0.66], [0.84, 0.64, 0.50],
    [0.66, 0.46, 0.33], [0.42, 0.28, 0.19], [0.30, 0.20, 0.14]], np.float64)
# hair colour ranges (dark end, light end) per category; hair_shade interpolates
_HAIR_RANGES = {
    "black": ((0.05, 0.045, 0.045), (0.14, 0.11, 0.10)),
    "brown": ((0.25, 0.15, 0.08), (0.48, 0.32, 0.18)),
    "blond": ((0.76, 0.60, 0.36), (0.95, 0.86, 0.62)),
    "red": ((0.50, 0.17, 0.06), (0.75, 0.35, 0.14)),
    "gray": ((0.55, 0.55, 0.56), (0.88, 0.88, 0.88)),
}
_DYED = ((0.22, 0.33, 0.72), (0.86, 0.40, 0.62), (0.48, 0.28, 0.70), (0.20, 0.58, 0.52))
_IRIS_RGB = {
    "dark_brown": (0.16, 0.09, 0.05), "brown": (0.36, 0.21, 0.10),
    "hazel": (0.47, 0.37, 0.16), "green": (0.30, 0.47, 0.27),
    "blue": (0.30, 0.50, 0.72), "gray": (0.50, 0.56, 0.60),
}
_LIPSTICKS = ((0.72, 0.10, 0.16), (0.82, 0.34, 0.44), (0.52, 0.12, 0.24), (0.74, 0.44, 0.38))
_METALS = ((0.85, 0.68, 0.30), (0.80, 0.80, 0.82), (0.94, 0.92, 0.86), (0.70, 0.45, 0.35))


@dataclass(frozen=True)
class Factors:
    """Everything the renderer needs; lengths are in face units (half face height = 1).

    Field groups: IDENTITY_FIELDS (incl. scene and texture seed), ACCESSORY_FIELDS,
    POSE_FIELDS and EXPRESSION_FIELDS (class attributes below).
    """

    # identity: face
    face_width: float       # half-width of the face oval at cheek level
    face_length: float      # centre-to-chin distance
    forehead: float         # centre-to-top of the face oval
    jaw: float              # superellipse exponent of the lower face: <2 pointed, >2.6 square
    fullness: float         # 0..1 cheek / jaw fullness
    skin_tone: float        # 0 pale .. 1 dark
    skin_rgb: RGB
    eye_width: float        # half-width of one eye opening
    eye_ratio: float        # eye half-height / half-width when fully open
    eye_spacing: float      # |x| of the eye centres
    eye_tilt: float         # radians, positive = outer corners up
    iris_color: str
    iris_rgb: RGB
    brow_thickness: float
    brow_arch: float
    brow_height: float      # brow centre y offset relative to the default position
    brow_rgb: RGB
    nose_length: float      # y of the nose tip
    nose_width: float       # half-width at the nostrils
    mouth_width: float      # half-width of the mouth
    lip_fullness: float     # lower lip thickness (upper lip is 0.75x)
    lip_rgb: RGB
    ear_size: float
    hair_style: str         # one of HAIR_STYLES
    hair_length: float      # y of the hair ends (bob / long), ignored otherwise
    hair_color: str         # black/brown/blond/red/gray or a DYED_COLORS name; "none" if bald
    hair_rgb: RGB
    bangs: bool
    hair_volume: float      # how far hair stands off the skull
    hair_wave: float        # 0 straight .. 1 wavy
    hair_part: float        # x of the parting / bang sweep
    male: bool
    age: float              # 0 young .. 1 old
    makeup: float           # 0 none .. 1 heavy
    beard: str              # one of BEARDS
    blush: float
    cloth_rgb: RGB
    cloth_rgb2: RGB
    cloth_pattern: str      # one of CLOTH_PATTERNS
    cloth_scale: float      # pattern period in face units
    neckline: str           # one of NECKLINES
    neck_width: float
    bg_rgb_top: RGB
    bg_rgb_bottom: RGB
    bg_angle: float         # gradient direction, radians from vertical
    light_dir: float        # -1 light from image-left .. 1 from image-right
    light_contrast: float
    texture_seed: int       # seed of the texture noise (hash of the identity z)
    # accessories
    glasses: bool
    glasses_shape: str
    glasses_rgb: RGB
    sunglasses: bool
    hat: bool
    hat_style: str
    hat_rgb: RGB
    earrings: bool
    earring_style: str
    earring_rgb: RGB
    necklace: bool
    necklace_style: str
    necklace_rgb: RGB
    # pose
    roll: float             # in-plane rotation, radians (positive = clockwise on screen)
    yaw: float              # approx. sin(yaw); positive turns the features to image-right
    shift_x: float          # translation in normalised image units ([-1, 1] = image)
    shift_y: float
    scale: float            # relative face size
    # expression
    smile: float            # 0..1, mouth corners up
    mouth_open: float       # 0 closed .. 1 open
    eye_open: float         # lid opening relative to eye_ratio
    gaze: float             # -1 .. 1 iris shift (image-left .. image-right)
    brow_raise: float       # 0..1

    POSE_FIELDS = ("roll", "yaw", "shift_x", "shift_y", "scale")
    EXPRESSION_FIELDS = ("smile", "mouth_open", "eye_open", "gaze", "brow_raise")
    ACCESSORY_FIELDS = ("glasses", "glasses_shape", "glasses_rgb", "sunglasses", "hat",
                        "hat_style", "hat_rgb", "earrings", "earring_style", "earring_rgb",
                        "necklace", "necklace_style", "necklace_rgb")

    @classmethod
    def identity_fields(cls) -> tuple:
        """Names of all fields that are not pose, expression or accessories."""
        skip = set(cls.POSE_FIELDS + cls.EXPRESSION_FIELDS + cls.ACCESSORY_FIELDS)
        return tuple(f.name for f in fields(cls) if f.name not in skip)

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}


# ----------------------------------------------------------------------------- z helpers

def sample_z(seed: int, index: int, stream: int | None = None) -> np.ndarray:
    """z ~ N(0, I), float64 [Z_DIM], from ``np.random.default_rng([seed, index(, stream)])``."""
    # seeds stay below 2**32 so that each is exactly one entropy word of the stream
    if not 0 <= int(seed) < 2 ** 32 or int(index) < 0:
        raise ValueError(f"need 0 <= seed < 2**32 and index >= 0, got seed={seed}, index={index}")
    entropy = [int(seed), int(index)] + ([] if stream is None else [int(stream)])
    return np.random.default_rng(entropy).standard_normal(Z_DIM)


def with_new_pose_expression(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copy of z whose pose and expression coordinates are re-drawn from rng."""
    z2 = np.array(z, np.float64, copy=True)
    idx = list(POSE_EXPRESSION_Z_INDEX)
    z2[idx] = rng.standard_normal(len(idx))
    return z2


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _pick(u: float, names: tuple, probs) -> str:
    """Categorical choice: the bin of u in the cumulative table of probs."""
    c = np.cumsum(np.asarray(probs, np.float64))
    i = int(np.searchsorted(c / c[-1], u, side="right"))
    return names[min(i, len(names) - 1)]


def _digits(u: float, *radices: int) -> tuple:
    """Mixed-radix digits of u in [0, 1): returns (d0, d1, ..., remainder in [0, 1))."""
    out = []
    for r in radices:
        u = u * r
        d = min(int(u), r - 1)
        out.append(d)
        u -= d
    return (*out, u)


def _gap(v: float, lo: float, hi: float, thresholds: tuple, g: float) -> float:
    """Map v in [lo, hi] onto [lo, hi] minus (t - g, t + g) for each threshold t.

    Piecewise linear and increasing, so ``v > t`` keeps its truth value: the segment
    between two thresholds (or a threshold and an end of the range) is scaled into
    itself less a margin g at each inner end.
    """
    edges = (lo, *thresholds, hi)
    last = len(edges) - 2
    for i in range(last + 1):
        a, b = edges[i], edges[i + 1]
        if v <= b or i == last:
            a2, b2 = a + (g if i > 0 else 0.0), b - (g if i < last else 0.0)
            return a2 + (v - a) * (b2 - a2) / (b - a)
    raise AssertionError("unreachable")


def _lerp(a, b, t) -> tuple:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def _hsv(h: float, s: float, v: float) -> tuple:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _texture_seed(z: np.ndarray) -> int:
    """64-bit hash of the identity coordinates (pose/expression excluded)."""
    ident = np.ascontiguousarray(z[list(IDENTITY_Z_INDEX)], dtype="<f8")
    return int.from_bytes(hashlib.blake2b(ident.tobytes(), digest_size=8).digest(), "little")


# ---------------------------------------------------------------------------- the map

def factors_from_z(z) -> Factors:
    """Deterministic map from z (float [Z_DIM]) to :class:`Factors` (see module doc)."""
    z = np.asarray(z, np.float64).reshape(-1)
    if z.shape != (Z_DIM,):
        raise ValueError(f"z must have {Z_DIM} entries, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z must be finite")
    u = {name: _phi(float(z[i])) for i, name in enumerate(Z_NAMES)}

    def lin(name, lo, hi):
        return lo + (hi - lo) * u[name]

    def margin(name, v, lo, hi):
        """v (in [lo, hi]) kept off the thresholds of the attributes defined on it."""
        thresholds, g = ATTRIBUTE_MARGINS[name]
        return _gap(v, lo, hi, thresholds, g)

    male = u["male"] < 0.42
    age = margin("age", u["age"], 0.0, 1.0)

    # face and skin: the length follows the width through a ratio kept off Oval_Face's
    face_width = lin("face_width", 0.70, 0.84) + (0.03 if male else 0.0)
    face_ratio = margin("face_ratio", lin("face_length", 0.94, 1.06) / face_width, 1.05, 1.55)
    tone = margin("skin_tone", u["skin_tone"], 0.0, 1.0)
    pos = tone * (len(_SKIN_STOPS) - 1)
    k = min(int(pos), len(_SKIN_STOPS) - 2)
    skin = _SKIN_STOPS[k] + (_SKIN_STOPS[k + 1] - _SKIN_STOPS[k]) * (pos - k)
    under = u["skin_undertone"] - 0.5          # warm (+) or rosy/cool (-) undertone
    skin = np.clip(skin + np.array([0.03, 0.0, -0.04]) * under, 0, 1)
    skin_rgb = tuple(float(c) for c in skin)

    # hair: style depends on sex, colour on age
    style_probs = ((0.12, 0.18, 0.50, 0.08, 0.07, 0.05) if male
                   else (0.02, 0.03, 0.13, 0.25, 0.45, 0.12))
    hair_style = _pick(u["hair_style"], HAIR_STYLES, style_probs)
    gray_p = 0.02 + 0.3 * max(0.0, age - 0.75) / 0.25
    color_probs = np.array([0.30, 0.30, 0.20, 0.07, 0.0, 0.05])
    color_probs *= (1.0 - gray_p) / color_probs.sum()
    color_probs[4] = gray_p
    hair_color = _pick(u["hair_color"], HAIR_COLORS, color_probs)
    shade = u["hair_shade"]
    if hair_color == "dyed":
        d, frac = _digits(shade, len(_DYED))
        hair_rgb = _lerp(_DYED[d], (1, 1, 1), 0.25 * frac)
        hair_color = DYED_COLORS[d]
    else:
        hair_rgb = _lerp(*_HAIR_RANGES[hair_color], shade)
    if hair_style == "bald":
        hair_color = "none"
    long_len = {"bob": (0.45, 0.85), "long": (1.25, 2.4)}.get(hair_style, (0.0, 0.0))
    hair_length = lin("hair_length", *long_len)
    vol_range = {"bald": (0.0, 0.0), "buzz": (0.012, 0.025), "short": (0.05, 0.16),
                 "bob": (0.08, 0.2), "long": (0.05, 0.18), "bun": (0.03, 0.08)}[hair_style]
    hair_volume = lin("hair_volume", *vol_range)
    bangs = hair_style in ("short", "bob", "long", "bun") and u["bangs"] > 0.68

    # brows follow the hair colour, darkened so that light hair still gives visible brows
    natural = hair_style != "bald" and hair_color not in DYED_COLORS
    brow_base = hair_rgb if natural else _lerp(skin_rgb, (0.1, 0.07, 0.05), 0.7)
    brow_rgb = _lerp(brow_base, (0.12, 0.09, 0.07), 0.35 if hair_color != "gray" else 0.1)
    brow_rgb = tuple(min(c, s * 0.75) for c, s in zip(brow_rgb, skin_rgb))

    # grooming
    makeup = 0.0 if male else margin("makeup", max(0.0, (u["makeup"] - 0.35) / 0.65), 0.0, 1.0)
    beard = _pick(u["beard"], BEARDS, (0.55, 0.2, 0.12, 0.13)) if male else "none"
    lip_dig, lip_frac = _digits(u["lip_color"], len(_LIPSTICKS))
    natural_lip = _lerp(tuple(s * f for s, f in zip(skin_rgb, (0.86, 0.58, 0.58))),
                        (0.70, 0.33, 0.35), 0.25 + 0.3 * lip_frac)
    # lipstick (makeup past Wearing_Lipstick's threshold) is a clear colour change
    lipstick = min(1.0, 0.45 + 0.6 * makeup) if makeup > threshold("makeup") else 0.3 * makeup
    lip_rgb = _lerp(natural_lip, _LIPSTICKS[lip_dig], lipstick)
    iris_color = _pick(u["iris_color"], IRIS_COLORS, (0.3, 0.25, 0.12, 0.1, 0.15, 0.08))

    # clothes and scene
    cloth_v = lin("cloth_tone", 0.15, 0.9)
    cloth_rgb = _hsv(u["cloth_hue"], 0.15 + 0.6 * (1 - abs(2 * u["cloth_tone"] - 1)), cloth_v)
    cloth_pattern = _pick(u["cloth_pattern"], CLOTH_PATTERNS, (0.55, 0.25, 0.2))
    det_d, det_frac = _digits(u["cloth_detail"], 3)
    # the second colour: white, black or a complementary hue
    cloth_rgb2 = ((0.93, 0.92, 0.9), (0.08, 0.08, 0.1),
                  _hsv(u["cloth_hue"] + 0.5, 0.5, 0.75))[det_d]
    cloth_scale = 0.12 + 0.2 * det_frac
    neckline = _pick(u["neckline"], NECKLINES, (0.45, 0.3, 0.25))
    bg_v = lin("bg_tone", 0.3, 0.95)
    bg_s = 0.08 + 0.35 * (1 - u["bg_tone"]) * u["bg_hue_shift"]
    bg_rgb_top = _hsv(u["bg_hue"], bg_s, bg_v)
    bg_rgb_bottom = _hsv(u["bg_hue"] + 0.25 * (u["bg_hue_shift"] - 0.5), bg_s * 1.2, bg_v * 0.72)

    # accessories
    g_shape, g_col, g_frac = _digits(u["glasses_style"], 3, 4)
    sunglasses = g_frac > 0.7
    glasses_rgb = ((0.06, 0.05, 0.05), (0.45, 0.25, 0.12), (0.78, 0.65, 0.35),
                   (0.55, 0.1, 0.12))[g_col]
    h_style, h_frac = _digits(u["hat_style"], 3)
    hat_rgb = _hsv(h_frac * 1.7, 0.25 + 0.5 * ((h_frac * 5) % 1), 0.25 + 0.6 * ((h_frac * 3) % 1))
    e_style, e_col, _ = _digits(u["earring_style"], 3, 4)
    n_style, n_col, _ = _digits(u["necklace_style"], 3, 4)

    return Factors(
        face_width=face_width,
        face_length=face_ratio * face_width,
        forehead=lin("forehead", 0.96, 1.06),
        jaw=margin("jaw", lin("jaw", 1.75, 3.0) + (0.35 if male else 0.0), 1.75, 3.35),
        fullness=margin("fullness", u["fullness"], 0.0, 1.0),
        skin_tone=tone, skin_rgb=skin_rgb,
        eye_width=lin("eye_width", 0.13, 0.165),
        eye_ratio=lin("eye_ratio", 0.42, 0.58),
        eye_spacing=lin("eye_spacing", 0.31, 0.36),
        eye_tilt=lin("eye_tilt", -0.1, 0.16),
        iris_color=iris_color, iris_rgb=_IRIS_RGB[iris_color],
        brow_thickness=margin("brow_thickness", lin("brow_thickness", 0.028, 0.073)
                              + (0.012 if male else 0.0), 0.028, 0.085),
        brow_arch=margin("brow_arch", lin("brow_arch", 0.0, 0.09), 0.0, 0.09),
        brow_height=lin("brow_height", -0.03, 0.03),
        brow_rgb=brow_rgb,
        nose_length=lin("nose_length", 0.30, 0.40),
        nose_width=margin("nose_width", lin("nose_width", 0.085, 0.16) + (0.01 if male else 0.0),
                          0.085, 0.17),
        mouth_width=lin("mouth_width", 0.18, 0.25),
        lip_fullness=margin("lip_fullness", lin("lip_fullness", 0.045, 0.11) - (0.008 if male else 0.0),
                            0.037, 0.11),
        lip_rgb=lip_rgb,
        ear_size=lin("ear_size", 0.85, 1.15),
        hair_style=hair_style, hair_length=hair_length, hair_color=hair_color,
        hair_rgb=hair_rgb, bangs=bangs, hair_volume=hair_volume,
        hair_wave=margin("hair_wave", u["hair_wave"], 0.0, 1.0), hair_part=lin("hair_part", -0.35, 0.35),
        male=male, age=age, makeup=makeup, beard=beard, blush=margin("blush", u["blush"], 0.0, 1.0),
        cloth_rgb=cloth_rgb, cloth_rgb2=cloth_rgb2, cloth_pattern=cloth_pattern,
        cloth_scale=cloth_scale, neckline=neckline,
        neck_width=lin("neck_width", 0.30, 0.38) + (0.04 if male else 0.0),
        bg_rgb_top=bg_rgb_top, bg_rgb_bottom=bg_rgb_bottom,
        bg_angle=lin("bg_angle", -0.8, 0.8),
        light_dir=lin("light_dir", -1.0, 1.0),
        light_contrast=lin("light_contrast", 0.15, 0.45),
        texture_seed=_texture_seed(z),
        glasses=u["glasses"] > 0.87, glasses_shape=GLASSES_SHAPES[g_shape],
        glasses_rgb=glasses_rgb, sunglasses=sunglasses,
        hat=u["hat"] > 0.9, hat_style=HAT_STYLES[h_style], hat_rgb=hat_rgb,
        earrings=hair_style not in EAR_COVERING_STYLES and u["earrings"] > (0.95 if male else 0.3),
        earring_style=EARRING_STYLES[e_style], earring_rgb=_METALS[e_col],
        necklace=u["necklace"] > (0.96 if male else 0.75),
        necklace_style=NECKLACE_STYLES[n_style], necklace_rgb=_METALS[n_col],
        roll=lin("roll", -0.18, 0.18),
        yaw=lin("yaw", -0.4, 0.4),
        shift_x=lin("shift_x", -0.06, 0.06),
        shift_y=lin("shift_y", -0.05, 0.05),
        scale=lin("scale", 0.88, 1.1),
        smile=margin("smile", u["smile"], 0.0, 1.0),
        mouth_open=margin("mouth_open", max(0.0, (u["mouth_open"] - 0.45) / 0.55), 0.0, 1.0),
        eye_open=margin("eye_open", 0.3 + 0.85 * u["eye_open"] ** 0.6, 0.3, 1.15),
        gaze=lin("gaze", -1.0, 1.0),
        brow_raise=u["brow_raise"],
    )
