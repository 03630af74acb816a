"""Captions in the style of Multi-Modal CelebA-HQ, always consistent with the attributes.

A caption only states true attributes, or explicitly negates false ones ("is not
smiling", "is not wearing eyeglasses"). Which facts are mentioned, their order, the
subject words and the sentence grouping are chosen by an rng, so one face has many
captions. Words with attribute meaning: hair colours (black, brown, blond, gray, and
red/blue/pink/purple/teal without a CelebA attribute), bangs, bald, receding hairline,
arched/bushy eyebrows, narrow eyes, big nose, big lips, oval face, rosy cheeks, goatee,
mustache, 5 o'clock shadow, no beard, chubby, young, smiling, slightly open mouth,
eyeglasses/sunglasses, hat, earrings, necklace, lipstick, heavy makeup; man/he/his or
woman/she/her follow Male.
"""

from __future__ import annotations

import numpy as np

from .factors import Factors

_SUBJECTS = {
    True: ("This man", "The man", "This gentleman", "The person", "This person", "He"),
    False: ("This woman", "The woman", "This lady", "The person", "This person", "She"),
}
_LENGTH_WORDS = {"buzz": "very short", "short": "short", "bob": "shoulder-length", "long": "long"}


def _join(items: list) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _facts(a: dict, f: Factors, rng: np.random.Generator):
    """(has-phrases, is-phrases, worn items, negated verb phrases) for the caption."""
    has, is_, wear, neg = [], [], [], []
    male = a["Male"]
    if a["Bald"]:
        is_.append("bald")
    else:
        words = []
        if f.hair_style in _LENGTH_WORDS and rng.random() < 0.6:
            words.append(_LENGTH_WORDS[f.hair_style])
        if a["Wavy_Hair"]:
            words.append("wavy")
        elif a["Straight_Hair"] and rng.random() < 0.7:
            words.append("straight")
        words.append(f.hair_color)
        has.append(" ".join(words) + " hair" + (" tied in a bun" if f.hair_style == "bun" else ""))
    if a["Bangs"]:
        has.append("bangs")
    if a["Receding_Hairline"]:
        has.append("a receding hairline")
    brows = [w for w, k in (("bushy", "Bushy_Eyebrows"), ("arched", "Arched_Eyebrows")) if a[k]]
    if brows:
        has.append(" ".join(brows) + " eyebrows")
    for k, phrase in (("Narrow_Eyes", "narrow eyes"), ("Big_Nose", "a big nose"), ("Big_Lips", "big lips"),
                      ("Oval_Face", "an oval face"), ("Rosy_Cheeks", "rosy cheeks")):
        if a[k]:
            has.append(phrase)
    if a["Goatee"]:
        has.append("a goatee")
    elif a["Mustache"]:
        has.append("a mustache")
    if a["5_o_Clock_Shadow"]:
        has.append("a 5 o'clock shadow")
    if male and a["No_Beard"] and rng.random() < 0.5:
        has.append("no beard")
    if a["Mouth_Slightly_Open"]:
        has.append(("his" if male else "her") + " mouth slightly open"
                   if rng.random() < 0.5 else "a slightly open mouth")
    for k, phrase in (("Chubby", "chubby"), ("Young", "young"), ("Smiling", "smiling")):
        if a[k]:
            is_.append(phrase)
    if a["Eyeglasses"]:
        wear.append("sunglasses" if f.sunglasses else "eyeglasses")
    for k, item in (("Wearing_Hat", "a hat"), ("Wearing_Earrings", "earrings"),
                    ("Wearing_Necklace", "a necklace"), ("Heavy_Makeup", "heavy makeup")):
        if a[k]:
            wear.append(item)
    if a["Wearing_Lipstick"] and not a["Heavy_Makeup"]:
        wear.append("lipstick")
    if not a["Smiling"] and rng.random() < 0.35:
        neg.append("is not smiling")
    if not a["Eyeglasses"] and rng.random() < 0.2:
        neg.append("is not wearing eyeglasses")
    if not a["Wearing_Hat"] and rng.random() < 0.1:
        neg.append("is not wearing a hat")
    return has, is_, wear, neg


def make_caption(attrs: dict, factors: Factors, rng: np.random.Generator) -> str:
    """A caption for a face with attributes ``attrs`` (see module doc)."""
    has, is_, wear, neg = _facts(attrs, factors, rng)
    # the hair phrase (first, unless bald) is always kept; of the other has-phrases a
    # random subset of at least two, so captions are not exhaustive lists
    hair, rest = (has[:1], has[1:]) if not attrs["Bald"] else ([], has)
    for lst in (rest, is_, wear):
        rng.shuffle(lst)
    if len(rest) > 2:
        rest = rest[:int(rng.integers(2, len(rest) + 1))]
    has = rest
    if hair:
        has.insert(int(rng.integers(0, len(has) + 1)), hair[0])
    vps = []   # verb phrases, each one predicate of the subject
    if has:
        vps.append("has " + _join(has))
    if is_:
        vps.append("is " + _join(is_))
    if wear:
        vps.append(("wears " if rng.random() < 0.5 else "is wearing ") + _join(wear))
    vps += neg
    if not vps:
        vps.append("is shown in a portrait")
    order = rng.permutation(len(vps))
    vps = [vps[i] for i in order]
    subject = _SUBJECTS[attrs["Male"]][int(rng.integers(len(_SUBJECTS[attrs["Male"]])))]
    pronoun = "He" if attrs["Male"] else "She"
    # group the predicates into sentences of one or two
    sentences, i = [], 0
    while i < len(vps):
        n = 2 if (i + 1 < len(vps) and rng.random() < 0.5) else 1
        subj = subject if i == 0 else pronoun
        sentences.append(f"{subj} {_join(vps[i:i + n])}.")
        i += n
    return " ".join(sentences)
