"""Binary CelebA-style attributes, each a documented threshold on the factors."""

from __future__ import annotations

import numpy as np

from .factors import Factors

_HAS_HAIR = ("short", "bob", "long", "bun")   # styles long enough to be straight or wavy

#: name -> (rule on the factors, human-readable definition). Order = attribute vector.
ATTRIBUTE_RULES = {
    "5_o_Clock_Shadow": (lambda f: f.beard == "stubble", "beard == 'stubble'"),
    "Arched_Eyebrows": (lambda f: f.brow_arch > 0.045, "brow_arch > 0.045"),
    "Bald": (lambda f: f.hair_style == "bald", "hair_style == 'bald'"),
    "Bangs": (lambda f: f.bangs, "bangs"),
    "Big_Lips": (lambda f: f.lip_fullness > 0.072, "lip_fullness > 0.072"),
    "Big_Nose": (lambda f: f.nose_width > 0.128, "nose_width > 0.128"),
    "Black_Hair": (lambda f: f.hair_color == "black", "hair_color == 'black'"),
    "Blond_Hair": (lambda f: f.hair_color == "blond", "hair_color == 'blond'"),
    "Brown_Hair": (lambda f: f.hair_color == "brown", "hair_color == 'brown'"),
    "Bushy_Eyebrows": (lambda f: f.brow_thickness > 0.052, "brow_thickness > 0.052"),
    "Chubby": (lambda f: f.fullness > 0.85, "fullness > 0.85"),
    "Eyeglasses": (lambda f: f.glasses, "glasses (clear or sunglasses)"),
    "Goatee": (lambda f: f.beard == "goatee", "beard == 'goatee'"),
    "Gray_Hair": (lambda f: f.hair_color == "gray", "hair_color == 'gray'"),
    "Heavy_Makeup": (lambda f: f.makeup > 0.55, "makeup > 0.55"),
    "Male": (lambda f: f.male, "male"),
    "Mouth_Slightly_Open": (lambda f: f.mouth_open > 0.25, "mouth_open > 0.25"),
    "Mustache": (lambda f: f.beard in ("mustache", "goatee"),
                 "beard in ('mustache', 'goatee') (the goatee includes a mustache)"),
    "Narrow_Eyes": (lambda f: f.eye_open < 0.5, "eye_open < 0.5"),
    "No_Beard": (lambda f: f.beard == "none", "beard == 'none'"),
    "Oval_Face": (lambda f: 1.9 <= f.jaw <= 2.5 and f.face_length / f.face_width > 1.25,
                  "1.9 <= jaw <= 2.5 and face_length / face_width > 1.25"),
    "Pale_Skin": (lambda f: f.skin_tone < 0.12, "skin_tone < 0.12"),
    "Receding_Hairline": (lambda f: f.male and f.age > 0.65 and f.hair_style != "bald" and not f.bangs,
                          "male and age > 0.65 and hair_style != 'bald' and not bangs"),
    "Rosy_Cheeks": (lambda f: f.blush > 0.75, "blush > 0.75"),
    "Smiling": (lambda f: f.smile > 0.5, "smile > 0.5"),
    "Straight_Hair": (lambda f: f.hair_style in _HAS_HAIR and f.hair_wave < 0.3,
                      "hair_style in (short, bob, long, bun) and hair_wave < 0.3"),
    "Wavy_Hair": (lambda f: f.hair_style in _HAS_HAIR and f.hair_wave > 0.65,
                  "hair_style in (short, bob, long, bun) and hair_wave > 0.65"),
    "Wearing_Earrings": (lambda f: f.earrings, "earrings"),
    "Wearing_Hat": (lambda f: f.hat, "hat"),
    "Wearing_Lipstick": (lambda f: f.makeup > 0.2, "makeup > 0.2"),
    "Wearing_Necklace": (lambda f: f.necklace, "necklace"),
    "Young": (lambda f: f.age < 0.6, "age < 0.6"),
}
ATTRIBUTE_NAMES = tuple(ATTRIBUTE_RULES)
NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)


def attributes_from_factors(f: Factors) -> dict:
    """{CelebA attribute name: bool} in ATTRIBUTE_NAMES order."""
    return {name: bool(rule(f)) for name, (rule, _) in ATTRIBUTE_RULES.items()}


def attribute_vector(attrs: dict) -> np.ndarray:
    """float32 [NUM_ATTRIBUTES] of 0/1 in ATTRIBUTE_NAMES order."""
    return np.array([float(attrs[n]) for n in ATTRIBUTE_NAMES], np.float32)
