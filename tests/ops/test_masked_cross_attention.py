import pytest
import torch

from facegen_rt.ops import masked_cross_attention, masked_cross_attention_reference, nan_checks

from .parity import BACKENDS, DTYPES, assert_parity, cast, skip_unless_available, to64

B, H, L, D, R = 2, 3, 97, 40, 19


def make_mask(kind: str, b=B, l=L, r=R) -> torch.Tensor:
    """[B, L, R] float masks of the kinds the kernels treat differently."""
    if kind == "onehot":  # a semantic mask: one region per pixel
        return torch.nn.functional.one_hot(torch.randint(0, r, (b, l)), r).float()
    if kind == "onehot_with_empty_rows":  # some pixels in no region
        mask = make_mask("onehot", b, l, r)
        mask[torch.rand(b, l) < 0.3] = 0
        return mask
    if kind == "empty":  # the unconditional branch: segmentation zeros
        return torch.zeros(b, l, r)
    if kind == "all_kept":
        return torch.ones(b, l, r)
    if kind == "soft":  # several weighted regions per pixel: the general path
        return torch.rand(b, l, r) * (torch.rand(b, l, r) < 0.15)
    raise ValueError(kind)


MASKS = ("onehot", "onehot_with_empty_rows", "empty", "all_kept", "soft")


def make_inputs(noncontiguous=False):
    if noncontiguous:  # q as a permuted view of a [B, L, h, d] projection
        q = torch.randn(B, L, H, D).permute(0, 2, 1, 3)
    else:
        q = torch.randn(B, H, L, D)
    return q, torch.randn(B, H, R, D), torch.randn(B, H, R, D)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_parity(backend, dtype, kind, noncontiguous):
    skip_unless_available(backend)
    dtype = DTYPES[dtype]
    q, k, v = cast(dtype, *make_inputs(noncontiguous))
    mask = make_mask(kind).to(dtype)
    scale = D ** -0.5
    ref64 = masked_cross_attention_reference(*to64(q, k, v, mask), scale)
    ref_lowp = masked_cross_attention_reference(q, k, v, mask, scale)
    out = masked_cross_attention(q, k, v, mask, backend=backend)
    assert_parity(out, ref64, ref_lowp, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_onehot_row_with_exactly_zero_logit_gives_mean_v(backend):
    """The seed masks a logit that is exactly 0.0 even inside its region: then the whole
    row is -max and the output is mean(V), not v[region]. The fast path must agree."""
    skip_unless_available(backend)
    q, k, v = make_inputs()
    q[:, :, 5] = 0  # every head's logits at pixel 5 are exactly zero
    mask = make_mask("onehot")
    out = masked_cross_attention(q, k, v, mask, backend=backend)
    torch.testing.assert_close(out[:, :, 5], v.mean(dim=2), atol=1e-5, rtol=1e-5)
    region = mask[:, 6].argmax(-1)  # an ordinary pixel: a pure gather of its region's value
    torch.testing.assert_close(out[:, :, 6], v[torch.arange(B), :, region], atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad,error,needle", [
    (dict(q=torch.randn(B, H, L)), ValueError, "q must have 4 dims"),
    (dict(k=torch.randn(B, H, R, D + 1)), ValueError, "k and v must have shape"),
    (dict(v=torch.randn(B, H, R + 1, D)), ValueError, "k and v must have shape"),
    (dict(mask=torch.ones(B, L + 1, R)), ValueError, "mask must have shape"),
    (dict(mask=torch.ones(B, L, R, dtype=torch.long)), TypeError, "mask has dtype int64"),
    (dict(k=torch.randn(B, H, R, D).bfloat16()), TypeError, "k has dtype bfloat16"),
    (dict(v=torch.randn(B, H, R, D, device="meta")), TypeError, "v is on meta"),
])
def test_bad_input(bad, error, needle):
    args = dict(q=torch.randn(B, H, L, D), k=torch.randn(B, H, R, D), v=torch.randn(B, H, R, D),
                mask=make_mask("onehot"))
    args.update(bad)
    with pytest.raises(error, match=needle):
        masked_cross_attention(**args)


def test_nan_input_named_when_checks_on():
    q, k, v = make_inputs()
    k[1, 2, 3, 4] = float("inf")
    with nan_checks(True), pytest.raises(ValueError, match="k contains NaN or inf"):
        masked_cross_attention(q, k, v, make_mask("onehot"))


@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", MASKS)
def test_cpu_sixteen_row_groups(d, dtype, kind):
    """Head sizes that are multiples of 16 run one-hot rows sixteen at a time (L = 97:
    six whole groups and a remainder), mixed with the row-by-row paths."""
    skip_unless_available("cpu")
    dtype = DTYPES[dtype]
    q, k, v = cast(dtype, torch.randn(B, H, L, d), torch.randn(B, H, R, d), torch.randn(B, H, R, d))
    mask = make_mask(kind).to(dtype)
    ref64 = masked_cross_attention_reference(*to64(q, k, v, mask), d ** -0.5)
    ref_lowp = masked_cross_attention_reference(q, k, v, mask, d ** -0.5)
    assert_parity(masked_cross_attention(q, k, v, mask, backend="cpu"), ref64, ref_lowp, dtype)


@pytest.mark.parametrize("d", [32, 40])
@pytest.mark.parametrize("kind", ["onehot", "onehot_with_empty_rows", "soft"])
def test_cpu_follows_the_reference_on_special_rows(d, kind):
    """Rows whose logits are exactly zero, NaN, or overflow to inf (with NaN checks
    off) must come out as the float32 reference computes them, inside a group of
    sixteen one-hot rows or not."""
    skip_unless_available("cpu")
    q, k, v = torch.randn(B, H, L, d), torch.randn(B, H, R, d), torch.randn(B, H, R, d)
    q[:, :, 5] = 0               # logits exactly zero: mean(V)
    q[0, 1, 20, 3] = float("nan")  # one NaN row
    q[1, 0, 40] = 3e38           # logits overflow: inf * 0 = NaN where masked
    q[1, 2, 70] = 1e15           # huge but finite: the kernel's bound fails, exact path
    mask = make_mask(kind)
    ref = masked_cross_attention_reference(q, k, v, mask, d ** -0.5)
    out = masked_cross_attention(q, k, v, mask, backend="cpu")
    assert out.isnan().any() and ref.isnan().any()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("d", [32, 40])
def test_cpu_masked_logit_overflow_inside_a_group(d):
    """A one-hot row whose own logit is finite while a region the mask drops has an
    infinite one: the reference's inf * 0 makes the row NaN. Only the bound on |q|
    can see this, so it must hold for sixteen-row groups as for single rows."""
    skip_unless_available("cpu")
    q, k, v = torch.randn(B, H, L, d), torch.randn(B, H, R, d), torch.randn(B, H, R, d)
    mask = make_mask("onehot")
    region = mask[1, 37].argmax()
    k[1, 2, :, 0] = 10.0
    k[1, 2, region, 0] = 0.0   # the row's own region does not see q's huge component
    q[1, 2, 37, 0] = 1e38      # 1e38 * 10 * scale overflows for every other region
    ref = masked_cross_attention_reference(q, k, v, mask, d ** -0.5)
    out = masked_cross_attention(q, k, v, mask, backend="cpu")
    assert ref[1, 2, 37].isnan().all() and not ref[1, 2, 36].isnan().any()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("b, l, h", [(1, 1, 1), (1, 10, 1), (1, 17, 1), (1, 33, 3), (3, 600, 2)])
@pytest.mark.parametrize("kind", ["onehot", "soft"])
def test_cpu_work_split_over_shapes(b, l, h, kind):
    """The kernel splits rows into blocks by L, images and heads (one rule for one-hot
    masks, another when rows need the full path); every split covers each row once."""
    skip_unless_available("cpu")
    q, k, v = torch.randn(b, h, l, 32), torch.randn(b, h, R, 32), torch.randn(b, h, R, 32)
    mask = make_mask(kind, b=b, l=l)
    ref64 = masked_cross_attention_reference(*to64(q, k, v, mask), 32 ** -0.5)
    ref_lowp = masked_cross_attention_reference(q, k, v, mask, 32 ** -0.5)
    assert_parity(masked_cross_attention(q, k, v, mask, backend="cpu"), ref64, ref_lowp,
                  torch.float32)


@pytest.mark.parametrize("r", [1, 8, 9, 19, 64, 65])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cpu_reads_mask_rows_of_any_length(r, dtype):
    """The kernel finds each row's nonzero mask entries eight or sixteen at a time for
    R <= 64 and one by one above: every length, a region in the last slot, and -0.0
    entries (zero, as the reference's logits * mask makes them) must plan the same."""
    skip_unless_available("cpu")
    dtype = DTYPES[dtype]
    q, k, v = cast(dtype, torch.randn(B, H, L, 32), *torch.randn(2, B, H, r, 32))
    mask = make_mask("onehot", r=r)
    mask[:, ::3] = 0
    mask[:, ::3, r - 1] = 1  # the last region
    mask[mask == 0] = -0.0
    mask = mask.to(dtype)
    ref64 = masked_cross_attention_reference(*to64(q, k, v, mask), 32 ** -0.5)
    ref_lowp = masked_cross_attention_reference(q, k, v, mask, 32 ** -0.5)
    assert_parity(masked_cross_attention(q, k, v, mask, backend="cpu"), ref64, ref_lowp, dtype)
