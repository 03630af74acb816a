"""The StyleGAN2 ops: bias_act, upfirdn2d, modulated_conv2d.

Each op is checked against float64 (parity rule in parity.py), against an independent
formulation written here (loops or another path), for gradients in float64
(gradcheck), and for its torch.library registration (opcheck). The compiled backends
(C++ "cpu", Triton under TRITON_INTERPRET=1) are covered at the end of this file: a
backend x dtype parity matrix against float64, the C++ backward against the float64
reference backward, and the C++ functions' own argument checks.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from facegen_rt.ops.bias_act import BACKENDS as BIAS_ACT_BACKENDS
from facegen_rt.ops.bias_act import bias_act, bias_act_reference
from facegen_rt.ops.modulated_conv2d import BACKENDS as MODCONV_BACKENDS
from facegen_rt.ops.modulated_conv2d import (modulated_conv2d, modulated_conv2d_reference,
                                             output_size)
from facegen_rt.ops.upfirdn2d import BACKENDS as UPFIRDN2D_BACKENDS
from facegen_rt.ops.upfirdn2d import (downsample2d, filter2d, setup_filter, upfirdn2d,
                                      upfirdn2d_reference, upsample2d)

from .parity import DTYPES, assert_parity, cast, to64

FIR = [1, 3, 3, 1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: with several OpenMP threads on a busy machine, thread
    hand-off costs 10-100x the work (a 3x15x13 float64 conv: 60 ms vs 0.3 ms)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# ----------------------------------------------------------------------------- bias_act

@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("act,clamp", [("linear", None), ("lrelu", None), ("lrelu", 0.7),
                                       ("linear", 0.3)])
@pytest.mark.parametrize("shape,dim,noncontiguous", [
    ((2, 19, 7, 5), 1, False), ((3, 40), 1, True), ((4, 6, 97), -1, False)])
def test_bias_act_parity(dtype, act, clamp, shape, dim, noncontiguous):
    dtype = DTYPES[dtype]
    x = torch.randn(*shape) * 2
    if noncontiguous:
        x = torch.randn(*reversed(shape)).transpose(0, -1)
    b = torch.randn(shape[dim])
    low = cast(dtype, x, b)
    ref64 = bias_act_reference(*to64(*low), dim=dim, act=act, clamp=clamp)
    ref_lowp = bias_act_reference(*low, dim=dim, act=act, clamp=clamp)
    assert_parity(bias_act(*low, dim=dim, act=act, clamp=clamp), ref64, ref_lowp, dtype)


def test_bias_act_math():
    x = torch.tensor([[-2.0, -0.5, 0.5, 3.0]])
    b = torch.tensor([1.0])
    # lrelu(x + 1) * sqrt(2), clamped to [-1.5, 1.5]
    want = torch.tensor([[-0.2 * math.sqrt(2), 0.5 * math.sqrt(2), 1.5, 1.5]])
    torch.testing.assert_close(bias_act(x, b, dim=0, act="lrelu", clamp=1.5), want)
    torch.testing.assert_close(bias_act(x, act="linear", gain=3.0), 3 * x)
    identity = bias_act(x)
    assert torch.equal(identity, x) and identity.data_ptr() != x.data_ptr()
    # 1-D x: the bias gradient is the output gradient itself, element by element
    x1, b1 = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    g = torch.randn(6)
    bias_act(x1, b1, dim=0, act="linear", gain=2.0).backward(g)
    torch.testing.assert_close(b1.grad, 2 * g)
    torch.testing.assert_close(x1.grad, 2 * g)


def _away_from_kinks(z, edges, margin=2e-2):
    """Move entries of z off the given kinks (the lrelu corner, the clamp edges), so the
    finite differences of gradcheck see a single linear piece."""
    for edge in edges:
        z = torch.where((z - edge).abs() < margin, z + 2 * margin, z)
    return z


@pytest.mark.parametrize("act,clamp,dim,with_bias", [
    ("lrelu", None, 1, True), ("lrelu", 1.0, 1, True), ("linear", 0.5, -1, True),
    ("lrelu", None, 1, False)])
def test_bias_act_gradcheck(act, clamp, dim, with_bias):
    shape = (2, 3, 4, 5)
    gain = math.sqrt(2) if act == "lrelu" else 1.0
    edges = [0.0]
    if clamp is not None:
        edges += [clamp / gain, -clamp / (gain * (0.2 if act == "lrelu" else 1.0))]
    z = _away_from_kinks(torch.randn(shape, dtype=torch.float64), edges)  # x + b
    b = torch.randn(shape[dim], dtype=torch.float64) if with_bias else None
    bias_view = b.reshape([-1 if i == dim % 4 else 1 for i in range(4)]) if with_bias else 0
    x = (z - bias_view).requires_grad_()
    inputs = (x, b.requires_grad_()) if with_bias else (x,)

    def fn(x, b=None):
        return bias_act(x, b, dim=dim, act=act, clamp=clamp)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_bias_act_opcheck():
    x = torch.randn(3, 5, 4, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    torch.library.opcheck(torch.ops.facegen.bias_act.default,
                          (x, b, 1, "lrelu", 0.2, math.sqrt(2), 0.5, ""))
    torch.library.opcheck(torch.ops.facegen.bias_act.default,
                          (x, None, 1, "linear", 0.0, 1.0, -1.0, ""),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


@pytest.mark.parametrize("kwargs,error,needle", [
    (dict(act="relu"), ValueError, "act must be one of"),
    (dict(b=torch.randn(4)), ValueError, r"b must have shape \(5,\)"),
    (dict(b=torch.randn(5).double()), TypeError, "b has dtype float64"),
    (dict(x=torch.randn(2, 5).half()), TypeError, "x has dtype float16"),
    (dict(dim=2), ValueError, "dim=2 is out of range"),
    (dict(clamp=-1.0), ValueError, "clamp must be non-negative"),
])
def test_bias_act_bad_input(kwargs, error, needle):
    args = dict(x=torch.randn(2, 5), b=None, dim=1, act="lrelu")
    args.update(kwargs)
    with pytest.raises(error, match=needle):
        bias_act(**args)


def test_backend_tables_list_compiled_kernels_first():
    # Compiled kernels go ahead of the reference; requesting an unknown one by name is
    # an error naming the choices, never a silent fallback.
    for table in (BIAS_ACT_BACKENDS, UPFIRDN2D_BACKENDS, MODCONV_BACKENDS):
        assert table.names() == ["cpu", "triton", "reference"]
    with pytest.raises(ValueError, match="not a backend of bias_act"):
        bias_act(torch.randn(2, 3), backend="cuda")


# ----------------------------------------------------------------------------- upfirdn2d

def upfirdn2d_loops(x, f, up, down, pad, flip_filter=False, gain=1.0):
    """Independent definition with explicit loops (float64): zero-insert, pad/crop,
    true convolution (correlation with flip_filter), keep every down-th pixel."""
    (upx, upy), (downx, downy) = up, down
    x0, x1, y0, y1 = pad
    N, C, H, W = x.shape
    u = torch.zeros(N, C, H * upy, W * upx, dtype=torch.float64)
    u[:, :, ::upy, ::upx] = x.double()
    Hp, Wp = H * upy + y0 + y1, W * upx + x0 + x1
    padded = torch.zeros(N, C, Hp, Wp, dtype=torch.float64)
    for i in range(Hp):  # padded[i, j] = u[i - y0, j - x0] where that exists
        if 0 <= i - y0 < H * upy:
            lo, hi = max(0, x0), min(Wp, W * upx + x0)
            padded[:, :, i, lo:hi] = u[:, :, i - y0, lo - x0:hi - x0]
    f = f.double() * gain ** (f.dim() / 2)
    if f.dim() == 1:
        f = torch.outer(f, f)
    fh, fw = f.shape
    k = f if flip_filter else f.flip([0, 1])
    out = torch.zeros(N, C, Hp - fh + 1, Wp - fw + 1, dtype=torch.float64)
    for i in range(fh):
        for j in range(fw):
            out += k[i, j] * padded[:, :, i:i + out.shape[2], j:j + out.shape[3]]
    return out[:, :, ::downy, ::downx]


@pytest.mark.parametrize("up,down,pad,flip,separable", [
    ((1, 1), (1, 1), (1, 2, 2, 1), False, False),
    ((2, 2), (1, 1), (2, 1, 2, 1), False, False),
    ((1, 1), (2, 2), (1, 1, 1, 1), True, False),
    ((2, 1), (1, 3), (3, -1, 0, 2), False, True),
    ((3, 2), (2, 1), (-1, 2, 1, 1), True, False),
])
def test_upfirdn2d_matches_loops(up, down, pad, flip, separable):
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    f = torch.rand(8 if separable else 4, dtype=torch.float64) + 0.1
    if not separable:
        f = torch.outer(f, torch.rand(3, dtype=torch.float64) + 0.1)  # non-square 4x3
    out = upfirdn2d(x, f, up=list(up), down=list(down), padding=list(pad), flip_filter=flip,
                    gain=1.5)
    want = upfirdn2d_loops(x, f, up, down, pad, flip, 1.5)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("helper,factor", [(upsample2d, 2), (downsample2d, 0.5), (filter2d, 1)])
def test_upfirdn2d_helpers(dtype, helper, factor):
    dtype = DTYPES[dtype]
    f = setup_filter(FIR)
    low = cast(dtype, torch.randn(2, 5, 10, 14).transpose(2, 3))[0]  # [2, 5, 14, 10] strided
    out = helper(low, f)
    assert out.shape == (2, 5, int(14 * factor), int(10 * factor))
    assert_parity(out, helper(low.double(), f), out, dtype)
    # A constant image keeps its value away from the borders (the filter's DC gain is 1).
    inner = helper(torch.full((1, 1, 16, 16), 3.0), f)[:, :, 3:-3, 3:-3]
    torch.testing.assert_close(inner, torch.full_like(inner, 3.0))


def test_setup_filter():
    f = setup_filter(FIR)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]),
                                              torch.tensor([1.0, 3, 3, 1])) / 64)
    assert setup_filter([1] * 8).shape == (8,)  # >= 8 taps stay separable
    assert setup_filter(None).shape == (1, 1)


@pytest.mark.parametrize("up,down,pad,separable", [
    (2, 1, [2, 1, 2, 1], False), (1, 2, [1, 1, 1, 1], False), ([2, 1], [1, 2], [0, 3, 2, 2], True)])
def test_upfirdn2d_gradcheck(up, down, pad, separable):
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 2, 3, 4, 4, 3, 2, 1] if separable else FIR).double()

    def fn(x):
        return upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=separable)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_opcheck():
    f = setup_filter(FIR)
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    torch.library.opcheck(torch.ops.facegen.upfirdn2d.default,
                          (x, f, 2, 2, 1, 1, 2, 1, 2, 1, False, 4.0, ""))
    torch.library.opcheck(torch.ops.facegen.upfirdn2d.default,
                          (x, f, 1, 1, 2, 2, 1, 1, 0, -1, True, 1.0, ""),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


@pytest.mark.parametrize("kwargs,error,needle", [
    (dict(x=torch.randn(3, 8, 8)), ValueError, "x must have 4 dims"),
    (dict(f=torch.ones(2, 2, 2)), ValueError, "f must be a non-empty"),
    (dict(f=setup_filter(FIR).requires_grad_()), ValueError, "f requires grad"),
    (dict(padding=[1, 2, 3]), ValueError, "padding must have 1, 2 or 4 entries"),
    (dict(up=0), ValueError, "up must be an int >= 1"),
    (dict(padding=-3), ValueError, "smaller than the 4x4 filter"),
])
def test_upfirdn2d_bad_input(kwargs, error, needle):
    args = dict(x=torch.randn(1, 2, 4, 4), f=setup_filter(FIR))
    args.update(kwargs)
    with pytest.raises(error, match=needle):
        upfirdn2d(**args)


# ----------------------------------------------------------------------- modulated_conv2d

def modconv_by_sample(x, weight, styles, noise, up, down, padding, f, demodulate, flip_weight):
    """Per-sample loop over the generic resampling path (upfirdn2d up, valid conv,
    upfirdn2d down): none of the reference's fast paths or grouped convolutions."""
    fw = f.shape[-1]
    px0, px1, py0, py1 = padding
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fw + up - 1) // 2, py1 + (fw - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fw - down + 1) // 2, py1 + (fw - down) // 2
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        if not flip_weight:
            w = w.flip([2, 3])
        y = upfirdn2d_loops(x[n:n + 1], f if up > 1 else torch.ones(1, 1), (up, up), (1, 1),
                            (px0, px1, py0, py1), gain=up ** 2)
        y = F.conv2d(y, w.double())
        if down > 1:
            y = upfirdn2d_loops(y, f, (1, 1), (down, down), (0, 0, 0, 0))
        outs.append(y)
    out = torch.cat(outs)
    return out + noise if noise is not None else out


MODCONV_CASES = [  # (C_in, C_out, k, up, down, padding, demodulate, with_noise)
    (4, 5, 3, 1, 1, 1, True, True),
    (4, 5, 3, 2, 1, 1, True, True),
    (6, 3, 3, 1, 2, 1, False, False),
    (4, 3, 1, 1, 1, 0, False, False),
    (3, 4, 1, 2, 1, 0, True, False),
    (3, 4, 1, 1, 2, 0, True, True),
    (5, 2, 3, 2, 2, [1, 0, 2, 1], True, False),
]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "nonfused"])
@pytest.mark.parametrize("case", MODCONV_CASES, ids=[str(i) for i in range(len(MODCONV_CASES))])
def test_modulated_conv2d_matches_per_sample_loop(case, fused):
    cin, cout, k, up, down, padding, demodulate, with_noise = case
    x = torch.randn(2, cin, 7, 6, dtype=torch.float64)
    weight = torch.randn(cout, cin, k, k, dtype=torch.float64)
    styles = torch.randn(2, cin, dtype=torch.float64)
    f = setup_filter(FIR).double()
    pad = [padding] * 4 if isinstance(padding, int) else padding
    oh, ow = output_size(x.shape[2:], weight.shape[2:], (4, 4), up, down, pad)
    noise = torch.randn(oh, ow, dtype=torch.float64) if with_noise else None
    for flip_weight in (True, False):
        out = modulated_conv2d(x, weight, styles, noise, up=up, down=down, padding=padding,
                               resample_filter=f, demodulate=demodulate, flip_weight=flip_weight,
                               fused_modconv=fused)
        want = modconv_by_sample(x, weight, styles, noise, up, down, pad, f, demodulate,
                                 flip_weight)
        torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "nonfused"])
def test_modulated_conv2d_parity(dtype, fused):
    dtype = DTYPES[dtype]
    x = torch.randn(3, 40, 19, 19)[:, :, :, 1:]  # non-contiguous, 19 x 18
    weight = torch.randn(24, 40, 3, 3)
    styles = torch.randn(3, 40) + 1
    noise = torch.randn(3, 1, 38, 36) * 0.1
    f = setup_filter(FIR)
    low = cast(dtype, x, weight, styles, noise)
    kw = dict(up=2, padding=1, resample_filter=f, flip_weight=False, fused_modconv=fused)
    ref64 = modulated_conv2d_reference(*to64(*low[:3]), low[3].double(), **kw)
    ref_lowp = modulated_conv2d_reference(*low, **kw)
    assert_parity(modulated_conv2d(*low, **kw), ref64, ref_lowp, dtype)


def test_fused_and_nonfused_agree_in_float32():
    x, styles = torch.randn(4, 32, 16, 16), torch.randn(4, 32)
    weight = torch.randn(16, 32, 3, 3)
    a = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=True)
    b = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "nonfused"])
@pytest.mark.parametrize("up,down,demodulate", [(2, 1, True), (1, 2, True), (1, 1, False)])
def test_modulated_conv2d_gradcheck(fused, up, down, demodulate):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    f = setup_filter(FIR).double()
    oh, ow = output_size((5, 5), (3, 3), (4, 4), up, down, [1, 1, 1, 1])
    noise = torch.randn(2, 1, oh, ow, dtype=torch.float64, requires_grad=True)

    def fn(x, weight, styles, noise):
        return modulated_conv2d(x, weight, styles, noise, up=up, down=down, padding=1,
                                resample_filter=f, demodulate=demodulate,
                                flip_weight=(up == 1), fused_modconv=fused)

    assert torch.autograd.gradcheck(fn, (x, weight, styles, noise), fast_mode=True)


def test_modulated_conv2d_grad_only_where_needed():
    # DragGAN: frozen weights, gradients for x and styles only.
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3)
    styles = torch.randn(2, 4, requires_grad=True)
    modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False).square().sum().backward()
    assert x.grad is not None and styles.grad is not None and weight.grad is None


def test_modulated_conv2d_opcheck():
    f = setup_filter(FIR)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    weight = torch.randn(5, 4, 3, 3, requires_grad=True)
    styles = torch.randn(2, 4, requires_grad=True)
    noise = torch.randn(16, 16, requires_grad=True)
    op = torch.ops.facegen.modulated_conv2d.default
    # Eager autograd runs the C++ backward; the traced graph runs the reference's
    # vector-Jacobian product. The two float32 sums differ by about 1e-6 of the largest
    # gradient (tens here), which opcheck's default per-element tolerance (1e-5 +
    # 1.3e-6 |g|) misses on a small, cancelled style gradient in a few % of draws.
    # The C++ backward is checked against the float64 one further down in this file.
    torch.library.opcheck(op, (x, weight, styles, noise, f, 2, 1, [1, 1, 1, 1], True, False,
                               True, ""), atol=1e-4, rtol=1e-5)
    torch.library.opcheck(op, (x, weight, styles, None, f, 1, 2, [1, 1, 1, 1], True, True,
                               False, ""),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


@pytest.mark.parametrize("kwargs,error,needle", [
    (dict(weight=torch.randn(5, 3, 3, 3)), ValueError, r"weight must have shape \(C_out, 4"),
    (dict(styles=torch.randn(3, 4)), ValueError, r"styles must have shape \(2, 4\)"),
    (dict(styles=torch.randn(2, 4).double()), TypeError, "styles has dtype float64"),
    (dict(noise=torch.randn(2, 5, 7, 7)), ValueError, "noise with shape"),
    (dict(up=0), ValueError, "up must be an int >= 1"),
    (dict(padding=-2), ValueError, "the output would be empty"),
    (dict(resample_filter=setup_filter(FIR).requires_grad_()), ValueError, "requires grad"),
])
def test_modulated_conv2d_bad_input(kwargs, error, needle):
    args = dict(x=torch.randn(2, 4, 3, 3), weight=torch.randn(5, 4, 3, 3),
                styles=torch.randn(2, 4), padding=1, resample_filter=setup_filter(FIR))
    args.update(kwargs)
    with pytest.raises(error, match=needle):
        modulated_conv2d(**args)


# ------------------------------------------------------------ compiled backends, all ops
#
# Every backend against float64 at small odd shapes, strided inputs included. float64
# itself runs on the reference only (the compiled kernels take float32 and bfloat16),
# so gradcheck above proves the reference's backward, and the C++ backward is proved
# here against autograd through the float64 reference with the parity rule.

from facegen_rt.ops import BackendUnavailable  # noqa: E402
from facegen_rt.ops._native import compiled  # noqa: E402

from .parity import BACKENDS, skip_unless_available  # noqa: E402


def _grads(fn, inputs, grad):
    """autograd.grad of fn(*inputs) for the inputs that require grad."""
    out = fn(*inputs)
    wanted = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return torch.autograd.grad(out, wanted, grad.to(out.dtype))


def _leaves(dtype, *tensors, grad=True):
    return [None if t is None else t.detach().to(dtype).requires_grad_(grad) for t in tensors]


def _assert_grad_parity(fn_backend, fn_reference, inputs, grad, dtype):
    """Gradients of fn_backend at dtype vs the float64 reference, with the parity rule
    (the reference's own gradients at dtype give PyTorch's error)."""
    got = _grads(fn_backend, _leaves(dtype, *inputs), grad)
    ref64 = _grads(fn_reference, _leaves(torch.float64, *inputs), grad)
    ref_lowp = _grads(fn_reference, _leaves(dtype, *inputs), grad)
    assert len(got) == len(ref64)
    for g, r64, rl in zip(got, ref64, ref_lowp):
        assert_parity(g.contiguous(), r64, rl, dtype)


@pytest.fixture
def count_cpp_backward(monkeypatch):
    """Counts the calls of one C++ backward function (proves which backward ran)."""
    calls = []

    def install(name):
        skip_unless_available("cpu")
        module = compiled()
        real = getattr(module, name)

        def spy(*args):
            calls.append(name)
            return real(*args)

        monkeypatch.setattr(module, name, spy)
        return calls

    return install


BIAS_ACT_CASES = [  # shape, dim, act, clamp, with_bias, noncontiguous
    ((2, 19, 7, 5), 1, "lrelu", None, True, False),
    ((3, 5, 9, 7), 1, "lrelu", 0.7, True, True),
    ((3, 41), 1, "lrelu", None, True, True),
    ((4, 6, 97), -1, "linear", 0.3, True, False),
    ((2, 7, 5, 3), 1, "linear", None, False, False),
]


def _bias_act_inputs(shape, dim, with_bias, noncontiguous):
    x = torch.randn(*shape) * 2
    if noncontiguous:  # every dim reversed in memory
        x = torch.randn(*reversed(shape)).permute(*reversed(range(len(shape)))) * 2
    b = torch.randn(shape[dim]) if with_bias else None
    return x, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", BIAS_ACT_CASES, ids=[str(i) for i in range(len(BIAS_ACT_CASES))])
def test_bias_act_backend_parity(backend, dtype, case):
    skip_unless_available(backend)
    shape, dim, act, clamp, with_bias, noncontiguous = case
    dtype = DTYPES[dtype]
    x, b = cast(dtype, *[t for t in _bias_act_inputs(shape, dim, with_bias, noncontiguous)
                         if t is not None]) + ([] if with_bias else [None])
    kw = dict(dim=dim, act=act, clamp=clamp)
    ref64 = bias_act_reference(x.double(), None if b is None else b.double(), **kw)
    ref_lowp = bias_act_reference(x, b, **kw)
    assert_parity(bias_act(x, b, backend=backend, **kw), ref64, ref_lowp, dtype)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", BIAS_ACT_CASES, ids=[str(i) for i in range(len(BIAS_ACT_CASES))])
def test_bias_act_cpp_backward_matches_reference(dtype, case, count_cpp_backward):
    calls = count_cpp_backward("bias_act_backward")
    shape, dim, act, clamp, with_bias, noncontiguous = case
    x, b = _bias_act_inputs(shape, dim, with_bias, noncontiguous)
    gain = math.sqrt(2) if act == "lrelu" else 1.0
    if clamp is not None:
        # Keep |y| off the clamp edge, where the gradient jumps: bfloat16 rounding of x, b
        # and x + b moves y by a few hundredths, so values within 0.25 of the edge are
        # moved to y = clamp / 2 (x + b = clamp / (2 gain), on the slope-1 side of 0).
        y = bias_act_reference(x, b, dim=dim, act=act)
        bias = 0.0 if b is None else b.view([-1 if i == dim % x.dim() else 1
                                            for i in range(x.dim())])
        x = torch.where((y.abs() - clamp).abs() < 0.25, clamp / (2 * gain) - bias, x)
    grad = torch.randn(shape)

    def run(backend):
        return lambda x, b=None: bias_act(x, b, dim=dim, act=act, clamp=clamp, backend=backend)

    _assert_grad_parity(run("cpu"), run("reference"), (x, b), grad, DTYPES[dtype])
    assert calls, "the C++ backward did not run"


UPFIRDN2D_CASES = [  # up, down, padding, flip_filter, filter, gain
    ((1, 1), (1, 1), (1, 2, 2, 1), False, "fir", 1.0),
    ((2, 2), (1, 1), (2, 1, 2, 1), False, "fir", 4.0),
    ((1, 1), (2, 2), (1, 1, 1, 1), True, "fir", 1.0),
    ((2, 1), (1, 3), (3, -1, 0, 2), False, "separable", 1.5),
    ((3, 2), (2, 1), (-1, 2, 1, 1), True, "4x3", 1.0),
]


def _filter(kind):
    if kind == "fir":
        return setup_filter(FIR)
    if kind == "separable":
        return setup_filter([1, 2, 3, 4, 4, 3, 2, 1])
    return torch.outer(torch.rand(4) + 0.1, torch.rand(3) + 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", UPFIRDN2D_CASES, ids=[str(i) for i in range(len(UPFIRDN2D_CASES))])
def test_upfirdn2d_backend_parity(backend, dtype, case):
    skip_unless_available(backend)
    up, down, pad, flip, kind, gain = case
    dtype = DTYPES[dtype]
    f = _filter(kind)
    x = cast(dtype, torch.randn(2, 3, 9, 7).transpose(2, 3))[0]  # [2, 3, 7, 9], strided
    kw = dict(up=list(up), down=list(down), padding=list(pad), flip_filter=flip, gain=gain)
    ref64 = upfirdn2d_reference(x.double(), f.double(), **kw)
    ref_lowp = upfirdn2d_reference(x, f, **kw)
    assert_parity(upfirdn2d(x, f, backend=backend, **kw), ref64, ref_lowp, dtype)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", UPFIRDN2D_CASES, ids=[str(i) for i in range(len(UPFIRDN2D_CASES))])
def test_upfirdn2d_cpp_backward_matches_reference(dtype, case):
    skip_unless_available("cpu")
    up, down, pad, flip, kind, gain = case
    f = _filter(kind)
    x = torch.randn(2, 3, 7, 9)
    kw = dict(up=list(up), down=list(down), padding=list(pad), flip_filter=flip, gain=gain)
    out_shape = upfirdn2d_reference(x, f, **kw).shape
    grad = torch.randn(out_shape)

    def run(backend):
        return lambda x: upfirdn2d(x, f.to(x.dtype), backend=backend, **kw)

    _assert_grad_parity(run("cpu"), run("reference"), (x,), grad, DTYPES[dtype])
    # The direct C++ entry point gives the same gradient as the op's backward.
    xl = x.clone().requires_grad_()
    (dx,) = torch.autograd.grad(upfirdn2d(xl, f, backend="cpu", **kw), xl, grad)
    direct = compiled().upfirdn2d_backward(grad, f, 7, 9, up[0], up[1], down[0], down[1], *pad,
                                           flip, gain)
    torch.testing.assert_close(direct, dx, rtol=0, atol=0)


MODCONV_BACKEND_CASES = MODCONV_CASES + [(5, 4, 3, 1, 1, [1, 0, 2, 1], True, True)]


def _modconv_inputs(case, noncontiguous=True):
    cin, cout, k, up, down, padding, demodulate, with_noise = case
    x = torch.randn(2, cin, 7, 8)[..., 1:]  # [2, cin, 7, 7], strided when sliced
    if not noncontiguous:
        x = x.contiguous()
    weight = torch.randn(cout, cin, k, k)
    styles = torch.randn(2, cin) + 1
    pad = [padding] * 4 if isinstance(padding, int) else padding
    oh, ow = output_size((7, 7), (k, k), (4, 4), up, down, pad)
    noise = torch.randn(2, 1, oh, ow) * 0.1 if with_noise else None
    kw = dict(up=up, down=down, padding=padding, resample_filter=setup_filter(FIR),
              demodulate=demodulate)
    return (x, weight, styles, noise), kw, (2, cout, oh, ow)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "nonfused"])
@pytest.mark.parametrize("case", MODCONV_BACKEND_CASES,
                         ids=[str(i) for i in range(len(MODCONV_BACKEND_CASES))])
def test_modulated_conv2d_backend_parity(backend, dtype, fused, case):
    skip_unless_available(backend)
    dtype = DTYPES[dtype]
    inputs, kw, _ = _modconv_inputs(case)
    low = [None if t is None else t.to(dtype) for t in inputs]
    for flip_weight in (True, False):
        kw.update(flip_weight=flip_weight, fused_modconv=fused)
        kw64 = dict(kw, resample_filter=kw["resample_filter"].double())
        ref64 = modulated_conv2d_reference(*[None if t is None else t.double() for t in low],
                                           **kw64)
        ref_lowp = modulated_conv2d_reference(*low, **kw)
        assert_parity(modulated_conv2d(*low, backend=backend, **kw), ref64, ref_lowp, dtype)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "nonfused"])
@pytest.mark.parametrize("case", MODCONV_BACKEND_CASES,
                         ids=[str(i) for i in range(len(MODCONV_BACKEND_CASES))])
def test_modulated_conv2d_cpp_backward_matches_reference(dtype, fused, case, count_cpp_backward):
    calls = count_cpp_backward("modulated_conv2d_backward")
    inputs, kw, out_shape = _modconv_inputs(case)
    grad = torch.randn(out_shape)
    kw.update(flip_weight=case[3] == 1, fused_modconv=fused)

    def run(backend):
        def fn(x, weight, styles, noise=None):
            f = kw["resample_filter"].to(x.dtype)
            return modulated_conv2d(x, weight, styles, noise, backend=backend,
                                    **dict(kw, resample_filter=f))
        return fn

    _assert_grad_parity(run("cpu"), run("reference"), inputs, grad, DTYPES[dtype])
    assert calls, "the C++ backward did not run"


def test_modulated_conv2d_cpp_backward_only_where_needed(count_cpp_backward):
    # DragGAN: frozen weights; the C++ backward returns no weight gradient.
    calls = count_cpp_backward("modulated_conv2d_backward")
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3)
    styles = torch.randn(2, 4, requires_grad=True)
    for fused in (True, False):
        x.grad = styles.grad = None
        modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused,
                         backend="cpu").square().sum().backward()
        assert x.grad is not None and styles.grad is not None and weight.grad is None
    assert len(calls) == 2


def test_forced_reference_keeps_the_reference_backward(count_cpp_backward):
    calls = count_cpp_backward("bias_act_backward")
    x = torch.randn(3, 4, requires_grad=True)
    bias_act(x, act="lrelu", backend="reference").sum().backward()
    assert not calls and x.grad is not None


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_compiled_backends_refuse_float64_by_name(backend):
    skip_unless_available(backend)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    f = setup_filter(FIR).double()
    with pytest.raises(BackendUnavailable, match="x has dtype float64"):
        bias_act(x, backend=backend)
    with pytest.raises(BackendUnavailable, match="x has dtype float64"):
        upfirdn2d(x, f, backend=backend)
    with pytest.raises(BackendUnavailable, match="x has dtype float64"):
        modulated_conv2d(x, torch.randn(2, 3, 3, 3, dtype=torch.float64),
                         torch.randn(2, 3, dtype=torch.float64), padding=1, backend=backend)


def _c_call(name):
    return lambda *args: getattr(compiled(), name)(*args)


@pytest.mark.parametrize("name,args,error,needle", [
    ("bias_act", (torch.randn(2, 5), torch.randn(4), 1, "lrelu", 0.2, 1.0, -1.0), ValueError,
     r"b must have shape \(5,\)"),
    ("bias_act", (torch.randn(2, 5), torch.randn(5).bfloat16(), 1, "lrelu", 0.2, 1.0, -1.0),
     TypeError, "b has dtype"),
    ("bias_act", (torch.randn(2, 5).double(), None, 1, "lrelu", 0.2, 1.0, -1.0), TypeError,
     "x must be float32 or bfloat16"),
    ("bias_act", (torch.randn(2, 5), None, 1, "relu", 0.2, 1.0, -1.0), ValueError,
     "act must be"),
    ("bias_act", (torch.randn(2, 5), None, 3, "linear", 0.0, 1.0, -1.0), ValueError,
     "dim=3 is out of range"),
    ("upfirdn2d", (torch.randn(3, 8, 8), torch.ones(2, 2), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0),
     ValueError, "x must have 4 dims"),
    ("upfirdn2d", (torch.randn(1, 1, 4, 4), torch.ones(2, 2, 2), 1, 1, 1, 1, 0, 0, 0, 0, False,
                   1.0), ValueError, "f must be a non-empty"),
    ("upfirdn2d", (torch.randn(1, 1, 4, 4), torch.ones(4, 4), 0, 1, 1, 1, 0, 0, 0, 0, False,
                   1.0), ValueError, "up must be >= 1"),
    ("upfirdn2d", (torch.randn(1, 1, 2, 2), torch.ones(4, 4), 1, 1, 1, 1, 0, 0, 0, 0, False,
                   1.0), ValueError, "padding: the padded"),
    ("modulated_conv2d", (torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(3, 4),
                          None, None, 1, 1, [1, 1, 1, 1], True, True, True), ValueError,
     r"styles must have shape \(2, 4\)"),
    ("modulated_conv2d", (torch.randn(2, 4, 5, 5), torch.randn(3, 5, 3, 3), torch.randn(2, 4),
                          None, None, 1, 1, [1, 1, 1, 1], True, True, True), ValueError,
     r"weight must have shape \(C_out, 4"),
    ("modulated_conv2d", (torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3).bfloat16(),
                          torch.randn(2, 4), None, None, 1, 1, [1, 1, 1, 1], True, True, True),
     TypeError, "weight has dtype"),
    ("modulated_conv2d", (torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(2, 4),
                          None, None, 0, 1, [1, 1, 1, 1], True, True, True), ValueError,
     "up must be an int >= 1"),
])
def test_cpp_functions_name_the_bad_argument(name, args, error, needle):
    skip_unless_available("cpu")
    with pytest.raises(error, match=needle):
        _c_call(name)(*args)


def test_info_lists_the_stylegan2_backends():
    from facegen_rt.info import backend_status

    status = backend_status()
    for op in ("bias_act", "upfirdn2d", "modulated_conv2d"):
        assert list(status[op]) == ["cpu", "triton", "reference"]
        assert status[op]["reference"] is None
