"""The report's table of parser errors by the renderer's edge coverage."""

from __future__ import annotations

import numpy as np
import torch

from facegen_rt.eval.report import edge_error_table


def test_edge_error_table_counts_errors_per_coverage_bin_and_the_fixed_miou():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 19, (2, 9, 11), generator=g)
    conf = np.full((2, 9, 11), 255, np.uint8)
    conf[0, :3] = 130           # 0.51: a near-threshold edge row
    conf[1, :2] = 200           # 0.78
    pred = labels.clone()
    pred[0, 0] = (labels[0, 0] + 1) % 19          # 11 errors at 0.51
    pred[1, 0, :4] = (labels[1, 0, :4] + 1) % 19  # 4 errors at 0.78
    t = edge_error_table(pred, labels, conf)
    rows = {r["coverage"]: r for r in t["rows"]}
    assert abs(rows["0.50-0.55"]["pixels_pct"] - 100 * 33 / 198) < 1e-9
    assert abs(rows["0.50-0.55"]["error_rate_pct"] - 100 * 11 / 33) < 1e-9
    assert abs(rows["0.50-0.55"]["errors_pct"] - 100 * 11 / 15) < 1e-9
    assert abs(rows["0.70-0.80"]["errors_pct"] - 100 * 4 / 15) < 1e-9
    assert rows["1 (inside)"]["error_rate_pct"] == 0.0 and rows["0.90-1.00"]["error_rate_pct"] is None
    fixed = t["miou_if_fixed_from"]
    assert fixed["0.55"] < 100.0 and abs(fixed["0.55"] - fixed["0.60"]) < 1e-9   # 0.51 errors stay
    assert fixed["0.80"] < fixed["0.70"]                                           # 0.78 ones go at 0.7
    perfect = edge_error_table(labels, labels, conf)
    assert all(v == 100.0 for v in perfect["miou_if_fixed_from"].values())


def test_render_arrays_adds_the_edge_labels_and_keeps_the_rest():
    from facegen_rt.eval.train import render_arrays
    plain = render_arrays(3, 64, 0, "heldout", start=7, workers=1)
    with_edges = render_arrays(3, 64, 0, "heldout", start=7, workers=1, edges=True)
    assert set(with_edges) == set(plain) | {"edge_other", "edge_conf"}
    for k, v in plain.items():
        assert np.array_equal(with_edges[k], v), k
    assert (with_edges["edge_conf"] >= 127).all() and (with_edges["edge_conf"] < 255).any()
