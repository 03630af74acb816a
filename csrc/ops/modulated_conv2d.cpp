// StyleGAN2 modulated convolution on CPU, forward and backward.
//
// The convolution itself is ATen's (at::convolution and at::convolution_backward,
// oneDNN on x86): a hand-written convolution would not beat it. What is fused here
// is everything around it:
//
// * weight preparation (fused path): one pass over [N, O, I, kh, kw] computes the
//   modulated weights, their demodulation coefficients and writes the result
//   straight into the layout the grouped convolution wants (transposed for the
//   upsampling path, spatially flipped where the convention asks), where the eager
//   formulation makes five passes and two layout copies;
// * the FIR up/downsampling steps run on this library's upfirdn2d kernel (polyphase:
//   no multiplies by inserted zeros);
// * the backward of the weight preparation (demodulation and modulation gradients)
//   is a closed formula evaluated in one pass, instead of autograd through the
//   eager graph.
//
// The resampling plan follows NVlabs conv2d_resample exactly (same fast paths and
// padding rules), so results match the reference up to rounding.

#include "common.h"
#include "upfirdn2d.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using facegen::Ufd;

constexpr const char* kOp = "modulated_conv2d";

// One FIR step of the plan; use_f false means the 1x1 identity filter (pure pad/crop).
struct Stage {
  Ufd p;
  bool use_f = true;
};

// conv2d_resample as: FIR steps before the convolution, the convolution, FIR steps after.
struct Plan {
  std::vector<Stage> pre, post;
  int64_t stride = 1, pad_y = 0, pad_x = 0;
  bool transposed = false;   // conv_transpose2d, weight laid out [G * I, O, kh, kw]
  bool flip_kernel = false;  // the kernel is flipped spatially before the call
};

Stage fir(int64_t up, int64_t down, int64_t px0, int64_t px1, int64_t py0, int64_t py1,
          double gain, bool use_f) {
  Stage s;
  s.p.upx = s.p.upy = up;
  s.p.downx = s.p.downy = down;
  s.p.px0 = px0, s.p.px1 = px1, s.p.py0 = py0, s.p.py1 = py1;
  s.p.gain = gain;
  s.use_f = use_f;
  return s;
}

// NVlabs conv2d_resample's choice of path (flip_filter is always False in
// modulated_conv2d). fw, fh: the resampling filter's size (1x1 for none).
Plan make_plan(int64_t kh, int64_t kw, int64_t fw, int64_t fh, int64_t up, int64_t down,
               const std::vector<int64_t>& padding, bool flip_weight) {
  int64_t px0 = padding[0], px1 = padding[1], py0 = padding[2], py1 = padding[3];
  if (up > 1) {
    px0 += (fw + up - 1) / 2, px1 += (fw - up) / 2;
    py0 += (fh + up - 1) / 2, py1 += (fh - up) / 2;
  }
  if (down > 1) {
    px0 += (fw - down + 1) / 2, px1 += (fw - down) / 2;
    py0 += (fh - down + 1) / 2, py1 += (fh - down) / 2;
  }
  Plan plan;
  plan.flip_kernel = !flip_weight;
  const double up_gain = double(up * up);
  if (kw == 1 && kh == 1 && down > 1 && up == 1) {  // downsample, then 1x1 conv
    plan.pre.push_back(fir(1, down, px0, px1, py0, py1, 1.0, true));
  } else if (kw == 1 && kh == 1 && up > 1 && down == 1) {  // 1x1 conv, then upsample
    plan.post.push_back(fir(up, 1, px0, px1, py0, py1, up_gain, true));
  } else if (down > 1 && up == 1) {  // filter, then strided conv
    plan.pre.push_back(fir(1, 1, px0, px1, py0, py1, 1.0, true));
    plan.stride = down;
  } else if (up > 1) {  // transposed strided conv, then filter (then downsample)
    plan.transposed = true;
    plan.flip_kernel = flip_weight;
    px0 -= kw - 1, px1 -= kw - up, py0 -= kh - 1, py1 -= kh - up;
    const int64_t pxt = std::max<int64_t>(std::min(-px0, -px1), 0);
    const int64_t pyt = std::max<int64_t>(std::min(-py0, -py1), 0);
    plan.stride = up;
    plan.pad_y = pyt, plan.pad_x = pxt;
    plan.post.push_back(fir(1, 1, px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt, up_gain, true));
    if (down > 1) plan.post.push_back(fir(1, down, 0, 0, 0, 0, 1.0, true));
  } else if (px0 == px1 && py0 == py1 && px0 >= 0 && py0 >= 0) {  // plain padded conv
    plan.pad_y = py0, plan.pad_x = px0;
  } else {  // generic: pad/crop, conv (up and down are 1 here)
    plan.pre.push_back(fir(1, 1, px0, px1, py0, py1, 1.0, false));
  }
  return plan;
}

at::Tensor run_stage(const at::Tensor& t, const Stage& s, const at::Tensor& f) {
  return facegen::upfirdn2d_cpu(t, s.use_f ? f : at::Tensor(), s.p);
}

// x: conv input before the pre stages; w: conv weight in the plan's layout.
at::Tensor conv_resample(const at::Tensor& x, const at::Tensor& w, const Plan& plan,
                         int64_t groups, const at::Tensor& f) {
  at::Tensor t = x;
  for (const Stage& s : plan.pre) t = run_stage(t, s, f);
  t = at::convolution(t, w, c10::nullopt, {plan.stride, plan.stride}, {plan.pad_y, plan.pad_x},
                      {1, 1}, plan.transposed, {0, 0}, groups);
  for (const Stage& s : plan.post) t = run_stage(t, s, f);
  return t;
}

// Gradients of conv_resample for grad g of its output: (d input, d weight), each
// undefined unless asked for.
std::pair<at::Tensor, at::Tensor> conv_resample_backward(const at::Tensor& g_out,
                                                         const at::Tensor& x, const at::Tensor& w,
                                                         const Plan& plan, int64_t groups,
                                                         const at::Tensor& f, bool need_in,
                                                         bool need_w) {
  // Forward again up to the convolution: the pre stages are cheap FIR passes, and the
  // post stages' input sizes are needed to mirror their padding.
  std::vector<at::Tensor> pre_in;
  at::Tensor t = x;
  for (const Stage& s : plan.pre) {
    pre_in.push_back(t);
    t = run_stage(t, s, f);
  }
  const at::Tensor conv_in = t;
  const int64_t kh = w.size(2), kw = w.size(3);
  auto conv_size = [&](int64_t n, int64_t k, int64_t pad) {
    return plan.transposed ? (n - 1) * plan.stride - 2 * pad + k
                           : (n + 2 * pad - k) / plan.stride + 1;
  };
  std::vector<std::pair<int64_t, int64_t>> post_in;
  int64_t h = conv_size(conv_in.size(2), kh, plan.pad_y);
  int64_t wd = conv_size(conv_in.size(3), kw, plan.pad_x);
  for (const Stage& s : plan.post) {
    post_in.emplace_back(h, wd);
    const int64_t fh = (s.use_f && f.defined()) ? f.size(0) : 1;
    const int64_t fw = (s.use_f && f.defined()) ? f.size(-1) : 1;
    h = (h * s.p.upy + s.p.py0 + s.p.py1 - fh + s.p.downy) / s.p.downy;
    wd = (wd * s.p.upx + s.p.px0 + s.p.px1 - fw + s.p.downx) / s.p.downx;
  }
  at::Tensor g = g_out;
  for (int64_t k = int64_t(plan.post.size()) - 1; k >= 0; --k) {
    const Stage& s = plan.post[k];
    const at::Tensor fs = s.use_f ? f : at::Tensor();
    g = facegen::upfirdn2d_cpu(g, fs, facegen::upfirdn2d_grad_args(s.p, fs, post_in[k].first,
                                                                   post_in[k].second, g.size(2),
                                                                   g.size(3)));
  }
  auto grads = at::convolution_backward(
      g.contiguous(), conv_in, w, c10::nullopt, {plan.stride, plan.stride},
      {plan.pad_y, plan.pad_x}, {1, 1}, plan.transposed, {0, 0}, groups, {need_in, need_w, false});
  at::Tensor g_in = std::get<0>(grads);
  if (need_in) {
    for (int64_t k = int64_t(plan.pre.size()) - 1; k >= 0; --k) {
      const Stage& s = plan.pre[k];
      const at::Tensor fs = s.use_f ? f : at::Tensor();
      g_in = facegen::upfirdn2d_cpu(
          g_in, fs,
          facegen::upfirdn2d_grad_args(s.p, fs, pre_in[k].size(2), pre_in[k].size(3),
                                       g_in.size(2), g_in.size(3)));
    }
  }
  return {g_in, std::get<1>(grads)};
}

// Index of weight element (n, o, i, tap) of a per-sample weight set in the conv's
// layout: [N * O, I, kh, kw], or [N * I, O, kh, kw] when transposed; taps reversed
// when flipped (a spatial flip of a row-major kernel is a reversal of its taps).
struct WeightLayout {
  int64_t O, I, K;
  bool transposed, flip;
  inline int64_t operator()(int64_t n, int64_t o, int64_t i, int64_t k) const {
    const int64_t kk = flip ? K - 1 - k : k;
    return transposed ? ((n * I + i) * O + o) * K + kk : ((n * O + o) * I + i) * K + kk;
  }
};

// Modulated (and demodulated) weights in the conv's layout, plus d [N, O] (ones when
// !demodulate). weight [O, I, K] and styles [N, I] as float32; float32 result.
std::pair<at::Tensor, at::Tensor> prepare_weights(const at::Tensor& wf, const at::Tensor& sf,
                                                  bool demodulate, const WeightLayout& lay) {
  const int64_t N = sf.size(0), O = lay.O, I = lay.I, K = lay.K;
  at::Tensor out = at::empty({N * O * I * K}, wf.options());
  at::Tensor d = at::empty({N, O}, wf.options());
  const float* w = wf.data_ptr<float>();
  const float* s = sf.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  float* dd = d.data_ptr<float>();
#pragma omp parallel for schedule(static) if (N * O * I * K >= (1 << 15))
  for (int64_t no = 0; no < N * O; ++no) {
    const int64_t n = no / O, o = no % O;
    float coef = 1.0f;
    if (demodulate) {
      double ss = 0.0;
      for (int64_t i = 0; i < I; ++i) {
        const float si = s[n * I + i];
        const float* wr = w + (o * I + i) * K;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t k = 0; k < K; ++k) part += (wr[k] * si) * (wr[k] * si);
        ss += part;
      }
      coef = float(1.0 / std::sqrt(ss + 1e-8));
    }
    dd[no] = coef;
    for (int64_t i = 0; i < I; ++i) {
      const float si = s[n * I + i];
      const float* wr = w + (o * I + i) * K;
      for (int64_t k = 0; k < K; ++k) dst[lay(n, o, i, k)] = (wr[k] * si) * coef;
    }
  }
  return {out, d};
}

// Gradients of prepare_weights: G is dL/d(conv weight) in the layout (float32).
// With m = weight * s and v = m * d, d = rsqrt(sum m^2 + 1e-8):
//   dL/dm = d * G - d^3 * (sum_{i,k} G * m) * m       (the second term only if demodulating)
//   dweight[o,i,k] = sum_n dL/dm * s[n,i];   dstyles[n,i] = sum_{o,k} dL/dm * weight[o,i,k].
std::pair<at::Tensor, at::Tensor> prepare_weights_backward(const at::Tensor& G,
                                                           const at::Tensor& wf,
                                                           const at::Tensor& sf,
                                                           const at::Tensor& d, bool demodulate,
                                                           const WeightLayout& lay) {
  const int64_t N = sf.size(0), O = lay.O, I = lay.I, K = lay.K;
  const float* g = G.data_ptr<float>();
  const float* w = wf.data_ptr<float>();
  const float* s = sf.data_ptr<float>();
  const float* dd = d.data_ptr<float>();
  at::Tensor gm_t = at::empty({N, O, I, K}, wf.options());  // dL/dm, plain layout
  float* gm = gm_t.data_ptr<float>();
  const bool par = N * O * I * K >= (1 << 15);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t no = 0; no < N * O; ++no) {
    const int64_t n = no / O, o = no % O;
    const float coef = dd[no];
    float* row = gm + no * I * K;
    double dot = 0.0;
    for (int64_t i = 0; i < I; ++i) {
      const float si = s[n * I + i];
      float part = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float gv = g[lay(n, o, i, k)];
        row[i * K + k] = gv;
        part += gv * (w[(o * I + i) * K + k] * si);
      }
      dot += part;
    }
    const float c3 = demodulate ? float(double(coef) * coef * coef * dot) : 0.0f;
    for (int64_t i = 0; i < I; ++i) {
      const float si = s[n * I + i];
      const float* wr = w + (o * I + i) * K;
      float* r = row + i * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) r[k] = coef * r[k] - c3 * (wr[k] * si);
    }
  }
  at::Tensor dweight = at::zeros({O, I, K}, wf.options());
  at::Tensor dstyles = at::empty({N, I}, wf.options());
  float* dw = dweight.data_ptr<float>();
  float* ds = dstyles.data_ptr<float>();
#pragma omp parallel for schedule(static) if (par)
  for (int64_t o = 0; o < O; ++o) {
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t i = 0; i < I; ++i) {
        const float si = s[n * I + i];
        const float* r = gm + ((n * O + o) * I + i) * K;
        float* dst = dw + (o * I + i) * K;
#pragma omp simd
        for (int64_t k = 0; k < K; ++k) dst[k] += r[k] * si;
      }
    }
  }
#pragma omp parallel for schedule(static) if (par)
  for (int64_t ni = 0; ni < N * I; ++ni) {
    const int64_t n = ni / I, i = ni % I;
    double acc = 0.0;
    for (int64_t o = 0; o < O; ++o) {
      const float* r = gm + ((n * O + o) * I + i) * K;
      const float* wr = w + (o * I + i) * K;
      float part = 0.0f;
      for (int64_t k = 0; k < K; ++k) part += r[k] * wr[k];
      acc += part;
    }
    ds[ni] = float(acc);
  }
  return {dweight, dstyles};
}

// q[o, i] = sum_k weight[o, i, k]^2 from wf [O, I, K] contiguous float32, as float32 [O, I].
// One pass: ATen's square().sum(2) over a 9-wide last dim took ~50 us for a 128 x 128
// 3x3 weight, and a drag step needs it twice per layer.
at::Tensor tap_energy(const at::Tensor& wf) {
  const int64_t OI = wf.size(0) * wf.size(1), K = wf.size(2);
  at::Tensor q = at::empty({wf.size(0), wf.size(1)}, wf.options());
  const float* w = wf.data_ptr<float>();
  float* pq = q.data_ptr<float>();
#pragma omp parallel for schedule(static) if (OI * K >= (1 << 16))
  for (int64_t r = 0; r < OI; ++r) {
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) acc += w[r * K + k] * w[r * K + k];
    pq[r] = acc;
  }
  return q;
}

// Demodulation coefficients (non-fused path) from q = tap_energy(weight):
// d[n, o] = rsqrt(sum_i s[n,i]^2 * q[o, i] + 1e-8), float32 [N, O].
at::Tensor demod_coefs(const at::Tensor& q, const at::Tensor& sf) {
  return (sf.square().matmul(q.t()) + 1e-8).rsqrt();
}

struct Args {
  int64_t N, I, H, W, O, kh, kw;
  Plan plan;
  WeightLayout fused_layout, shared_layout;
};

Args check_and_plan(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& styles,
                    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& f,
                    int64_t up, int64_t down, const std::vector<int64_t>& padding,
                    bool flip_weight) {
  facegen::check_input(kOp, "x", x, 4);
  facegen::check_input(kOp, "weight", weight, 4);
  facegen::check_input(kOp, "styles", styles, 2);
  facegen::check_same_dtype(kOp, "weight", weight, "x", x);
  facegen::check_same_dtype(kOp, "styles", styles, "x", x);
  if (noise.has_value()) facegen::check_same_dtype(kOp, "noise", *noise, "x", x);
  Args a;
  a.N = x.size(0), a.I = x.size(1), a.H = x.size(2), a.W = x.size(3);
  a.O = weight.size(0), a.kh = weight.size(2), a.kw = weight.size(3);
  TORCH_CHECK_VALUE(weight.size(1) == a.I, kOp, ": weight must have shape (C_out, ", a.I,
                    ", kh, kw) (C_in of x), got ", weight.sizes());
  TORCH_CHECK_VALUE(styles.size(0) == a.N && styles.size(1) == a.I, kOp,
                    ": styles must have shape (", a.N, ", ", a.I, ") (N, C_in of x), got ",
                    styles.sizes());
  TORCH_CHECK_VALUE(up >= 1, kOp, ": up must be an int >= 1, got ", up);
  TORCH_CHECK_VALUE(down >= 1, kOp, ": down must be an int >= 1, got ", down);
  TORCH_CHECK_VALUE(padding.size() == 4, kOp, ": padding must be (x0, x1, y0, y1), got ",
                    padding.size(), " entries");
  int64_t fw = 1, fh = 1;
  if (f.has_value()) {
    TORCH_CHECK_VALUE(f->dim() == 1 || f->dim() == 2, kOp,
                      ": resample_filter must be [fh, fw] or [taps], got ", f->sizes());
    fw = f->size(-1), fh = f->size(0);
  }
  a.plan = make_plan(a.kh, a.kw, fw, fh, up, down, padding, flip_weight);
  const int64_t K = a.kh * a.kw;
  a.fused_layout = {a.O, a.I, K, a.plan.transposed, a.plan.flip_kernel};
  a.shared_layout = a.fused_layout;
  return a;
}

// The shared weight [O, I, kh, kw] in the conv's layout (non-fused path), x's dtype.
at::Tensor shared_conv_weight(const at::Tensor& weight, const Plan& plan, at::ScalarType dt) {
  at::Tensor w = weight;
  if (plan.flip_kernel) w = w.flip({2, 3});
  if (plan.transposed) w = w.transpose(0, 1);
  return w.to(dt).contiguous();
}

at::Tensor filter_or_undefined(const c10::optional<at::Tensor>& f) {
  return f.has_value() ? *f : at::Tensor();
}

}  // namespace

// x [N, I, H, W], weight [O, I, kh, kw], styles [N, I] (one dtype: float32 or bfloat16);
// noise broadcastable to the output, or None; resample_filter [fh, fw]/[taps] or None.
// Returns [N, O, H', W'] contiguous, x's dtype (the reference's output size).
at::Tensor modulated_conv2d(const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& styles, const c10::optional<at::Tensor>& noise,
                            const c10::optional<at::Tensor>& resample_filter, int64_t up,
                            int64_t down, const std::vector<int64_t>& padding, bool demodulate,
                            bool flip_weight, bool fused_modconv) {
  const Args a = check_and_plan(x, weight, styles, noise, resample_filter, up, down, padding,
                                flip_weight);
  const at::Tensor f = filter_or_undefined(resample_filter);
  const at::ScalarType dt = x.scalar_type();
  const at::Tensor wf = weight.to(at::kFloat).reshape({a.O, a.I, a.kh * a.kw}).contiguous();
  const at::Tensor sf = styles.to(at::kFloat).contiguous();
  at::Tensor y;
  if (fused_modconv) {
    auto prep = prepare_weights(wf, sf, demodulate, a.fused_layout);
    const at::Tensor wconv =
        a.plan.transposed ? prep.first.view({a.N * a.I, a.O, a.kh, a.kw})
                          : prep.first.view({a.N * a.O, a.I, a.kh, a.kw});
    y = conv_resample(x.reshape({1, a.N * a.I, a.H, a.W}), wconv.to(dt), a.plan, a.N, f);
    y = y.view({a.N, a.O, y.size(2), y.size(3)});
  } else {
    const at::Tensor xs = x * styles.reshape({a.N, a.I, 1, 1});
    y = conv_resample(xs, shared_conv_weight(weight, a.plan, dt), a.plan, 1, f);
    if (demodulate) y.mul_(demod_coefs(tap_energy(wf), sf).view({a.N, a.O, 1, 1}));
  }
  if (noise.has_value()) y.add_(*noise);
  return y.contiguous();
}

// Gradients of modulated_conv2d for grad [N, O, H', W'] of its output `out` (the
// forward's result, used to recover the pre-demodulation output of the non-fused path
// without a second convolution). needs: which of (x, weight, styles, noise) want a
// gradient. Returns (dx, dweight, dstyles, dnoise), None where not needed.
std::vector<c10::optional<at::Tensor>> modulated_conv2d_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& styles, const c10::optional<at::Tensor>& noise, const at::Tensor& out,
    const c10::optional<at::Tensor>& resample_filter, int64_t up, int64_t down,
    const std::vector<int64_t>& padding, bool demodulate, bool flip_weight, bool fused_modconv,
    std::vector<bool> needs) {
  if (x.scalar_type() != at::kFloat) {
    // bfloat16 inputs: the whole backward in float32 (the convolution gradients and the
    // reductions over space and channels), rounded once at the end. In bfloat16 the
    // styles gradient, a sum over every output element, loses about 10 % to rounding.
    auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat); };
    auto opt_f32 = [&](const c10::optional<at::Tensor>& t) -> c10::optional<at::Tensor> {
      if (!t.has_value()) return t;
      return f32(*t);
    };
    facegen::check_same_dtype(kOp, "grad", grad, "x", x);
    auto res = modulated_conv2d_backward(f32(grad), f32(x), f32(weight), f32(styles),
                                         opt_f32(noise), f32(out), opt_f32(resample_filter), up,
                                         down, padding, demodulate, flip_weight, fused_modconv,
                                         needs);
    for (auto& t : res) {
      if (t.has_value()) t = t->to(x.scalar_type());
    }
    return res;
  }
  const Args a = check_and_plan(x, weight, styles, noise, resample_filter, up, down, padding,
                                flip_weight);
  facegen::check_same_dtype(kOp, "grad", grad, "x", x);
  TORCH_CHECK_VALUE(needs.size() == 4, kOp,
                    ": needs must have 4 entries (x, weight, styles, noise)");
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == a.N && grad.size(1) == a.O, kOp,
                    ": grad must have shape (", a.N, ", ", a.O, ", H', W'), got ", grad.sizes());
  const bool need_x = needs[0], need_w = needs[1], need_s = needs[2];
  const bool need_n = needs[3] && noise.has_value();
  const at::Tensor f = filter_or_undefined(resample_filter);
  const at::ScalarType dt = x.scalar_type();
  const at::Tensor g = grad.contiguous();
  const at::Tensor wf = weight.to(at::kFloat).reshape({a.O, a.I, a.kh * a.kw}).contiguous();
  const at::Tensor sf = styles.to(at::kFloat).contiguous();
  std::vector<c10::optional<at::Tensor>> res(4);
  if (need_n) res[3] = at::sum_to(g, noise->sizes()).to(dt);

  if (fused_modconv) {
    auto prep = prepare_weights(wf, sf, demodulate, a.fused_layout);
    const at::Tensor wconv = (a.plan.transposed
                                  ? prep.first.view({a.N * a.I, a.O, a.kh, a.kw})
                                  : prep.first.view({a.N * a.O, a.I, a.kh, a.kw}))
                                 .to(dt);
    const bool need_wconv = need_w || need_s;
    auto grads = conv_resample_backward(g.view({1, a.N * a.O, g.size(2), g.size(3)}),
                                        x.reshape({1, a.N * a.I, a.H, a.W}), wconv, a.plan, a.N,
                                        f, need_x, need_wconv);
    if (need_x) res[0] = grads.first.view({a.N, a.I, a.H, a.W}).contiguous();
    if (need_wconv) {
      const at::Tensor G = grads.second.to(at::kFloat).contiguous();
      auto ws = prepare_weights_backward(G, wf, sf, prep.second, demodulate, a.fused_layout);
      if (need_w) res[1] = ws.first.view(weight.sizes()).to(dt);
      if (need_s) res[2] = ws.second.to(dt);
    }
    return res;
  }

  // Non-fused: out = conv_resample(x * s, weight) * d + noise.
  at::Tensor gy = g;
  at::Tensor d;
  at::Tensor dstyles, dweight;
  if (demodulate) {
    const at::Tensor q = tap_energy(wf);  // [O, I]
    d = demod_coefs(q, sf);                 // [N, O]
    gy = (g * d.view({a.N, a.O, 1, 1})).to(dt);
    if (need_w || need_s) {
      // dL/dd = sum_hw grad * y with y * d = out - noise; through d = rsqrt(ss + eps):
      // dL/dm = c * m with c = -(dL/dd) * d^3 = -S * d^2, S = sum_hw grad * (out - noise).
      at::Tensor yd = out.to(at::kFloat);
      if (noise.has_value()) yd = yd - noise->to(at::kFloat);
      const at::Tensor S = (g.to(at::kFloat) * yd).sum({2, 3});  // [N, O]
      const at::Tensor c = -S * d.square();                      // [N, O]
      // dweight += weight * sum_n c[n,o] s[n,i]^2; dstyles += s * sum_o c[n,o] sum_k w^2.
      if (need_w) dweight = wf * c.t().matmul(sf.square()).unsqueeze(2);
      if (need_s) dstyles = sf * c.matmul(q);
    }
  }
  const bool need_xs = need_x || need_s;
  if (need_xs || need_w) {
    const at::Tensor xs = x * styles.reshape({a.N, a.I, 1, 1});
    const at::Tensor wconv = shared_conv_weight(weight, a.plan, dt);
    auto grads = conv_resample_backward(gy.contiguous(), xs, wconv, a.plan, 1, f, need_xs, need_w);
    if (need_w) {
      at::Tensor gw = grads.second.to(at::kFloat);
      if (a.plan.transposed) gw = gw.transpose(0, 1);
      if (a.plan.flip_kernel) gw = gw.flip({2, 3});
      gw = gw.reshape({a.O, a.I, a.kh * a.kw});
      dweight = dweight.defined() ? dweight + gw : gw;
    }
    if (need_xs) {
      const at::Tensor gxs = grads.first;
      if (need_x) res[0] = (gxs * styles.reshape({a.N, a.I, 1, 1})).contiguous();
      if (need_s) {
        const at::Tensor direct = (gxs.to(at::kFloat) * x.to(at::kFloat)).sum({2, 3});
        dstyles = dstyles.defined() ? dstyles + direct : direct;
      }
    }
  }
  if (need_w) res[1] = dweight.view(weight.sizes()).to(dt);
  if (need_s) res[2] = dstyles.to(dt);
  return res;
}

void register_modulated_conv2d(pybind11::module_& m) {
  m.def("modulated_conv2d", &modulated_conv2d, pybind11::arg("x"), pybind11::arg("weight"),
        pybind11::arg("styles"), pybind11::arg("noise"), pybind11::arg("resample_filter"),
        pybind11::arg("up"), pybind11::arg("down"), pybind11::arg("padding"),
        pybind11::arg("demodulate"), pybind11::arg("flip_weight"),
        pybind11::arg("fused_modconv"),
        R"doc(StyleGAN2 modulated convolution (NVlabs semantics) with FIR up/downsampling.

x: [N, I, H, W]; weight: [O, I, kh, kw]; styles: [N, I]; one dtype, float32 or bfloat16.
noise: broadcastable to the output, or None. resample_filter: [fh, fw] or [taps], or None.
padding: (x0, x1, y0, y1) in the upsampled image. Weight preparation in float32, the
convolution by ATen (oneDNN), resampling by upfirdn2d. Returns [N, O, H', W'] contiguous.)doc");
  m.def("modulated_conv2d_backward", &modulated_conv2d_backward, pybind11::arg("grad"),
        pybind11::arg("x"), pybind11::arg("weight"), pybind11::arg("styles"),
        pybind11::arg("noise"), pybind11::arg("out"), pybind11::arg("resample_filter"),
        pybind11::arg("up"), pybind11::arg("down"), pybind11::arg("padding"),
        pybind11::arg("demodulate"), pybind11::arg("flip_weight"),
        pybind11::arg("fused_modconv"), pybind11::arg("needs"),
        R"doc(Gradients of modulated_conv2d: [dx, dweight, dstyles, dnoise].

grad: [N, O, H', W'], out: the forward's output; the other arguments are the forward's.
needs: four flags (x, weight, styles, noise); entries not needed come back as None.)doc");
}
