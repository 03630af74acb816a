// upfirdn2d on CPU: zero-insert upsample, pad/crop, FIR filter, downsample, per channel.
//
// The eager formulation materializes the zero-stuffed, padded image and runs a
// depthwise convolution over it, so with up = 2 three quarters of its multiplies hit
// inserted zeros. Here every output pixel visits only the taps that land on real input
// pixels (polyphase): for output column ox the first such tap kx0(ox) and its input
// column ix0(ox) are tabulated once, and the following taps step by `up` in the
// filter and by 1 in the input. A 4x4 filter with up = 2 costs 2x2 multiply-adds per
// output instead of 4x4.
//
// Each input plane is first copied into a float32 buffer with zero margins wide
// enough that every tabulated tap reads inside it: no bounds tests in the inner
// loop, strided and bfloat16 inputs handled by the same copy. Taps of a phase with
// fewer real taps than the maximum read a zero filter entry (the filter buffer is
// padded to a whole number of phases).

#include "upfirdn2d.h"

#include "common.h"

#include <omp.h>

#include <algorithm>
#include <numeric>
#include <vector>

#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

namespace {

using facegen::bf16_bits;
using facegen::Ufd;

constexpr const char* kOp = "upfirdn2d";

int64_t floor_div(int64_t a, int64_t b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }

int64_t pos_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// Tap tables along one axis: out index o reads input (ix0[o] + t) with filter tap
// (k0[o] + t * up), t < taps. Input indices are shifted by `lo` so they index the
// zero-margined buffer of length n + lo + hi.
struct Axis {
  std::vector<int32_t> i0, k0;
  int64_t taps = 1, lo = 0, hi = 0, out = 0;
};

Axis make_axis(int64_t n, int64_t fs, int64_t up, int64_t down, int64_t p0, int64_t p1) {
  Axis a;
  a.out = (n * up + p0 + p1 - fs + down) / down;
  a.taps = (fs + up - 1) / up;
  a.i0.resize(std::max<int64_t>(a.out, 0));
  a.k0.resize(std::max<int64_t>(a.out, 0));
  int64_t mn = 0, mx = 0;
  for (int64_t o = 0; o < a.out; ++o) {
    // Position o * down + k in the padded image is upsampled position o*down + k - p0;
    // a real pixel sits there when that is a multiple of up.
    const int64_t k0 = pos_mod(p0 - o * down, up);
    const int64_t i0 = floor_div(o * down + k0 - p0, up);
    a.k0[o] = int32_t(k0);
    a.i0[o] = int32_t(i0);
    if (o == 0 || i0 < mn) mn = i0;
    if (o == 0 || i0 + a.taps - 1 > mx) mx = i0 + a.taps - 1;
  }
  a.lo = std::max<int64_t>(0, -mn);
  a.hi = std::max<int64_t>(0, mx - (n - 1));
  for (auto& i : a.i0) i += int32_t(a.lo);
  return a;
}

// The correlation filter in float32, [taps_y * up_y, taps_x * up_x] with zeros past
// [fh, fw]: flipped unless flip_filter (the op convolves), times gain; a separable
// [taps] filter becomes its outer product (gain^(1/2) per axis, as the reference).
std::vector<float> filter_table(const at::Tensor& f, const Ufd& p, int64_t fh, int64_t fw,
                                int64_t rows, int64_t cols) {
  at::Tensor f2 = f.to(at::kDouble).contiguous();
  if (f2.dim() == 1) f2 = at::outer(f2, f2);
  const double* src = f2.data_ptr<double>();
  std::vector<float> k(size_t(rows * cols), 0.0f);
  for (int64_t y = 0; y < fh; ++y) {
    for (int64_t x = 0; x < fw; ++x) {
      const int64_t sy = p.flip ? y : fh - 1 - y;
      const int64_t sx = p.flip ? x : fw - 1 - x;
      k[y * cols + x] = float(src[sy * fw + sx] * p.gain);
    }
  }
  return k;
}

template <typename T>
void upfirdn2d_kernel(const at::Tensor& xc, at::Tensor& out, const std::vector<float>& k,
                      int64_t kcols, const Axis& ax, const Axis& ay, const Ufd& p) {
  const int64_t planes = xc.size(0) * xc.size(1);
  const int64_t H = xc.size(2), W = xc.size(3);
  const int64_t Hb = H + ay.lo + ay.hi, Wb = W + ax.lo + ax.hi;
  const int64_t ow = ax.out, oh = ay.out;
  const T* x = facegen::raw_ptr<const T>(xc);
  T* y = facegen::raw_ptr<T>(out);
  // Output columns fall into P = upx / gcd(upx, downx) phases: column ox = ph + j * P
  // always starts at filter tap k0[ph], and its first input column advances by
  // downx / gcd per step of j. Per phase the inner loop is then a plain strided
  // multiply-add with one filter value, which vectorizes; the phases are
  // interleaved into the output row when it is stored.
  const int64_t g = std::gcd(p.upx, p.downx);
  const int64_t P = p.upx / g, step = p.downx / g;
  const int64_t phases = std::min(P, ow);
  const int64_t span = (ow + P - 1) / P;  // outputs per phase, at most
  const int64_t tx = ax.taps, ty = ay.taps, upx = p.upx, upy = p.upy;
  const float* kk = k.data();
  const bool par = planes > 1 && planes * oh * ow * tx * ty >= (1 << 14);
#pragma omp parallel if (par)
  {
    std::vector<float> buf(static_cast<size_t>(Hb * Wb), 0.0f);
    std::vector<float> acc_rows(static_cast<size_t>(phases * span));
    float* acc = acc_rows.data();
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      // Interior of the buffer; the margins stay zero from the allocation.
      const T* src = x + pl * H * W;
      for (int64_t r = 0; r < H; ++r) {
        float* dst = buf.data() + (r + ay.lo) * Wb + ax.lo;
#pragma omp simd
        for (int64_t c = 0; c < W; ++c) dst[c] = facegen::load_f32(src[r * W + c]);
      }
      T* dst_plane = y + pl * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        std::fill(acc, acc + phases * span, 0.0f);
        for (int64_t s = 0; s < ty; ++s) {
          const float* xrow = buf.data() + (ay.i0[oy] + s) * Wb;
          const float* krow = kk + (ay.k0[oy] + s * upy) * kcols;
          for (int64_t ph = 0; ph < phases; ++ph) {
            const int64_t nj = (ow - ph + P - 1) / P;
            float* a = acc + ph * span;
            for (int64_t t = 0; t < tx; ++t) {
              const float w = krow[ax.k0[ph] + t * upx];
              const float* xs = xrow + ax.i0[ph] + t;
              if (step == 1) {
#pragma omp simd
                for (int64_t j = 0; j < nj; ++j) a[j] += xs[j] * w;
              } else {
#pragma omp simd
                for (int64_t j = 0; j < nj; ++j) a[j] += xs[j * step] * w;
              }
            }
          }
        }
        T* dst = dst_plane + oy * ow;
        if (P == 1) {
#pragma omp simd
          for (int64_t o = 0; o < ow; ++o) facegen::store_f32(dst + o, acc[o]);
        } else {
          for (int64_t ph = 0; ph < phases; ++ph) {
            const int64_t nj = (ow - ph + P - 1) / P;
            const float* a = acc + ph * span;
            for (int64_t j = 0; j < nj; ++j) facegen::store_f32(dst + ph + j * P, a[j]);
          }
        }
      }
    }
  }
}

}  // namespace

#pragma GCC pop_options

namespace facegen {

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f_in, const Ufd& p) {
  check_input(kOp, "x", x, 4);
  const at::Tensor f = f_in.defined() ? f_in : at::ones({1, 1}, x.options().dtype(at::kFloat));
  TORCH_CHECK_VALUE((f.dim() == 1 || f.dim() == 2) && f.numel() > 0, kOp,
                    ": f must be a non-empty [fh, fw] or [taps] filter, got ", f.sizes());
  TORCH_CHECK_TYPE(f.is_floating_point() && f.device().is_cpu(), kOp,
                   ": f must be a floating-point CPU tensor, got ", f.scalar_type(), " on ",
                   f.device());
  TORCH_CHECK_VALUE(p.upx >= 1 && p.upy >= 1, kOp, ": up must be >= 1, got [", p.upx, ", ",
                    p.upy, "]");
  TORCH_CHECK_VALUE(p.downx >= 1 && p.downy >= 1, kOp, ": down must be >= 1, got [", p.downx,
                    ", ", p.downy, "]");
  const int64_t fw = f.size(-1), fh = f.size(0);
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK_VALUE(W * p.upx + p.px0 + p.px1 >= fw && H * p.upy + p.py0 + p.py1 >= fh, kOp,
                    ": padding: the padded, upsampled image (", H * p.upy + p.py0 + p.py1, "x",
                    W * p.upx + p.px0 + p.px1, ") is smaller than the ", fh, "x", fw, " filter");
  const Axis ax = make_axis(W, fw, p.upx, p.downx, p.px0, p.px1);
  const Axis ay = make_axis(H, fh, p.upy, p.downy, p.py0, p.py1);
  at::Tensor out = at::empty({x.size(0), x.size(1), ay.out, ax.out},
                             x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const int64_t krows = ay.taps * p.upy, kcols = ax.taps * p.upx;
  const std::vector<float> k = filter_table(f, p, fh, fw, krows, kcols);
  const at::Tensor xc = x.contiguous();
  if (x.scalar_type() == at::kFloat) {
    upfirdn2d_kernel<float>(xc, out, k, kcols, ax, ay, p);
  } else {
    upfirdn2d_kernel<bf16_bits>(xc, out, k, kcols, ax, ay, p);
  }
  return out;
}

Ufd upfirdn2d_grad_args(const Ufd& p, const at::Tensor& f, int64_t in_h, int64_t in_w,
                        int64_t out_h, int64_t out_w) {
  const int64_t fw = f.defined() ? f.size(-1) : 1, fh = f.defined() ? f.size(0) : 1;
  Ufd g;
  g.upx = p.downx;
  g.upy = p.downy;
  g.downx = p.upx;
  g.downy = p.upy;
  g.px0 = fw - p.px0 - 1;
  g.px1 = in_w * p.upx - out_w * p.downx + p.px0 - p.upx + 1;
  g.py0 = fh - p.py0 - 1;
  g.py1 = in_h * p.upy - out_h * p.downy + p.py0 - p.upy + 1;
  g.flip = !p.flip;
  g.gain = p.gain;
  return g;
}

}  // namespace facegen

namespace {

facegen::Ufd make_ufd(int64_t upx, int64_t upy, int64_t downx, int64_t downy, int64_t px0,
                      int64_t px1, int64_t py0, int64_t py1, bool flip, double gain) {
  facegen::Ufd p;
  p.upx = upx, p.upy = upy, p.downx = downx, p.downy = downy;
  p.px0 = px0, p.px1 = px1, p.py0 = py0, p.py1 = py1;
  p.flip = flip, p.gain = gain;
  return p;
}

at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                     int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0,
                     int64_t py1, bool flip, double gain) {
  return facegen::upfirdn2d_cpu(
      x, f, make_ufd(upx, upy, downx, downy, px0, px1, py0, py1, flip, gain));
}

// dx for y = upfirdn2d(x, f, ...) with x of spatial size [in_h, in_w].
at::Tensor upfirdn2d_backward(const at::Tensor& grad, const at::Tensor& f, int64_t in_h,
                              int64_t in_w, int64_t upx, int64_t upy, int64_t downx,
                              int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1,
                              bool flip, double gain) {
  facegen::check_input(kOp, "grad", grad, 4);
  const facegen::Ufd p = make_ufd(upx, upy, downx, downy, px0, px1, py0, py1, flip, gain);
  const facegen::Ufd g =
      facegen::upfirdn2d_grad_args(p, f, in_h, in_w, grad.size(2), grad.size(3));
  at::Tensor dx = facegen::upfirdn2d_cpu(grad, f, g);
  TORCH_CHECK_VALUE(dx.size(2) == in_h && dx.size(3) == in_w, kOp, ": grad of shape ",
                    grad.sizes(), " does not match an input of size ", in_h, "x", in_w);
  return dx;
}

}  // namespace

void register_upfirdn2d(pybind11::module_& m) {
  m.def("upfirdn2d", &upfirdn2d, pybind11::arg("x"), pybind11::arg("f"), pybind11::arg("upx"),
        pybind11::arg("upy"), pybind11::arg("downx"), pybind11::arg("downy"),
        pybind11::arg("px0"), pybind11::arg("px1"), pybind11::arg("py0"), pybind11::arg("py1"),
        pybind11::arg("flip_filter"), pybind11::arg("gain"),
        R"doc(Upsample (zero insertion), pad/crop, FIR-filter and downsample each channel.

x: [N, C, H, W] float32 or bfloat16, any strides. f: [fh, fw] or separable [taps]
filter (any float dtype). Padding (x0, x1, y0, y1) is in the upsampled image.
Returns [N, C, (H*upy + py0 + py1 - fh + downy) // downy,
(W*upx + px0 + px1 - fw + downx) // downx], contiguous, x's dtype (float32 accumulation).)doc");
  m.def("upfirdn2d_backward", &upfirdn2d_backward, pybind11::arg("grad"), pybind11::arg("f"),
        pybind11::arg("in_h"), pybind11::arg("in_w"), pybind11::arg("upx"), pybind11::arg("upy"),
        pybind11::arg("downx"), pybind11::arg("downy"), pybind11::arg("px0"),
        pybind11::arg("px1"), pybind11::arg("py0"), pybind11::arg("py1"),
        pybind11::arg("flip_filter"), pybind11::arg("gain"),
        R"doc(Gradient of upfirdn2d with respect to x: [N, C, in_h, in_w].

grad: [N, C, out_h, out_w]; the other arguments are the forward's. It is itself an
upfirdn2d with up and down swapped, the filter flipped and the padding mirrored.)doc");
}
