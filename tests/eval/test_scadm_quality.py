"""The SCA-DM quality measures (facegen_rt.eval.scadm_quality) on known answers, and
the reconstruction run end to end on a tiny random model."""

import numpy as np
import pytest
import torch

from facegen_rt.eval.evaluators import assets_present
from facegen_rt.eval.scadm_quality import transfer_scores

C = 19


def _colors():
    return torch.rand(C, 3) * 0.8 + 0.1


def test_full_transfer_moves_all_the_way_and_leaks_nothing():
    base, ref = _colors(), _colors()
    chosen = [13]
    gen = base.clone()
    gen[chosen] = ref[chosen]
    n = torch.full((C,), 50)
    moved, leakage = transfer_scores(base, gen, ref, n, n, chosen)
    assert moved == pytest.approx(1.0, abs=1e-9) and leakage == pytest.approx(0.0, abs=1e-9)


def test_no_transfer_moves_nothing_and_other_changes_count_as_leakage():
    base, ref = _colors(), _colors()
    n = torch.full((C,), 50)
    moved, _ = transfer_scores(base, base.clone(), ref, n, n, [13])
    assert moved == pytest.approx(0.0, abs=1e-9)
    gen = ref.clone()  # every region takes the donor's colour: leakage is large
    moved, leakage = transfer_scores(base, gen, ref, n, n, [13])
    assert moved == pytest.approx(1.0, abs=1e-9) and leakage > 0.2


def test_regions_missing_from_mask_or_donor_are_skipped():
    base, ref = _colors(), _colors()
    n_in = torch.full((C,), 50)
    n_ref = n_in.clone()
    n_ref[13] = 0
    assert transfer_scores(base, base, ref, n_in, n_ref, [13]) is None


@pytest.mark.skipif(not assets_present(), reason="bundled evaluator weights are not present")
def test_reconstruction_measures_on_a_tiny_model():
    from facegen_rt.data.synthface import sample, split_index
    from facegen_rt.eval.evaluators import Evaluators
    from facegen_rt.eval.scadm_quality import reconstruction
    from facegen_rt.pipelines.semantic import SemanticPipeline

    pipe = SemanticPipeline.from_preset("tiny", seed=0)
    items = [sample(0, split_index("heldout", 3_000_000 + i), pipe.image_size) for i in range(3)]
    data = {"image": np.stack([s.image for s in items]), "label": np.stack([s.label for s in items])}
    out = reconstruction(pipe, Evaluators(), data, steps=2, seed=0, batch=2)
    assert 0.0 <= out["miou"] <= 1.0 and 0.5 < out["parser_miou_on_real"] <= 1.0
    assert -1.0 <= out["ssim"] <= 1.0 and np.isfinite(out["fd_sf"])
