"""The parser net's optional full-resolution refinement stage (ParserConfig.refine)."""

from __future__ import annotations

import torch

from facegen_rt.eval import nets

SMALL = {"widths": [8, 8, 16, 16], "blocks": [0, 1, 1, 1]}


def test_without_refinement_the_parser_has_no_refinement_weights():
    # the bundled parser's checkpoint is strict about its keys
    net = nets.build("parser", SMALL)
    assert net.refine is None
    assert not any(k.startswith("refine.") for k in net.state_dict())


def test_refinement_adds_a_correction_to_the_base_logits():
    torch.manual_seed(0)
    refined = nets.build("parser", {**SMALL, "refine": 6}).eval()
    base = nets.build("parser", SMALL).eval()
    missing, unexpected = base.load_state_dict(refined.state_dict(), strict=False)
    assert not missing and all(k.startswith("refine.") for k in unexpected)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        out = refined(x)
        assert out.shape == (2, nets.NUM_CLASSES, 128, 128)
        assert (out - base(x)).abs().max() > 1e-3          # a live stage changes the logits
        last = refined.refine[-1]
        last.weight.zero_()
        last.bias.zero_()
        torch.testing.assert_close(refined(x), base(x))    # a zero correction leaves them
