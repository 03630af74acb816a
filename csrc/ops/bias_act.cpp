// StyleGAN2 bias + activation on CPU: y = clamp(gain * act(x + b), -clamp, clamp).
//
// x is viewed as [outer, C, inner] with C = x.size(dim), the dimension the bias runs
// along. Two loop shapes cover every layout without index arithmetic per element:
// inner > 1 (activations [N, C, H, W], dim 1): one run of `inner` values per
// (outer, c) with a single bias value; inner == 1 (features [N, C], dim -1): one run
// of C values per outer index with the bias vector alongside.
//
// The backward recomputes z = x + b (cheaper than saving it) and returns
// dx = grad * gain * slope(z), zero where the clamp is active (|y| > clamp, the same
// inclusive convention as torch.clamp), and db = sum of dx over every dim but `dim`,
// accumulated in double per channel.

#include "common.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

namespace {

using facegen::bf16_bits;

constexpr const char* kOp = "bias_act";
// Below this many elements the OpenMP fork/join costs more than the loop.
constexpr int64_t kParallelMin = 1 << 15;

struct Act {
  bool lrelu;
  float alpha, gain, clamp;  // clamp < 0: no clamp
};

// Forward on one run of n values sharing bias `bias` (or with bias vector `bvec`).
template <typename T>
inline void forward_run(const T* __restrict x, T* __restrict y, int64_t n, float bias,
                        const float* __restrict bvec, Act a) {
  const float lo = a.clamp >= 0 ? -a.clamp : -INFINITY;
  const float hi = a.clamp >= 0 ? a.clamp : INFINITY;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float z = facegen::load_f32(x[i]) + (bvec ? bvec[i] : bias);
    const float slope = (a.lrelu && !(z > 0.0f)) ? a.alpha : 1.0f;
    float v = z * slope * a.gain;
    v = v < lo ? lo : (v > hi ? hi : v);
    facegen::store_f32(y + i, v);
  }
}

// The backward's per-element factor with the activation's branches hoisted into
// constants, so every test left in the loop is a select the vectorizer handles
// (testing a.lrelu and a.clamp < 0 per element kept the loop scalar: 20x slower).
struct BackwardScale {
  float neg_slope;  // slope at z <= 0: alpha for lrelu, 1 for linear
  float gain;
  float bound;  // |y| above this cuts the gradient; +inf without a clamp

  explicit BackwardScale(Act a)
      : neg_slope(a.lrelu ? a.alpha : 1.0f), gain(a.gain),
        bound(a.clamp >= 0 ? a.clamp : INFINITY) {}

  // gain * slope(z), zero where the clamp is active (torch.clamp's inclusive convention).
  float operator()(float z) const {
    const float slope = z > 0.0f ? 1.0f : neg_slope;
    const float scale = slope * gain;
    return std::fabs(z * scale) <= bound ? scale : 0.0f;
  }
};

// Backward on one run of n values sharing bias `bias`: dx[i] = g[i] * scale(z); returns
// sum dx.
template <typename T>
inline float backward_run(const T* __restrict g, const T* __restrict x, T* __restrict dx,
                          int64_t n, float bias, BackwardScale scale) {
  float total = 0.0f;
#pragma omp simd reduction(+ : total)
  for (int64_t i = 0; i < n; ++i) {
    const float d = facegen::load_f32(g[i]) * scale(facegen::load_f32(x[i]) + bias);
    facegen::store_f32(dx + i, d);
    total += d;
  }
  return total;
}

// Backward on one run of n channels with bias vector `bvec` (may be null); adds dx to
// this thread's per-channel partial sums `db_row` when it is not null.
template <typename T>
inline void backward_run_channels(const T* __restrict g, const T* __restrict x,
                                  T* __restrict dx, int64_t n, const float* __restrict bvec,
                                  float* __restrict db_row, BackwardScale scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float z = facegen::load_f32(x[i]) + (bvec ? bvec[i] : 0.0f);
    facegen::store_f32(dx + i, facegen::load_f32(g[i]) * scale(z));
  }
  if (!db_row) return;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) db_row[i] += facegen::load_f32(dx[i]);
}

Act parse_act(const std::string& act, double alpha, double gain, double clamp) {
  TORCH_CHECK_VALUE(act == "linear" || act == "lrelu", kOp,
                    ": act must be 'linear' or 'lrelu', got '", act, "'");
  TORCH_CHECK_VALUE(std::isfinite(gain), kOp, ": gain must be finite, got ", gain);
  return {act == "lrelu", float(alpha), float(gain), float(clamp)};
}

struct Layout {
  int64_t outer, C, inner;
};

Layout layout_of(const at::Tensor& x, int64_t dim) {
  Layout l{1, x.size(dim), 1};
  for (int64_t i = 0; i < dim; ++i) l.outer *= x.size(i);
  for (int64_t i = dim + 1; i < x.dim(); ++i) l.inner *= x.size(i);
  return l;
}

int64_t check_args(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim) {
  TORCH_CHECK_VALUE(x.dim() >= 1, kOp, ": x must have at least 1 dim");
  TORCH_CHECK_TYPE(x.device().is_cpu(), kOp, ": x must be a CPU tensor, got ", x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, kOp,
                   ": x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK_VALUE(dim >= -x.dim() && dim < x.dim(), kOp, ": dim=", dim,
                    " is out of range for x with shape ", x.sizes());
  if (dim < 0) dim += x.dim();
  if (b.has_value()) {
    facegen::check_same_dtype(kOp, "b", *b, "x", x);
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == x.size(dim), kOp, ": b must have shape (",
                      x.size(dim), ",) (x.shape[", dim, "]), got ", b->sizes());
  }
  return dim;
}

// Bias as float32 (whatever x's dtype), or an empty vector for none.
std::vector<float> bias_f32(const c10::optional<at::Tensor>& b) {
  if (!b.has_value()) return {};
  const at::Tensor bf = b->to(at::kFloat).contiguous();
  return std::vector<float>(bf.data_ptr<float>(), bf.data_ptr<float>() + bf.numel());
}

template <typename T>
void forward_kernel(const T* x, T* y, const std::vector<float>& bias, Layout l, Act a) {
  const bool par = l.outer * l.C * l.inner >= kParallelMin;
  if (l.inner == 1) {
    const float* bvec = bias.empty() ? nullptr : bias.data();
#pragma omp parallel for schedule(static) if (par)
    for (int64_t o = 0; o < l.outer; ++o) forward_run(x + o * l.C, y + o * l.C, l.C, 0.0f, bvec, a);
    return;
  }
#pragma omp parallel for schedule(static) if (par)
  for (int64_t r = 0; r < l.outer * l.C; ++r) {
    const float bv = bias.empty() ? 0.0f : bias[r % l.C];
    forward_run(x + r * l.inner, y + r * l.inner, l.inner, bv, nullptr, a);
  }
}

template <typename T>
void backward_kernel(const T* g, const T* x, T* dx, const std::vector<float>& bias, Layout l,
                     Act a, bool need_db, std::vector<double>& db) {
  const BackwardScale scale(a);
  const bool par = l.outer * l.C * l.inner >= kParallelMin;
  if (l.inner == 1) {
    const float* bvec = bias.empty() ? nullptr : bias.data();
    const int threads = par ? omp_get_max_threads() : 1;
    // One row of per-channel partial sums per thread, merged in double afterwards.
    std::vector<float> part(need_db ? size_t(threads) * l.C : 0, 0.0f);
#pragma omp parallel for schedule(static) if (par)
    for (int64_t o = 0; o < l.outer; ++o) {
      float* row = need_db ? part.data() + size_t(omp_get_thread_num()) * l.C : nullptr;
      backward_run_channels(g + o * l.C, x + o * l.C, dx + o * l.C, l.C, bvec, row, scale);
    }
    if (need_db) {
      for (int t = 0; t < threads; ++t)
        for (int64_t c = 0; c < l.C; ++c) db[c] += part[size_t(t) * l.C + c];
    }
    return;
  }
  std::vector<double> row_sums(need_db ? l.outer * l.C : 0);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t r = 0; r < l.outer * l.C; ++r) {
    const float bv = bias.empty() ? 0.0f : bias[r % l.C];
    const float s =
        backward_run(g + r * l.inner, x + r * l.inner, dx + r * l.inner, l.inner, bv, scale);
    if (need_db) row_sums[r] = s;
  }
  if (need_db) {
    for (int64_t r = 0; r < l.outer * l.C; ++r) db[r % l.C] += row_sums[r];
  }
}

}  // namespace

#pragma GCC pop_options

// x: any shape, float32 or bfloat16, any strides; b: [x.size(dim)] of x's dtype or None.
// Returns clamp(gain * act(x + b), -clamp, clamp) contiguous, x's dtype; clamp < 0 = none.
at::Tensor bias_act(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                    const std::string& act, double alpha, double gain, double clamp) {
  dim = check_args(x, b, dim);
  const Act a = parse_act(act, alpha, gain, clamp);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  if (x.numel() == 0) return y;
  const std::vector<float> bias = bias_f32(b);
  const Layout l = layout_of(x, dim);
  if (x.scalar_type() == at::kFloat) {
    forward_kernel(facegen::raw_ptr<const float>(xc), facegen::raw_ptr<float>(y), bias, l, a);
  } else {
    forward_kernel(facegen::raw_ptr<const bf16_bits>(xc), facegen::raw_ptr<bf16_bits>(y), bias, l,
                   a);
  }
  return y;
}

// grad, x: same shape and dtype (float32 or bfloat16), any strides. Returns (dx, db):
// dx contiguous of x's shape, db [C] of x's dtype (None when b is None or !need_db).
std::tuple<at::Tensor, c10::optional<at::Tensor>> bias_act_backward(
    const at::Tensor& grad, const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
    const std::string& act, double alpha, double gain, double clamp, bool need_db) {
  dim = check_args(x, b, dim);
  facegen::check_same_dtype(kOp, "grad", grad, "x", x);
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), kOp, ": grad must have the shape of x ",
                    x.sizes(), ", got ", grad.sizes());
  const Act a = parse_act(act, alpha, gain, clamp);
  need_db = need_db && b.has_value();
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const Layout l = layout_of(x, dim);
  std::vector<double> db(need_db ? l.C : 0, 0.0);
  if (x.numel() > 0) {
    const std::vector<float> bias = bias_f32(b);
    if (x.scalar_type() == at::kFloat) {
      backward_kernel(facegen::raw_ptr<const float>(gc), facegen::raw_ptr<const float>(xc),
                      facegen::raw_ptr<float>(dx), bias, l, a, need_db, db);
    } else {
      backward_kernel(facegen::raw_ptr<const bf16_bits>(gc),
                      facegen::raw_ptr<const bf16_bits>(xc), facegen::raw_ptr<bf16_bits>(dx),
                      bias, l, a, need_db, db);
    }
  }
  if (!need_db) return {dx, c10::nullopt};
  at::Tensor db_t = at::empty({l.C}, x.options().dtype(at::kDouble));
  std::copy(db.begin(), db.end(), db_t.data_ptr<double>());
  return {dx, db_t.to(x.scalar_type())};
}

void register_bias_act(pybind11::module_& m) {
  m.def("bias_act", &bias_act, pybind11::arg("x"), pybind11::arg("b"), pybind11::arg("dim"),
        pybind11::arg("act"), pybind11::arg("alpha"), pybind11::arg("gain"),
        pybind11::arg("clamp"),
        R"doc(StyleGAN2 bias + activation: clamp(gain * act(x + b), -clamp, clamp).

x: any shape, float32 or bfloat16, any strides. b: [x.shape[dim]] of x's dtype, or None.
act: 'linear' or 'lrelu' (negative slope alpha). clamp < 0 means no clamp.
Returns a contiguous tensor of x's shape and dtype (float32 arithmetic).)doc");
  m.def("bias_act_backward", &bias_act_backward, pybind11::arg("grad"), pybind11::arg("x"),
        pybind11::arg("b"), pybind11::arg("dim"), pybind11::arg("act"), pybind11::arg("alpha"),
        pybind11::arg("gain"), pybind11::arg("clamp"), pybind11::arg("need_db"),
        R"doc(Gradients of bias_act: (dx, db).

grad, x: x's shape and dtype. dx = grad * gain * slope(x + b), zero where the clamp is
active; db = dx summed over every dim but `dim` (double accumulation), or None when b
is None or need_db is False.)doc");
}
