// SPADE normalization on CPU: out = act(GroupNorm(x, groups, eps) * (1 + gamma) + beta).
//
// In contiguous NCHW layout the values of group g of image b form one contiguous
// run of n = (C / groups) * H * W elements starting at (b * groups + g) * n, and
// gamma, beta and out use the same offsets. So the work is B * groups runs.
//
// Per run: statistics in one pass about a shift (sums of x - shift and its square;
// float32 sums over chunks, double across chunks), then one apply pass that reads
// x, gamma and beta once and writes out once. With enough runs to share among the
// threads, one thread does a run's statistics and its apply pass back to back, so
// the apply pass finds x in L2 (a run is a few hundred KB at most in SCA-DM). With
// fewer runs than that, the runs are cut into segments: segment statistics are
// merged per run, then all segments are applied in parallel, so every core stays
// busy.

#include "common.h"
#include "direct_call.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

// The kernels below are written as plain loops for the auto-vectorizer. GCC's default
// for AVX-512 machines is to vectorize with 256-bit registers; 512-bit ones halve the
// instruction count of these loops (the target option has no effect on CPUs without
// AVX-512).
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

namespace {

using facegen::bf16_bits;

constexpr const char* kOp = "spade_norm";

// Count, mean and centered sum of squares (m2) of a set of values.
struct Moments {
  double count = 0;
  double mean = 0;
  double m2 = 0;
};

// Values per chunk of the statistics pass: a chunk is summed in float32 vector
// lanes (16 lanes of 64 values: rounding error ~1e-6 relative at worst), and the
// chunk sums in double. Near double accuracy at float32 speed.
constexpr int64_t kChunk = 1024;

// Moments of n contiguous values (n >= 1) in one pass, about a shift: sums of
// d = x - shift and d^2, in float32 lanes per chunk and in double across chunks.
// var = E[d^2] - E[d]^2 loses about eps * E[d]^2 / var to cancellation, so the shift
// must lie within a few standard deviations of the mean: it is the mean of the
// first chunk, itself a part of the data (for the first kChunk of n values,
// (shift - mean)^2 <= var * n / kChunk). Split into two floats like the mean below,
// so that x - shift_hi is exact for x near the shift.
template <typename T>
Moments moments(const T* x, int64_t n) {
  const int64_t head = std::min(n, kChunk);
  float first = 0.0f;
#pragma omp simd reduction(+ : first)
  for (int64_t i = 0; i < head; ++i) first += facegen::load_f32(x[i]);
  const double shift = double(first) / double(head);
  const float hi = float(shift), lo = float(shift - double(hi));
  double s1 = 0, s2 = 0;
  // Four chunks at a time, side by side: four streams of loads in flight. With one,
  // this pass read x at half the rate the apply pass reaches with its three streams
  // (x, gamma, beta), and took 60 of the 165 us at 224x64^2 on Zen 2 (two threads);
  // four took the whole op to ~140 us. Each chunk keeps its own float32 sums.
  int64_t c = 0;
  for (; c + 4 * kChunk <= n; c += 4 * kChunk) {
    const T* x0 = x + c;
    const T* x1 = x0 + kChunk;
    const T* x2 = x1 + kChunk;
    const T* x3 = x2 + kChunk;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;  // sums of d
    float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f;  // sums of d^2
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
    for (int64_t i = 0; i < kChunk; ++i) {
      const float d0 = (facegen::load_f32(x0[i]) - hi) - lo;
      const float d1 = (facegen::load_f32(x1[i]) - hi) - lo;
      const float d2 = (facegen::load_f32(x2[i]) - hi) - lo;
      const float d3 = (facegen::load_f32(x3[i]) - hi) - lo;
      a0 += d0;
      a1 += d1;
      a2 += d2;
      a3 += d3;
      b0 += d0 * d0;
      b1 += d1 * d1;
      b2 += d2 * d2;
      b3 += d3 * d3;
    }
    s1 += (double(a0) + double(a1)) + (double(a2) + double(a3));
    s2 += (double(b0) + double(b1)) + (double(b2) + double(b3));
  }
  for (; c < n; c += kChunk) {
    const int64_t end = std::min(n, c + kChunk);
    float p1 = 0.0f, p2 = 0.0f;
#pragma omp simd reduction(+ : p1, p2)
    for (int64_t i = c; i < end; ++i) {
      const float dev = (facegen::load_f32(x[i]) - hi) - lo;
      p1 += dev;
      p2 += dev * dev;
    }
    s1 += p1;
    s2 += p2;
  }
  const double mean_dev = s1 / double(n);
  return {double(n), shift + mean_dev, std::max(0.0, s2 - s1 * mean_dev)};
}

// Merges the moments of two disjoint sets (Chan, Golub and LeVeque's pairwise update).
Moments merge(const Moments& a, const Moments& b) {
  if (a.count == 0) return b;
  const double count = a.count + b.count;
  const double delta = b.mean - a.mean;
  return {count, a.mean + delta * (b.count / count),
          a.m2 + b.m2 + delta * delta * (a.count * b.count / count)};
}

// Normalization constants of one run: out = act(((x - mean) * rstd) * (1 + gamma) + beta).
// The mean is kept as two floats, mean_hi + mean_lo: x - mean_hi is exact for x near
// the mean, so a large mean over a small spread loses nothing to rounding the mean.
struct Affine {
  float mean_hi;
  float mean_lo;
  float rstd;
};

Affine affine_of(const Moments& m, double eps) {
  const double var = m.m2 / m.count;  // biased, as GroupNorm
  const float hi = float(m.mean);
  return {hi, float(m.mean - double(hi)), float(1.0 / std::sqrt(var + eps))};
}

// The apply pass over n contiguous elements: one read of x, gamma, beta, one write of out.
template <typename T, bool kSilu>
void apply(const T* __restrict x, const T* __restrict gamma, const T* __restrict beta,
           T* __restrict out, int64_t n, Affine a) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float norm = ((facegen::load_f32(x[i]) - a.mean_hi) - a.mean_lo) * a.rstd;
    // norm * (1 + gamma) as one fused multiply-add: norm * gamma + norm.
    float v = norm * facegen::load_f32(gamma[i]) + norm + facegen::load_f32(beta[i]);
    if (kSilu) v = facegen::silu_f32(v);
    facegen::store_f32(out + i, v);
  }
}

template <typename T>
void apply_any(const T* x, const T* gamma, const T* beta, T* out, int64_t n, Affine a, bool silu) {
  if (silu) {
    apply<T, true>(x, gamma, beta, out, n, a);
  } else {
    apply<T, false>(x, gamma, beta, out, n, a);
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// runs: B * groups runs of n elements each.
template <typename T>
void spade_norm_kernel(const T* x, const T* gamma, const T* beta, T* out, int64_t runs, int64_t n,
                       double eps, bool silu) {
  const int64_t threads = omp_get_max_threads();
  // Segments per run: enough work items for about four per thread, but never
  // segments under 8K elements (the merge and the second sweep over x then cost
  // more than they gain). A run count that divides evenly among the threads, or
  // many runs, needs no segments.
  constexpr int64_t kMinSegment = 8192;
  int64_t segments = 1;
  if (runs % threads != 0 && runs < 8 * threads) {
    segments = std::max<int64_t>(1, std::min(ceil_div(4 * threads, runs), n / kMinSegment));
  }

  if (segments == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < runs; ++r) {
      const int64_t off = r * n;
      const Affine a = affine_of(moments(x + off, n), eps);
      apply_any(x + off, gamma + off, beta + off, out + off, n, a, silu);
    }
    return;
  }

  const int64_t seg_len = ceil_div(n, segments);
  const int64_t items = runs * segments;
  std::vector<Moments> parts(items);
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t begin = (it % segments) * seg_len;
    const int64_t len = std::min(n, begin + seg_len) - begin;
    if (len > 0) parts[it] = moments(x + (it / segments) * n + begin, len);
  }
  std::vector<Affine> affine(runs);
  for (int64_t r = 0; r < runs; ++r) {
    Moments m;
    for (int64_t s = 0; s < segments; ++s) m = merge(m, parts[r * segments + s]);
    affine[r] = affine_of(m, eps);
  }
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t begin = (it % segments) * seg_len;
    const int64_t len = std::min(n, begin + seg_len) - begin;
    const int64_t off = (it / segments) * n + begin;
    if (len > 0) {
      apply_any(x + off, gamma + off, beta + off, out + off, len, affine[it / segments], silu);
    }
  }
}

}  // namespace

#pragma GCC pop_options

namespace {

// Raises ValueError or TypeError naming the argument at fault.
void check_args(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                int64_t groups, double eps) {
  facegen::check_input(kOp, "x", x, 4);
  facegen::check_input(kOp, "gamma", gamma, 4);
  facegen::check_input(kOp, "beta", beta, 4);
  facegen::check_same_dtype(kOp, "gamma", gamma, "x", x);
  facegen::check_same_dtype(kOp, "beta", beta, "x", x);
  TORCH_CHECK_VALUE(gamma.sizes() == x.sizes(), kOp, ": gamma must have the shape of x ",
                    x.sizes(), ", got ", gamma.sizes());
  TORCH_CHECK_VALUE(beta.sizes() == x.sizes(), kOp, ": beta must have the shape of x ",
                    x.sizes(), ", got ", beta.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(groups > 0 && C % groups == 0, kOp, ": groups=", groups,
                    " must be a positive divisor of C=", C);
  TORCH_CHECK_VALUE(eps > 0, kOp, ": eps must be positive, got ", eps);
}

// spade_norm on inputs that check_args passed.
at::Tensor normalize(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                     int64_t groups, double eps, bool silu) {
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = gamma.contiguous();
  const at::Tensor bc = beta.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t runs = x.size(0) * groups;
  const int64_t n = x.numel() / std::max<int64_t>(runs, 1);
  if (x.numel() == 0) return out;

  if (x.scalar_type() == at::kFloat) {
    spade_norm_kernel(facegen::raw_ptr<const float>(xc), facegen::raw_ptr<const float>(gc),
                      facegen::raw_ptr<const float>(bc), facegen::raw_ptr<float>(out), runs, n,
                      eps, silu);
  } else {
    spade_norm_kernel(facegen::raw_ptr<const bf16_bits>(xc), facegen::raw_ptr<const bf16_bits>(gc),
                      facegen::raw_ptr<const bf16_bits>(bc), facegen::raw_ptr<bf16_bits>(out),
                      runs, n, eps, silu);
  }
  return out;
}

}  // namespace

// x, gamma, beta: [B, C, H, W], one dtype (float32 or bfloat16), any strides.
// Returns act(GroupNorm(x, groups, eps, no affine) * (1 + gamma) + beta) as a
// contiguous [B, C, H, W] tensor of x's dtype; act is SiLU when `silu`.
at::Tensor spade_norm(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                      int64_t groups, double eps, bool silu) {
  check_args(x, gamma, beta, groups, eps);
  return normalize(x, gamma, beta, groups, eps, silu);
}

// The public function's call in plain eager mode (direct_call.h): the kernel's result,
// or None for the Python route, which sends other dtypes to the reference and reports
// bad inputs.
std::optional<at::Tensor> spade_norm_eager(const at::Tensor& x, const at::Tensor& gamma,
                                           const at::Tensor& beta, int64_t groups, double eps,
                                           bool silu) {
  if (!facegen::direct_call_allowed({&x, &gamma, &beta}) ||
      !facegen::checks_pass([&] { check_args(x, gamma, beta, groups, eps); })) {
    return std::nullopt;
  }
  return normalize(x, gamma, beta, groups, eps, silu);
}

void register_spade_norm(pybind11::module_& m) {
  m.def("spade_norm", &spade_norm, pybind11::arg("x"), pybind11::arg("gamma"),
        pybind11::arg("beta"), pybind11::arg("groups"), pybind11::arg("eps"),
        pybind11::arg("silu"),
        R"doc(SPADE normalization: act(GroupNorm(x, groups, eps) * (1 + gamma) + beta).

x, gamma, beta: [B, C, H, W] tensors of one dtype (float32 or bfloat16), any strides;
groups must divide C. Statistics per (image, group) in double, the rest in float32.
act is SiLU when silu is True, else the identity.
Returns a contiguous [B, C, H, W] tensor of x's dtype.)doc");
  m.def("spade_norm_eager", &spade_norm_eager, pybind11::arg("x"), pybind11::arg("gamma"),
        pybind11::arg("beta"), pybind11::arg("groups"), pybind11::arg("eps"),
        pybind11::arg("silu"),
        "spade_norm for a plain eager call, or None when the call must go through the "
        "custom op (facegen_rt.ops.spade_norm decides).");
}
