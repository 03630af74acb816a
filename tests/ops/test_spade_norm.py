import pytest
import torch

from facegen_rt.ops import nan_checks, spade_norm, spade_norm_reference

from .parity import BACKENDS, DTYPES, assert_parity, cast, skip_unless_available, to64


def make_inputs(B=2, C=96, H=13, W=11, noncontiguous=False):
    """x [B, C, H, W] with an offset (GroupNorm must centre it), gamma and beta."""
    if noncontiguous:  # a transposed view: strides are not the contiguous ones
        x = (torch.randn(B, C, W, H) * 2 + 0.5).transpose(2, 3)
    else:
        x = torch.randn(B, C, H, W) * 2 + 0.5
    gamma = torch.randn(B, C, H, W) * 0.5
    beta = torch.randn(B, C, H, W) * 0.5
    return x, gamma, beta


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("shape,groups,noncontiguous", [
    ((2, 96, 13, 11), 32, False),
    ((1, 64, 7, 9), 32, True),
    ((3, 30, 5, 3), 3, False),
])
def test_parity(backend, dtype, act, shape, groups, noncontiguous):
    skip_unless_available(backend)
    dtype = DTYPES[dtype]
    inputs = make_inputs(*shape, noncontiguous=noncontiguous)
    low = cast(dtype, *inputs)
    ref64 = spade_norm_reference(*to64(*low), groups=groups, act=act or "")
    ref_lowp = spade_norm_reference(*low, groups=groups, act=act or "")
    out = spade_norm(*low, groups=groups, act=act, backend=backend)
    assert_parity(out, ref64, ref_lowp, dtype)


def test_constant_group_is_finite():
    # A constant group has zero variance: the result is beta (times the activation), not NaN.
    x = torch.full((1, 32, 4, 4), 3.0)
    gamma, beta = torch.randn(2, 1, 32, 4, 4)
    out = spade_norm(x, gamma, beta, groups=32)
    torch.testing.assert_close(out, beta, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad,error,needle", [
    (dict(x=torch.randn(2, 32, 4)), ValueError, "x must have 4 dims"),
    (dict(gamma=torch.randn(2, 32, 4, 5)), ValueError, "gamma must have shape"),
    (dict(beta=torch.randn(2, 32, 4, 4).double()), TypeError, "beta has dtype float64"),
    (dict(x=torch.randn(2, 32, 4, 4).half()), TypeError, "x has dtype float16"),
    (dict(x=torch.randint(0, 3, (2, 32, 4, 4))), TypeError, "x has dtype int64"),
    (dict(groups=5), ValueError, "groups=5"),
    (dict(act="relu"), ValueError, "act must be"),
    (dict(beta=torch.randn(2, 32, 4, 4, device="meta")), TypeError, "beta is on meta"),
    (dict(gamma=[1.0]), TypeError, "gamma must be a torch.Tensor"),
])
def test_bad_input(bad, error, needle):
    args = dict(x=torch.randn(2, 32, 4, 4), gamma=torch.randn(2, 32, 4, 4),
                beta=torch.randn(2, 32, 4, 4), groups=32, act=None)
    args.update(bad)
    with pytest.raises(error, match=needle):
        spade_norm(**args)


def test_nan_input_named_when_checks_on():
    x, gamma, beta = make_inputs(1, 32, 4, 4)
    gamma[0, 3, 1, 1] = float("nan")
    with nan_checks(True), pytest.raises(ValueError, match="gamma contains NaN"):
        spade_norm(x, gamma, beta)
