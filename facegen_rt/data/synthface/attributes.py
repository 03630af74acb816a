"""Binary CelebA-style attributes, each a documented threshold on the factors.

The thresholds on continuous factors live in ``factors.ATTRIBUTE_MARGINS``, which
also keeps every face a margin away from them (no borderline cases).
"""

from __future__ import annotations

import numpy as np

from .factors import Factors, threshold as _t

_HAS_HAIR = ("short", "bob", "long", "bun")   # styles long enough to be straight or wavy


def _above(factor: str, i: int = 0) -> tuple:
    """(rule, definition) of ``factor > its i-th threshold``."""
    t = _t(factor, i)
    return (lambda f: getattr(f, factor) > t, f"{factor} > {t}")


def _below(factor: str, i: int = 0) -> tuple:
    """(rule, definition) of ``factor < its i-th threshold``."""
    t = _t(factor, i)
    return (lambda f: getattr(f, factor) < t, f"{factor} < {t}")


#: name -> (rule on the factors, human-readable definition). Order = attribute vector.
ATTRIBUTE_RULES = {
    "5_o_Clock_Shadow": (lambda f: f.beard == "stubble", "beard == 'stubble'"),
    "Arched_Eyebrows": _above("brow_arch"),
    "Bald": (lambda f: f.hair_style == "bald", "hair_style == 'bald'"),
    "Bangs": (lambda f: f.bangs, "bangs"),
    "Big_Lips": _above("lip_fullness"),
    "Big_Nose": _above("nose_width"),
    "Black_Hair": (lambda f: f.hair_color == "black", "hair_color == 'black'"),
    "Blond_Hair": (lambda f: f.hair_color == "blond", "hair_color == 'blond'"),
    "Brown_Hair": (lambda f: f.hair_color == "brown", "hair_color == 'brown'"),
    "Bushy_Eyebrows": _above("brow_thickness"),
    "Chubby": _above("fullness"),
    "Eyeglasses": (lambda f: f.glasses, "glasses (clear or sunglasses)"),
    "Goatee": (lambda f: f.beard == "goatee", "beard == 'goatee'"),
    "Gray_Hair": (lambda f: f.hair_color == "gray", "hair_color == 'gray'"),
    "Heavy_Makeup": _above("makeup", 1),
    "Male": (lambda f: f.male, "male"),
    "Mouth_Slightly_Open": _above("mouth_open"),
    "Mustache": (lambda f: f.beard in ("mustache", "goatee"),
                 "beard in ('mustache', 'goatee') (the goatee includes a mustache)"),
    "Narrow_Eyes": _below("eye_open"),
    "No_Beard": (lambda f: f.beard == "none", "beard == 'none'"),
    "Oval_Face": (lambda f: _t("jaw") <= f.jaw <= _t("jaw", 1) and f.face_length / f.face_width > _t("face_ratio"),
                  f"{_t('jaw')} <= jaw <= {_t('jaw', 1)} and face_length / face_width > {_t('face_ratio')}"),
    "Pale_Skin": _below("skin_tone"),
    "Receding_Hairline": (lambda f: f.male and f.age > _t("age") and f.hair_style != "bald" and not f.bangs,
                          f"male and age > {_t('age')} and hair_style != 'bald' and not bangs"),
    "Rosy_Cheeks": _above("blush"),
    "Smiling": _above("smile"),
    "Straight_Hair": (lambda f: f.hair_style in _HAS_HAIR and f.hair_wave < _t("hair_wave"),
                      f"hair_style in (short, bob, long, bun) and hair_wave < {_t('hair_wave')}"),
    "Wavy_Hair": (lambda f: f.hair_style in _HAS_HAIR and f.hair_wave > _t("hair_wave", 1),
                  f"hair_style in (short, bob, long, bun) and hair_wave > {_t('hair_wave', 1)}"),
    "Wearing_Earrings": (lambda f: f.earrings, "earrings"),
    "Wearing_Hat": (lambda f: f.hat, "hat"),
    "Wearing_Lipstick": _above("makeup"),
    "Wearing_Necklace": (lambda f: f.necklace, "necklace"),
    "Young": _below("age"),
}
ATTRIBUTE_NAMES = tuple(ATTRIBUTE_RULES)
NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)


def attributes_from_factors(f: Factors) -> dict:
    """{CelebA attribute name: bool} in ATTRIBUTE_NAMES order."""
    return {name: bool(rule(f)) for name, (rule, _) in ATTRIBUTE_RULES.items()}


def attribute_vector(attrs: dict) -> np.ndarray:
    """float32 [NUM_ATTRIBUTES] of 0/1 in ATTRIBUTE_NAMES order."""
    return np.array([float(attrs[n]) for n in ATTRIBUTE_NAMES], np.float32)
