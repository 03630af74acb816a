import pytest
import torch

from facegen_rt.ops import nan_checks, shared_self_attention, shared_self_attention_reference

from .parity import BACKENDS, DTYPES, assert_parity, cast, skip_unless_available, to64

B, H, L, D = 2, 3, 97, 40
N_REF, SIDE = 3, 7  # three references of 7 x 7 = 49 tokens each
M = N_REF * SIDE * SIDE


def make_keep(kind: str) -> torch.Tensor:
    """[B, M] bool: which reference tokens lie inside the subject mask."""
    if kind == "none_kept":
        return torch.zeros(B, M, dtype=torch.bool)
    if kind == "all_kept":
        return torch.ones(B, M, dtype=torch.bool)
    if kind == "random":
        return torch.rand(B, M) < 0.5
    if kind == "blob":  # an ellipse per reference in its token grid, as subject masks are
        yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
        blobs = []
        for _ in range(B * N_REF):
            cy, cx = torch.rand(2) * SIDE
            ry, rx = 1 + torch.rand(2) * SIDE / 2
            blobs.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        return torch.stack(blobs).view(B, M)
    raise ValueError(kind)


def make_inputs(noncontiguous=False):
    def t(n):
        if noncontiguous:  # [B, n, h, d] projections viewed as [B, h, n, d]
            return torch.randn(B, n, H, D).permute(0, 2, 1, 3)
        return torch.randn(B, H, n, D)
    return t(L), t(L), t(L), t(M), t(M)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", ["none_kept", "all_kept", "random", "blob"])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_parity(backend, dtype, kind, exclude, noncontiguous):
    skip_unless_available(backend)
    dtype = DTYPES[dtype]
    inputs = cast(dtype, *make_inputs(noncontiguous))
    keep = make_keep(kind)
    scale = D ** -0.5
    ref64 = shared_self_attention_reference(*to64(*inputs), keep, scale, exclude)
    ref_lowp = shared_self_attention_reference(*inputs, keep, scale, exclude)
    out = shared_self_attention(*inputs, keep, exclude=exclude, backend=backend)
    assert_parity(out, ref64, ref_lowp, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_tokens_are_never_read(backend):
    """Masked reference rows may hold anything (here NaN): they count as zero keys."""
    skip_unless_available(backend)
    q, ks, vs, kr, vr = make_inputs()
    keep = make_keep("blob")
    clean = shared_self_attention(q, ks, vs, kr, vr, keep, backend=backend)
    hidden = ~keep[:, None, :, None].expand_as(kr)
    poisoned = shared_self_attention(q, ks, vs, kr.masked_fill(hidden, float("nan")),
                                     vr.masked_fill(hidden, float("nan")), keep, backend=backend)
    torch.testing.assert_close(poisoned, clean, atol=0, rtol=0)


def test_masked_tokens_count_in_the_denominator():
    """Seed semantics: a masked token is a zero key, so dropping it (exclude) differs."""
    q, ks, vs, kr, vr = make_inputs()
    keep = make_keep("random")
    counted = shared_self_attention(q, ks, vs, kr, vr, keep)
    dropped = shared_self_attention(q, ks, vs, kr, vr, keep, exclude=True)
    assert (counted - dropped).abs().max() > 1e-3


@pytest.mark.parametrize("bad,error,needle", [
    (dict(q=torch.randn(B, H, L)), ValueError, "q must have 4 dims"),
    (dict(k_self=torch.randn(B, H, L + 1, D)), ValueError, "k_self must have shape"),
    (dict(v_ref=torch.randn(B, H, M, D + 1)), ValueError, "v_ref must have shape"),
    (dict(ref_keep=torch.ones(B, M)), TypeError, "ref_keep has dtype float32"),
    (dict(ref_keep=torch.ones(B, M + 1, dtype=torch.bool)), ValueError, "ref_keep must have shape"),
    (dict(k_ref=torch.randn(B, H, M, D).bfloat16()), TypeError, "k_ref has dtype bfloat16"),
])
def test_bad_input(bad, error, needle):
    q, ks, vs, kr, vr = make_inputs()
    args = dict(q=q, k_self=ks, v_self=vs, k_ref=kr, v_ref=vr, ref_keep=make_keep("random"))
    args.update(bad)
    with pytest.raises(error, match=needle):
        shared_self_attention(**args)


def test_nan_in_kept_token_named_when_checks_on():
    q, ks, vs, kr, vr = make_inputs()
    keep = make_keep("all_kept")
    vr[0, 1, 2, 3] = float("nan")
    with nan_checks(True), pytest.raises(ValueError, match="v_ref contains NaN"):
        shared_self_attention(q, ks, vs, kr, vr, keep)
