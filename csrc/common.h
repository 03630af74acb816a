// Shared helpers for the CPU kernels: input checks whose messages name the tensor.
#pragma once
#include <torch/extension.h>

#define FACEGEN_CHECK_ARG(cond, op, msg) \
  TORCH_CHECK_VALUE(cond, op, ": ", msg)

namespace facegen {

// Checks one input's rank and dtype; kernels accept float32 and bfloat16.
inline void check_input(const char* op, const char* name, const at::Tensor& t, int64_t ndim) {
  TORCH_CHECK_VALUE(t.dim() == ndim, op, ": ", name, " must have ", ndim, " dims, got ", t.sizes());
  TORCH_CHECK_TYPE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16,
                   op, ": ", name, " must be float32 or bfloat16, got ", t.scalar_type());
}

// Checks that `t` has the dtype of `ref` (named `ref_name`).
inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                             const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ",
                   t.scalar_type(), " but ", ref_name, " has ", ref.scalar_type());
}

}  // namespace facegen

// ---------------------------------------------------------------------------
// Element helpers for the kernels' inner loops. They are plain scalar code with
// no branches, so loops marked `#pragma omp simd` vectorize them (AVX-512 with
// -march=native). bfloat16 data is handled as its raw 16 bits (uint16_t): the
// conversions are integer shifts, done in registers.
// ---------------------------------------------------------------------------
#include <cstdint>
#include <cstring>

namespace facegen {

// Raw storage type of a tensor element: float for float32, uint16_t for bfloat16.
using bf16_bits = uint16_t;

inline float load_f32(float v) { return v; }

inline float load_f32(bf16_bits b) {
  const uint32_t u = uint32_t(b) << 16;  // bfloat16 is the top half of a float32
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float32 -> bfloat16 with round-to-nearest-even; NaN stays NaN (quiet, sign kept).
inline bf16_bits f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return bf16_bits((u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

inline void store_f32(float* p, float v) { *p = v; }
inline void store_f32(bf16_bits* p, float v) { *p = f32_to_bf16(v); }

// exp in float32, in two steps shared by exp_f32 and silu_f32: x = n * ln2 + r with
// n integral and |r| <= ln2 / 2 (ln2 split in a high part exact in float and the
// remainder), then exp(r) from its degree-7 Taylor polynomial (truncation error
// < 1e-8 relative). Valid for |x| < 2^22.
inline float exp_split(float x, float& r) {
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  r = n * -0.693145751953125f + x;
  r = n * -1.42860682030941723e-6f + r;
  return n;
}

// V: float, or a GCC vector of floats (V{} + c broadcasts the constant).
template <typename V>
inline V exp_poly(V r) {
  V p = V{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  return p * r + 1.0f;
}

// 2^n for n in [-126, 127].
inline float pow2i(int32_t n) {
  const uint32_t bits = uint32_t(n + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// exp(x) within ~1 ulp. Overflows to +inf; NaN gives NaN. 2^n is applied as two
// factors so that n = 128 (x up to ln(FLT_MAX)) needs no special case. Results below
// e^-87 (about 1.6e-38, near FLT_MIN) are flushed to 0: computing subnormals costs a
// microcode assist per lane, and a softmax full of -FLT_MAX logits would hit it on
// every element. Softmax weights never need them.
inline float exp_f32(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 89.0f ? 89.0f : x);
  float r;
  const float n = exp_split(xc, r);
  const int32_t ni = int32_t(n);
  const int32_t half = ni >> 1;
  // Computed unconditionally and then selected: a conditional conversion to int
  // would keep the compiler from vectorizing (it may trap).
  const float y = (exp_poly(r) * pow2i(half)) * pow2i(ni - half);
  return x != x ? x : (x < -87.0f ? 0.0f : y);
}

// 1 / x for 1 <= x <= 2^125 within ~1 ulp, without a division (a vector division
// costs as much as the rest of a SiLU): an initial guess from the exponent bits
// (relative error < 0.13), then three Newton steps, each squaring the error.
inline float recip_f32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u = 0x7EF311C3u - u;
  float y;
  std::memcpy(&y, &u, sizeof y);
  for (int step = 0; step < 3; ++step) y = y + y * (1.0f - x * y);
  return y;
}

// SiLU(v) = v * sigmoid(v) = v / (1 + exp(-v)), within ~3 ulp. exp's argument is
// clamped to [-87, 86]: beyond 86 (v < -86, where |SiLU(v)| < 1e-35) the result is
// v * 4.5e-38 instead of a subnormal; below -87 (v > 87) 1 + exp(-v) is 1 anyway.
// That keeps exp's result normal and 1 + exp(-v) within recip_f32's range, with no
// special cases. NaN in gives NaN out (NaN times anything).
inline float silu_f32(float v) {
  const float t = -v < -87.0f ? -87.0f : (-v > 86.0f ? 86.0f : -v);
  float r;
  const float n = exp_split(t, r);
  return v * recip_f32(1.0f + exp_poly(r) * pow2i(int32_t(n)));
}

// Pointer to a contiguous tensor's elements as their raw storage type.
template <typename T>
inline T* raw_ptr(const at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

}  // namespace facegen
