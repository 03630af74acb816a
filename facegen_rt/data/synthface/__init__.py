"""SynthFace: a deterministic procedural face renderer with dense annotations.

Each face is a function of a latent ``z`` (``Z_DIM`` standard normals) through the
documented map :func:`factors_from_z`; sampling by ``(seed, index)`` draws that z.
A sample has an RGB image, a 19-class CelebAMask-HQ label map, named landmarks,
CelebA attributes, a caption and part crops.

Main entry points::

    sample(seed, index, res) -> SynthSample
    sample_from_z(z, res) -> SynthSample
    render_pair(seed, index, res) -> (SynthSample, SynthSample)   # same identity
    factors_from_z(z) -> Factors;  render(factors, res) -> (image, label)
    SynthFaceDataset(n, res, seed=0, split="train" | "heldout")
    write_dataset(n, res, out_dir, seed=0, progress=True);  synth_main(argv)

Modules: factors (z -> factors), layout (geometry), raster (coverage, canvas), render
(painting), landmarks, attributes, captions, sample, dataset, writer, cli.
"""

from .attributes import ATTRIBUTE_NAMES, NUM_ATTRIBUTES, attribute_vector, attributes_from_factors
from .captions import make_caption
from .classes import CLASS_NAMES, NUM_CLASSES, PALETTE
from .dataset import SPLITS, SynthFaceDataset, split_index, to_tensors
from .factors import (HELDOUT_OFFSET, Z_DIM, Z_NAMES, Factors, factors_from_z, sample_z,
                      with_new_pose_expression)
from .landmarks import LANDMARK_NAMES, NUM_LANDMARKS
from .render import MAX_RES, MIN_RES, render
from .sample import PART_CLASSES, SynthSample, part_crops, render_pair, sample, sample_from_z
from .writer import write_dataset


def synth_main(argv=None) -> int:
    """``facegen-rt synth`` entry point (see :mod:`.cli`)."""
    from .cli import synth_main as _main
    return _main(argv)


__all__ = [
    "ATTRIBUTE_NAMES", "CLASS_NAMES", "Factors", "HELDOUT_OFFSET", "LANDMARK_NAMES", "MAX_RES",
    "MIN_RES", "NUM_ATTRIBUTES", "NUM_CLASSES", "NUM_LANDMARKS", "PALETTE", "PART_CLASSES", "SPLITS",
    "SynthFaceDataset", "SynthSample", "Z_DIM", "Z_NAMES", "attribute_vector", "attributes_from_factors",
    "factors_from_z", "make_caption", "part_crops", "render", "render_pair", "sample", "sample_from_z",
    "sample_z", "split_index", "synth_main", "to_tensors", "with_new_pose_expression", "write_dataset",
]
