// Parts2Whole shared self-attention with target-only queries, on CPU.
//
// For each (b, h) and target query i (q, k_self, v_self [B, h, L, d]; k_ref, v_ref
// [B, h, M, d]; ref_keep [B, M] shared by the heads):
//   out[i] = sum_j softmax_j(scale * q_i . k_j) v_j
// over the keys j = the L self tokens, the kept reference tokens and, unless `exclude`,
// the n_masked masked reference tokens, which the seed stores as zero keys and values:
// each adds exp(0 - max) to the denominator and nothing to the numerator.
//
// Design (flash attention over compacted keys):
// * Per b, the kept reference tokens are listed once (the mask is shared by heads).
// * Packing tasks, one per (head, key tile): the L self rows and the kept reference
//   rows are gathered into one key/value sequence per head, in the layout the GEMM
//   reads (keys transposed, or VNNI-packed for AMX). Masked rows are never read, so
//   the work scales with L + kept, not L + M.
// * Attention tasks, one per (head, block of queries): an online softmax over the key
//   tiles; S = Q K^T and O += P V are GEMMs, the softmax in between is vectorized
//   (exp2 with the scale folded in, one pass over the scores for most tiles). The zero
//   keys join analytically: the running max starts at logit 0 and the running sum at
//   n_masked, exactly as if those keys were present.
// * Both kinds run in one OpenMP region, packing one head ahead of the attention,
//   with no barrier (see drive()).
//
// GEMM backends (the Python-visible shared_self_attention_gemm_backend(dtype) names the
// one a dtype uses; the environment variable FACEGEN_SSA_GEMM = auto | mkl | portable
// caps the choice, for tests and comparisons):
// * "onednn-brgemm-amx" (bfloat16): at::native::cpublas::brgemm, oneDNN's AMX
//   micro-kernels, on keys/values packed here in the VNNI layout they read.
// * "mkl-sgemm" (float32) and "mkl-bf16" (bfloat16, float32 accumulation): MKL's
//   Fortran sgemm_ / gemm_bf16bf16f32_, which libtorch_cpu exports when PyTorch is
//   built with MKL. They are declared weak, so the module loads without them.
// * "portable": plain vectorized loops in float32 (bfloat16 inputs are converted).
// The GEMMs run inside the OpenMP region, one task per thread, where MKL is
// sequential (it does not nest parallelism; checked: no extra threads appear).

#include "common.h"
#include "direct_call.h"
#include "vec16.h"

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

// MKL's Fortran BLAS (column major, 32-bit integers: PyTorch links MKL's LP64 interface).
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void gemm_bf16bf16f32_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const uint16_t* a, const int* lda,
                       const uint16_t* b, const int* ldb, const float* beta, float* c,
                       const int* ldc) __attribute__((weak));
}

namespace {

using facegen::bf16_bits;

constexpr const char* kOp = "shared_self_attention";
constexpr float kLog2e = 1.4426950408889634f;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---------------------------------------------------------------------------
// Backend choice.
// ---------------------------------------------------------------------------

enum class Gemm { kPortable, kMklF32, kMklBf16, kBrgemmBf16 };

const char* gemm_name(Gemm g) {
  switch (g) {
    case Gemm::kPortable: return "portable";
    case Gemm::kMklF32: return "mkl-sgemm";
    case Gemm::kMklBf16: return "mkl-bf16";
    case Gemm::kBrgemmBf16: return "onednn-brgemm-amx";
  }
  return "?";
}

// The fastest backend available for `bf16` inputs, capped by FACEGEN_SSA_GEMM.
Gemm choose_gemm(bool bf16) {
  const char* env = std::getenv("FACEGEN_SSA_GEMM");
  const std::string cap = env ? env : "auto";
  TORCH_CHECK_VALUE(cap == "auto" || cap == "mkl" || cap == "portable", kOp,
                    ": FACEGEN_SSA_GEMM must be auto, mkl or portable, got '", cap, "'");
  if (cap == "portable") return Gemm::kPortable;
  if (bf16) {
    // could_pack is true where oneDNN's bf16 micro-kernels have AMX (and mkldnn is on).
    if (cap == "auto" && at::native::cpublas::could_pack(at::kBFloat16)) return Gemm::kBrgemmBf16;
    if (gemm_bf16bf16f32_ != nullptr) return Gemm::kMklBf16;
  }
  return sgemm_ != nullptr ? Gemm::kMklF32 : Gemm::kPortable;
}

// Queries per block (one task) and keys per tile, per backend, measured with two
// threads (AVX-512 + MKL, AMX): scores and probabilities of a block stay in L2
// (256 + 256 KiB for MKL, 128 + 64 KiB for AMX), and 128-row blocks read each key tile
// half as often as 64-row ones, which matters once both cores share the caches.
struct Blocking {
  int64_t qblock, tile;
};
Blocking blocking(Gemm g) {
  return g == Gemm::kBrgemmBf16 ? Blocking{128, 256} : Blocking{128, 512};
}

// ---------------------------------------------------------------------------
// Softmax pieces: for one row of raw scores s (q . k), with c = scale * log2(e),
// the max of c * s, then p = 2^(c * s - m) and its sum. P is float or bfloat16.
// ---------------------------------------------------------------------------

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// 2^x = 2^n * 2^f with n = round(x), f = x - n in [-1/2, 1/2] (vreduceps gives f in one
// instruction), 2^f by a fitted polynomial of degree kDeg, 2^n applied by vscalefps.
// Relative error: 2.3e-7 at degree 5 (float32 probabilities), 7.7e-5 at degree 3
// (probabilities rounded to bfloat16, whose spacing is 3.9e-3). Inputs below -126 give
// 2^-126 (n >= -126 and f >= 0 when n = -126: never a denormal), negligible against
// the row sum, which is >= 1; NaN stays NaN.
template <int kDeg>
inline __m512 exp2_avx512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-126.0f), x);  // max returns its 2nd operand on NaN
  const __m512 f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 n = _mm512_sub_ps(x, f);  // exact
  __m512 p;
  if constexpr (kDeg == 5) {
    p = _mm512_set1_ps(1.3266970636323094e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675459936261177e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550742521882057e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022121727466583f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931469440460205f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001192092896f));
  } else {
    static_assert(kDeg == 3, "degree 3 or 5");
    p = _mm512_set1_ps(5.508868396282196e-2f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24260404706001282f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6932762265205383f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999289512634277f));
  }
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 tail_mask(int64_t n) { return __mmask16((1u << n) - 1u); }

inline float row_max(const float* s, int64_t n, float c) {
  const __m512 vc = _mm512_set1_ps(c);
  __m512 m0 = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    m0 = _mm512_max_ps(m0, _mm512_mul_ps(_mm512_loadu_ps(s + j), vc));
    m1 = _mm512_max_ps(m1, _mm512_mul_ps(_mm512_loadu_ps(s + j + 16), vc));
  }
  for (; j + 16 <= n; j += 16) m0 = _mm512_max_ps(m0, _mm512_mul_ps(_mm512_loadu_ps(s + j), vc));
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    m1 = _mm512_mask_max_ps(m1, k, m1, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + j), vc));
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

// Stores of 32 / 16 / masked probabilities, as float or bfloat16 (round to nearest even).
inline void store_p2(float* p, __m512 e0, __m512 e1) {
  _mm512_storeu_ps(p, e0);
  _mm512_storeu_ps(p + 16, e1);
}
inline void store_p(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store_p(float* p, __m512 v, __mmask16 k) { _mm512_mask_storeu_ps(p, k, v); }

#if defined(__AVX512BF16__)
inline void store_p2(bf16_bits* p, __m512 e0, __m512 e1) {
  _mm512_storeu_si512(p, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));  // e0 in the low half
}
inline __m256i to_bf16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
#else
inline __m256i to_bf16(__m512 v) {  // p is finite and >= 0 here: no NaN case
  const __m512i u = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}
inline void store_p2(bf16_bits* p, __m512 e0, __m512 e1) {
  _mm256_storeu_si256((__m256i*)p, to_bf16(e0));
  _mm256_storeu_si256((__m256i*)(p + 16), to_bf16(e1));
}
#endif
inline void store_p(bf16_bits* p, __m512 v) { _mm256_storeu_si256((__m256i*)p, to_bf16(v)); }
inline void store_p(bf16_bits* p, __m512 v, __mmask16 k) {
  _mm256_mask_storeu_epi16(p, k, to_bf16(v));
}

// p[j] = 2^(c * s[j] - m) for j < n; returns their sum. With kTrack, *xmax receives
// max_j (c * s[j] - m), which tells the caller whether m was still a safe reference.
template <bool kTrack, typename P>
inline float exp_row(const float* s, int64_t n, float c, float m, P* p, float* xmax) {
  constexpr int kDeg = std::is_same_v<P, float> ? 5 : 3;
  const __m512 vc = _mm512_set1_ps(c), vm = _mm512_set1_ps(-m);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  __m512 x0 = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), x1 = x0;
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m512 y0 = _mm512_fmadd_ps(_mm512_loadu_ps(s + j), vc, vm);
    const __m512 y1 = _mm512_fmadd_ps(_mm512_loadu_ps(s + j + 16), vc, vm);
    if constexpr (kTrack) {
      x0 = _mm512_max_ps(x0, y0);
      x1 = _mm512_max_ps(x1, y1);
    }
    const __m512 e0 = exp2_avx512<kDeg>(y0);
    const __m512 e1 = exp2_avx512<kDeg>(y1);
    a0 = _mm512_add_ps(a0, e0);
    a1 = _mm512_add_ps(a1, e1);
    store_p2(p + j, e0, e1);
  }
  for (; j + 16 <= n; j += 16) {
    const __m512 y = _mm512_fmadd_ps(_mm512_loadu_ps(s + j), vc, vm);
    if constexpr (kTrack) x0 = _mm512_max_ps(x0, y);
    const __m512 e = exp2_avx512<kDeg>(y);
    a0 = _mm512_add_ps(a0, e);
    store_p(p + j, e);
  }
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    const __m512 y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, s + j), vc, vm);
    if constexpr (kTrack) x1 = _mm512_mask_max_ps(x1, k, x1, y);
    const __m512 e = exp2_avx512<kDeg>(y);
    a1 = _mm512_mask_add_ps(a1, k, a1, e);
    store_p(p + j, e, k);
  }
  if constexpr (kTrack) *xmax = _mm512_reduce_max_ps(_mm512_max_ps(x0, x1));
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
#else   // portable versions (this build targets a CPU without AVX-512)
// The same pieces in GCC vector extensions, eight lanes (two SSE registers where AVX
// is missing). Written out by hand: GCC left the `omp simd` loop with two reductions
// scalar in some of its inlined copies, and a scalar score loop took 45 % of the op
// on an AVX2 CPU.
using facegen::f32x8;
using facegen::i32x8;
using facegen::load8;

// 2^x as exp2_avx512<5> computes it: n = round(x), 2^(x - n) by the same fitted
// polynomial of degree 5 (x - n is exact and in [-1/2, 1/2]: 2.3e-7 relative), 2^n
// from the exponent bits. Inputs below -126 give 2^-126, inputs above 127 give 2^127
// (callers redo rows past kSlack); NaN stays NaN (the clamps map it to a bound, and
// the last line restores it).
inline f32x8 exp2_x8(f32x8 x) {
  const f32x8 zero = {};
  f32x8 xc = x > -126.0f ? x : zero - 126.0f;
  xc = xc < 127.0f ? xc : zero + 127.0f;
  const f32x8 n = (xc + 12582912.0f) - 12582912.0f;  // + 1.5 * 2^23 rounds to an integer
  const f32x8 f = xc - n;
  f32x8 p = zero + 1.3266970636323094e-3f;
  p = p * f + 9.675459936261177e-3f;
  p = p * f + 5.550742521882057e-2f;
  p = p * f + 0.24022121727466583f;
  p = p * f + 0.6931469440460205f;
  p = p * f + 1.0000001192092896f;
  const i32x8 bits = (__builtin_convertvector(n, i32x8) + 127) << 23;
  const f32x8 y = p * (f32x8)bits;  // a vector cast reinterprets the bits
  return x != x ? x : y;
}

inline float hmax8(f32x8 v) {
  float m = v[0];
  for (int k = 1; k < 8; ++k) m = std::max(m, v[k]);
  return m;
}

inline float hsum8(f32x8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

inline float row_max(const float* s, int64_t n, float c) {
  const float ninf = -std::numeric_limits<float>::infinity();
  f32x8 m = f32x8{} + ninf;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const f32x8 y = load8(s + j) * c;
    m = y > m ? y : m;
  }
  float mx = hmax8(m);
  for (; j < n; ++j) mx = std::max(mx, s[j] * c);
  return mx;
}

// Whole groups of eight scores first, with fixed-size loads and stores: a copy of a
// runtime length (as a loop that also handled the tail had) became a call to memcpy
// for every eight scores. The tail (fewer than eight) goes through a padded vector.
template <bool kTrack, typename P>
inline float exp_row(const float* s, int64_t n, float c, float m, P* p, float* xmax) {
  const float ninf = -std::numeric_limits<float>::infinity();
  f32x8 sum = {}, x_max = f32x8{} + ninf;
  auto step = [&](f32x8 x, int64_t j, int64_t w) __attribute__((always_inline)) {
    f32x8 e = exp2_x8(x);
    for (int64_t k = w; k < 8; ++k) e[k] = 0.0f;  // padding lanes (x = -inf) weigh 0
    if (kTrack) x_max = x > x_max ? x : x_max;
    sum += e;
    if constexpr (std::is_same_v<P, float>) {
      if (w == 8) {
        std::memcpy(p + j, &e, sizeof e);
      } else {
        std::memcpy(p + j, &e, w * sizeof(float));
      }
    } else {
      for (int k = 0; k < w; ++k) facegen::store_f32(p + j + k, e[k]);
    }
  };
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) step(load8(s + j) * c - m, j, 8);
  if (j < n) {
    const int64_t w = n - j;
    f32x8 sv = {};
    std::memcpy(&sv, s + j, w * sizeof(float));
    f32x8 x = sv * c - m;
    for (int64_t k = w; k < 8; ++k) x[k] = ninf;  // padding: no max, and weight 0
    step(x, j, w);
  }
  if (kTrack) *xmax = hmax8(x_max);
  return hsum8(sum);
}
#endif

// ---------------------------------------------------------------------------
// GEMMs on row-major buffers: S[rows x n] = Q[rows x d] K^T[d x n] with the keys
// stored transposed (row stride ldk), and O[rows x d] (+)= P[rows x n] V[n x d].
// ---------------------------------------------------------------------------

void qk_portable(int64_t rows, int64_t n, int64_t d, const float* q, const float* kt,
                 int64_t ldk, float* s, int64_t lds) {
  for (int64_t i = 0; i < rows; ++i) {
    float* si = s + i * lds;
    std::fill(si, si + n, 0.0f);
    for (int64_t t = 0; t < d; ++t) {
      const float qt = q[i * d + t];
      const float* kr = kt + t * ldk;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) si[j] += qt * kr[j];
    }
  }
}

void pv_portable(int64_t rows, int64_t n, int64_t d, const float* p, int64_t ldp,
                 const float* v, float* o, bool accumulate) {
  for (int64_t i = 0; i < rows; ++i) {
    float* oi = o + i * d;
    if (!accumulate) std::fill(oi, oi + d, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      const float pj = p[i * ldp + j];
      const float* vj = v + j * d;
#pragma omp simd
      for (int64_t t = 0; t < d; ++t) oi[t] += pj * vj[t];
    }
  }
}

// Row-major S = Q K^T is column-major S^T = (K^T)^T Q^T; K^T stored row-major [d x n]
// is column-major [n x d], so both operands go in as stored ('N', 'N'), which lets
// MKL skip its copy of the keys.
void qk_mkl(int64_t rows, int64_t n, int64_t d, const float* q, const float* kt, int64_t ldk,
            float* s, int64_t lds) {
  const int m_ = int(n), n_ = int(rows), k_ = int(d), lda = int(ldk), ldb = int(d), ldc = int(lds);
  const float one = 1.0f, zero = 0.0f;
  sgemm_("N", "N", &m_, &n_, &k_, &one, kt, &lda, q, &ldb, &zero, s, &ldc);
}

void qk_mkl(int64_t rows, int64_t n, int64_t d, const bf16_bits* q, const bf16_bits* kt,
            int64_t ldk, float* s, int64_t lds) {
  const int m_ = int(n), n_ = int(rows), k_ = int(d), lda = int(ldk), ldb = int(d), ldc = int(lds);
  const float one = 1.0f, zero = 0.0f;
  gemm_bf16bf16f32_("N", "N", &m_, &n_, &k_, &one, kt, &lda, q, &ldb, &zero, s, &ldc);
}

// Row-major O = P V is column-major O^T = V^T P^T: both operands as stored.
void pv_mkl(int64_t rows, int64_t n, int64_t d, const float* p, int64_t ldp, const float* v,
            float* o, bool accumulate) {
  const int m_ = int(d), n_ = int(rows), k_ = int(n), ldv = int(d), ldp_ = int(ldp), ldo = int(d);
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  sgemm_("N", "N", &m_, &n_, &k_, &one, v, &ldv, p, &ldp_, &beta, o, &ldo);
}

void pv_mkl(int64_t rows, int64_t n, int64_t d, const bf16_bits* p, int64_t ldp,
            const bf16_bits* v, float* o, bool accumulate) {
  const int m_ = int(d), n_ = int(rows), k_ = int(n), ldv = int(d), ldp_ = int(ldp), ldo = int(d);
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  gemm_bf16bf16f32_("N", "N", &m_, &n_, &k_, &one, v, &ldv, p, &ldp_, &beta, o, &ldo);
}

// ---------------------------------------------------------------------------
// Inputs of one call and the compaction plan.
// ---------------------------------------------------------------------------

template <typename T>
struct View4 {  // a [B, h, n, d] tensor of any strides
  const T* data;
  int64_t sb, sh, sn, sd;
  explicit View4(const at::Tensor& t)
      : data(reinterpret_cast<const T*>(t.const_data_ptr())), sb(t.stride(0)), sh(t.stride(1)),
        sn(t.stride(2)), sd(t.stride(3)) {}
  const T* row(int64_t b, int64_t h, int64_t n) const { return data + b * sb + h * sh + n * sn; }
};

// Copies d elements (source stride sd), converting bfloat16 to float32 if asked.
template <typename D, typename S>
inline void copy_row(D* dst, const S* src, int64_t d, int64_t sd) {
  if constexpr (std::is_same_v<D, S>) {
    if (sd == 1) {
      std::memcpy(dst, src, size_t(d) * sizeof(D));
      return;
    }
    for (int64_t t = 0; t < d; ++t) dst[t] = src[t * sd];
  } else {
    for (int64_t t = 0; t < d; ++t) dst[t] = facegen::load_f32(src[t * sd]);
  }
}

// The compacted key sequence of batch b: the L self tokens, then the kept reference
// tokens kept[b][0 .. n_kept[b]), listed once per b and shared by the heads.
template <typename T>
struct Plan {
  View4<T> q, ks, vs, kr, vr;
  int64_t B, H, L, d, M;
  int64_t qblock;                // queries per block
  int64_t tile;                  // keys per tile
  std::vector<int64_t> kept;     // [B, M]
  std::vector<int64_t> n_kept;   // [B]
  int64_t max_tiles = 0;         // tiles of the longest compacted sequence
  float c;                       // scale * log2(e)
  bool exclude;

  int64_t N(int64_t b) const { return L + n_kept[b]; }
  int64_t n_tiles(int64_t b) const { return ceil_div(N(b), tile); }
  int64_t n_qblocks() const { return ceil_div(L, qblock); }
  // Key / value row j of the compacted sequence of (b, h), and its element stride.
  const T* key(int64_t b, int64_t h, int64_t j) const {
    return j < L ? ks.row(b, h, j) : kr.row(b, h, kept[b * M + j - L]);
  }
  const T* value(int64_t b, int64_t h, int64_t j) const {
    return j < L ? vs.row(b, h, j) : vr.row(b, h, kept[b * M + j - L]);
  }
  int64_t key_sd(int64_t j) const { return j < L ? ks.sd : kr.sd; }
  int64_t value_sd(int64_t j) const { return j < L ? vs.sd : vr.sd; }
  // Initial running max and sum of a row: the n_masked zero keys (logit 0, so 2^0 each
  // once the max is 0), or nothing when there are none or they are excluded.
  std::pair<float, float> start(int64_t b) const {
    const int64_t n_masked = M - n_kept[b];
    if (exclude || n_masked == 0) return {-std::numeric_limits<float>::infinity(), 0.0f};
    return {0.0f, float(n_masked)};
  }
};

// Per-thread scratch for one q-block: raw scores s [qblock, tile] and probabilities
// p [qblock, tile] (float32, or bfloat16 for the bfloat16 GEMMs), the query rows q,
// 16 key rows for the packing, the float32 output accumulator o [qblock, ldo], and per
// row the running max m (log2 units), running sum l and last rescale factor alpha.
template <typename P, typename Q>
struct Scratch {
  std::vector<float> s, o, m, l, alpha;
  std::vector<P> p;
  std::vector<Q> q, rows;  // rows: 16 key rows for the packing
  int64_t ldo;
  Scratch(int64_t qblock, int64_t tile, int64_t ldq, int64_t ldo_)
      : s(qblock * tile), o(qblock * ldo_), m(qblock), l(qblock), alpha(qblock),
        p(qblock * tile), q(qblock * ldq, Q(0)),
        rows(16 * ldq, Q(0)), ldo(ldo_) {}
};

// One online-softmax step on the `rows` queries of a block and a tile of n keys, whose
// raw scores are in sc.s (row stride ld): writes P to sc.p (row stride ld) and rescales
// the accumulated output rows whose max grew. `first`: o holds nothing yet (the next
// GEMM overwrites it).
//
// A row's reference max m only has to bound its logits loosely: the probabilities are
// exponentiated against the current m in one pass, which also finds how far the tile's
// logits exceed it; only past kSlack (probabilities up to 2^kSlack, harmless in float32
// and bfloat16) is the row redone against its new max and its output rescaled. After
// the first tile that is rare, so most tiles take one pass over the scores, not two.
// A row with no reference yet (m = -inf: first tile, no zero keys) takes its max first.
constexpr float kSlack = 8.0f;

template <typename P, typename Q>
void softmax_step(Scratch<P, Q>& sc, int64_t rows, int64_t n, int64_t ld, int64_t d, float c,
                  bool first) {
  float* m = sc.m.data();
  float* l = sc.l.data();
  float* alpha = sc.alpha.data();
  constexpr float kNoMax = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < rows; ++i) {
    const float* si = sc.s.data() + i * ld;
    P* pi = sc.p.data() + i * ld;  // not over s: a redone row rereads s
    float a = 1.0f, sum;
    if (m[i] == kNoMax) {
      m[i] = row_max(si, n, c);
      a = 0.0f;
      sum = exp_row<false>(si, n, c, m[i], pi, nullptr);
    } else {
      float xmax;
      sum = exp_row<true>(si, n, c, m[i], pi, &xmax);
      if (xmax > kSlack) {
        m[i] += xmax;
        a = std::exp2(-xmax);
        sum = exp_row<false>(si, n, c, m[i], pi, nullptr);
      }
    }
    l[i] = l[i] * a + sum;
    alpha[i] = a;
  }
  if (first) return;
  for (int64_t i = 0; i < rows; ++i) {
    if (alpha[i] == 1.0f) continue;
    float* oi = sc.o.data() + i * sc.ldo;
    const float a = alpha[i];
#pragma omp simd
    for (int64_t t = 0; t < d; ++t) oi[t] *= a;
  }
}

template <typename P, typename Q>
void start_rows(Scratch<P, Q>& sc, std::pair<float, float> m0_l0) {
  std::fill(sc.m.begin(), sc.m.end(), m0_l0.first);
  std::fill(sc.l.begin(), sc.l.end(), m0_l0.second);
}

// out rows = o / l in the output dtype.
template <typename T, typename P, typename Q>
void finish_rows(const Scratch<P, Q>& sc, int64_t rows, int64_t d, T* out) {
  for (int64_t i = 0; i < rows; ++i) {
    const float inv = 1.0f / sc.l[i];
    const float* oi = sc.o.data() + i * sc.ldo;
    T* dst = out + i * d;
#pragma omp simd
    for (int64_t t = 0; t < d; ++t) facegen::store_f32(dst + t, oi[t] * inv);
  }
}

// ---------------------------------------------------------------------------
// Row-major kernels (MKL, portable): per (b, h), the compacted keys and values as
// [n_alloc, d] rows of type E (the input type, or float32 for portable bfloat16).
// ---------------------------------------------------------------------------

template <typename T, typename E>
struct RowMajorKernel {
  using P = std::conditional_t<std::is_same_v<E, float>, float, bf16_bits>;
  using Buf = Scratch<P, E>;
  const Plan<T>& plan;
  bool mkl;
  int64_t n_alloc;  // key rows per (b, h): max_tiles * tile
  at::Tensor k, v;  // per head of one batch entry: K^T tiles [d, tile], V rows [n_alloc, d]
  E* kp;
  E* vp;

  RowMajorKernel(const Plan<T>& p, Gemm g)
      : plan(p), mkl(g != Gemm::kPortable), n_alloc(p.max_tiles * p.tile),
        k(at::empty({p.H * n_alloc * p.d}, std::is_same_v<E, float> ? at::kFloat : at::kBFloat16)),
        v(at::empty_like(k)), kp(reinterpret_cast<E*>(k.data_ptr())),
        vp(reinterpret_cast<E*>(v.data_ptr())) {}

  Buf scratch() const { return Buf(plan.qblock, plan.tile, plan.d, plan.d); }

  void pack(int64_t b, int64_t h, int64_t t, Buf& sc) {
    const int64_t d = plan.d, tile = plan.tile, base = h * n_alloc;
    const int64_t j0 = t * tile, n = std::min(tile, plan.N(b) - j0);
    E* kt = kp + (base + j0) * d;
    E* vt = vp + (base + j0) * d;
    // Keys go transposed, 16 at a time through a small row buffer.
    E* rows = sc.rows.data();
    for (int64_t jb = 0; jb < n; jb += 16) {
      const int64_t nb = std::min<int64_t>(16, n - jb);
      for (int64_t r = 0; r < nb; ++r)
        copy_row(rows + r * d, plan.key(b, h, j0 + jb + r), d, plan.key_sd(j0 + jb + r));
      for (int64_t c = 0; c < d; ++c)
        for (int64_t r = 0; r < nb; ++r) kt[c * tile + jb + r] = rows[r * d + c];
    }
    for (int64_t jj = 0; jj < n; ++jj)
      copy_row(vt + jj * d, plan.value(b, h, j0 + jj), d, plan.value_sd(j0 + jj));
  }

  void block(int64_t b, int64_t h, int64_t qb, Buf& sc, T* out) {
    const int64_t d = plan.d, tile = plan.tile, N = plan.N(b);
    const int64_t i0 = qb * plan.qblock, rows = std::min(plan.qblock, plan.L - i0);
    for (int64_t i = 0; i < rows; ++i)
      copy_row(sc.q.data() + i * d, plan.q.row(b, h, i0 + i), d, plan.q.sd);
    start_rows(sc, plan.start(b));
    const int64_t base = h * n_alloc;
    for (int64_t t = 0; t < plan.n_tiles(b); ++t) {
      const int64_t n = std::min(tile, N - t * tile);
      const E* kt = kp + (base + t * tile) * d;
      const E* vt = vp + (base + t * tile) * d;
      if constexpr (std::is_same_v<E, float>) {
        if (mkl) qk_mkl(rows, n, d, sc.q.data(), kt, tile, sc.s.data(), tile);
        else qk_portable(rows, n, d, sc.q.data(), kt, tile, sc.s.data(), tile);
      } else {
        qk_mkl(rows, n, d, sc.q.data(), kt, tile, sc.s.data(), tile);
      }
      softmax_step(sc, rows, n, tile, d, plan.c, t == 0);
      if constexpr (std::is_same_v<E, float>) {
        if (mkl) pv_mkl(rows, n, d, sc.p.data(), tile, vt, sc.o.data(), t > 0);
        else pv_portable(rows, n, d, sc.p.data(), tile, vt, sc.o.data(), t > 0);
      } else {
        pv_mkl(rows, n, d, sc.p.data(), tile, vt, sc.o.data(), t > 0);
      }
    }
    finish_rows(sc, rows, d, out + ((b * plan.H + h) * plan.L + i0) * d);
  }

  void done() {}
};

// ---------------------------------------------------------------------------
// AMX kernel: bfloat16 tiles in the VNNI layout of oneDNN's brgemm B operand
// (element (k, n) of a K x N matrix at [k / 2][n][k % 2], row stride ldb pairs).
//   Q rows: [qblock, dp], dp = d rounded up to even (the VNNI pair).
//   K^T of a tile: [dp / 2][kt_ld][2], kt_ld = tile width rounded up to 16.
//   V of a tile:   [tile / 2][v_ld][2], v_ld = d rounded up to 16.
// Padding is zero, so a padded key (odd tail) contributes 0 * 0, and the output
// accumulator has v_ld columns (whole 16-column AMX tiles), of which d are written out.
// ---------------------------------------------------------------------------

inline uint32_t pair(bf16_bits lo, bf16_bits hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

struct AmxKernel {
  using Buf = Scratch<bf16_bits, bf16_bits>;
  const Plan<bf16_bits>& plan;
  int64_t dp, kt_ld, v_ld, kt_size, vt_size;
  at::Tensor k_, v_;  // the packed tiles of every head of one batch entry
  bf16_bits* k;
  bf16_bits* v;

  explicit AmxKernel(const Plan<bf16_bits>& p)
      : plan(p), dp(round_up(p.d, 2)), kt_ld(round_up(p.tile, 16)), v_ld(round_up(p.d, 16)),
        kt_size(dp * kt_ld), vt_size(p.tile * v_ld),
        k_(at::empty({p.H * p.max_tiles * kt_size}, at::kBFloat16)),
        v_(at::empty({p.H * p.max_tiles * vt_size}, at::kBFloat16)),
        k(reinterpret_cast<bf16_bits*>(k_.data_ptr())),
        v(reinterpret_cast<bf16_bits*>(v_.data_ptr())) {}

  Buf scratch() const { return Buf(plan.qblock, plan.tile, dp, v_ld); }

  int64_t tile_index(int64_t h, int64_t t) const { return h * plan.max_tiles + t; }

  // Row j of the compacted keys (or values) as dp elements: the input row itself when
  // it is contiguous and d is even, else a zero-padded copy in `tmp`.
  const bf16_bits* padded_row(const bf16_bits* src, int64_t sd, bf16_bits* tmp) const {
    if (sd == 1 && dp == plan.d) return src;
    copy_row(tmp, src, plan.d, sd);  // tmp[d] of an odd d stays 0 from construction
    return tmp;
  }

  void pack(int64_t b, int64_t h, int64_t t, Buf& sc) {
    const int64_t d = plan.d, j0 = t * plan.tile, n = std::min(plan.tile, plan.N(b) - j0);
    uint32_t* kt = reinterpret_cast<uint32_t*>(k + tile_index(h, t) * kt_size);
    uint32_t* vt = reinterpret_cast<uint32_t*>(v + tile_index(h, t) * vt_size);
    bf16_bits* r0 = sc.rows.data();
    bf16_bits* r1 = r0 + dp;
    bf16_bits* zero = r1 + dp;  // stays all zero: the partner of an odd last value row
    // K^T: the (2w, 2w + 1) element pair of key jj is one 32-bit word at [w][jj].
    for (int64_t jj = 0; jj < n; ++jj) {
      const bf16_bits* src = padded_row(plan.key(b, h, j0 + jj), plan.key_sd(j0 + jj), r0);
      for (int64_t w = 0; w < dp / 2; ++w) {
        uint32_t word;
        std::memcpy(&word, src + 2 * w, sizeof word);
        kt[w * kt_ld + jj] = word;
      }
    }
    if (n < kt_ld)  // the columns of a short last tile
      for (int64_t w = 0; w < dp / 2; ++w) std::fill(kt + w * kt_ld + n, kt + (w + 1) * kt_ld, 0u);
    // V: keys jj and jj + 1 interleaved element by element, then zeros up to v_ld.
    for (int64_t jj = 0; jj < n; jj += 2) {
      const bf16_bits* s0 = padded_row(plan.value(b, h, j0 + jj), plan.value_sd(j0 + jj), r0);
      const bf16_bits* s1 = jj + 1 < n
          ? padded_row(plan.value(b, h, j0 + jj + 1), plan.value_sd(j0 + jj + 1), r1)
          : zero;
      uint32_t* dst = vt + (jj / 2) * v_ld;
#pragma omp simd
      for (int64_t c = 0; c < d; ++c) dst[c] = pair(s0[c], s1[c]);
      std::fill(dst + d, dst + v_ld, 0u);
    }
  }

  void block(int64_t b, int64_t h, int64_t qb, Buf& sc, bf16_bits* out) {
    using at::native::cpublas::brgemm;
    using bf16 = at::BFloat16;
    const int64_t d = plan.d, tile = plan.tile, N = plan.N(b);
    const int64_t i0 = qb * plan.qblock, rows = std::min(plan.qblock, plan.L - i0);
    for (int64_t i = 0; i < rows; ++i)  // odd d: column d stays 0 from construction
      copy_row(sc.q.data() + i * dp, plan.q.row(b, h, i0 + i), d, plan.q.sd);
    start_rows(sc, plan.start(b));
    const auto* q = reinterpret_cast<const bf16*>(sc.q.data());
    for (int64_t t = 0; t < plan.n_tiles(b); ++t) {
      const int64_t n = std::min(tile, N - t * tile), n_even = round_up(n, 2);
      const auto* kt = reinterpret_cast<const bf16*>(k + tile_index(h, t) * kt_size);
      const auto* vt = reinterpret_cast<const bf16*>(v + tile_index(h, t) * vt_size);
      brgemm(rows, n, dp, dp, kt_ld, tile, false, q, kt, sc.s.data(), true);
      softmax_step(sc, rows, n, tile, d, plan.c, t == 0);
      if (n_even != n)  // the padded key: p = 0 (its value row is 0 as well)
        for (int64_t i = 0; i < rows; ++i) sc.p[i * tile + n] = 0;
      brgemm(rows, v_ld, n_even, tile, v_ld, v_ld, t > 0,
             reinterpret_cast<const bf16*>(sc.p.data()), vt, sc.o.data(), true);
    }
    finish_rows(sc, rows, d, out + ((b * plan.H + h) * plan.L + i0) * d);
  }

  void done() { at::native::cpublas::brgemm_release(true); }
};

// ---------------------------------------------------------------------------
// Driver: one OpenMP region and no barrier inside it. The tasks, per batch entry:
// pack the key tiles of head 0, then for each head h: pack head h + 1, attend the
// q-blocks of head h. Threads take them in that order from a shared counter (dynamic
// scheduling keeps both cores busy on a shared machine), and a task whose inputs are
// not ready yet waits for them: attending head h needs its tiles packed, and packing
// head h of the next batch entry (the buffers hold one entry) needs the previous
// entry's head h attended. Those are earlier tasks already running elsewhere, so the
// waits are short and cannot deadlock; packing one head ahead keeps them rare.
// Scratch is allocated up front, so nothing inside the region can throw.
// ---------------------------------------------------------------------------

// Spins briefly, then yields the core, until `counter` reaches `target`.
inline void wait_until(const std::atomic<int64_t>& counter, int64_t target) {
  for (int spins = 0; counter.load(std::memory_order_acquire) < target; ++spins) {
    if (spins > 64) std::this_thread::yield();
  }
}

struct Task {
  int64_t b, h, index;
  bool pack;
};

template <typename T, typename Kernel>
void drive(const Plan<T>& plan, Kernel& kernel, T* out) {
  const int64_t H = plan.H, n_qb = plan.n_qblocks();
  std::vector<Task> tasks;
  std::vector<int64_t> tiles_before(plan.B + 1, 0);  // tiles of each head in entries < b
  for (int64_t b = 0; b < plan.B; ++b) {
    const int64_t n_tiles = plan.n_tiles(b);
    tiles_before[b + 1] = tiles_before[b] + n_tiles;
    for (int64_t t = 0; t < n_tiles; ++t) tasks.push_back({b, 0, t, true});
    for (int64_t h = 0; h < H; ++h) {
      if (h + 1 < H)
        for (int64_t t = 0; t < n_tiles; ++t) tasks.push_back({b, h + 1, t, true});
      for (int64_t qb = 0; qb < n_qb; ++qb) tasks.push_back({b, h, qb, false});
    }
  }
  std::unique_ptr<std::atomic<int64_t>[]> packed(new std::atomic<int64_t>[H]);
  std::unique_ptr<std::atomic<int64_t>[]> attended(new std::atomic<int64_t>[H]);
  for (int64_t h = 0; h < H; ++h) {
    packed[h].store(0);
    attended[h].store(0);
  }
  std::atomic<int64_t> next{0};
  const int64_t n_tasks = int64_t(tasks.size());
  const int threads = int(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H * n_qb)));
  std::vector<typename Kernel::Buf> scratch;
  for (int i = 0; i < threads; ++i) scratch.push_back(kernel.scratch());
#pragma omp parallel num_threads(threads)
  {
    auto& sc = scratch[omp_get_thread_num()];
    for (int64_t i = next.fetch_add(1); i < n_tasks; i = next.fetch_add(1)) {
      const Task& task = tasks[i];
      if (task.pack) {
        wait_until(attended[task.h], task.b * n_qb);
        kernel.pack(task.b, task.h, task.index, sc);
        packed[task.h].fetch_add(1, std::memory_order_release);
      } else {
        wait_until(packed[task.h], tiles_before[task.b + 1]);
        kernel.block(task.b, task.h, task.index, sc, out);
        attended[task.h].fetch_add(1, std::memory_order_release);
      }
    }
    kernel.done();
  }
}

// ---------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------

void check_args(const at::Tensor& q, const at::Tensor& k_self, const at::Tensor& v_self,
                const at::Tensor& k_ref, const at::Tensor& v_ref, const at::Tensor& ref_keep) {
  facegen::check_input(kOp, "q", q, 4);
  facegen::check_input(kOp, "k_self", k_self, 4);
  facegen::check_input(kOp, "v_self", v_self, 4);
  facegen::check_input(kOp, "k_ref", k_ref, 4);
  facegen::check_input(kOp, "v_ref", v_ref, 4);
  facegen::check_same_dtype(kOp, "k_self", k_self, "q", q);
  facegen::check_same_dtype(kOp, "v_self", v_self, "q", q);
  facegen::check_same_dtype(kOp, "k_ref", k_ref, "q", q);
  facegen::check_same_dtype(kOp, "v_ref", v_ref, "q", q);
  TORCH_CHECK_VALUE(k_self.sizes() == q.sizes(), kOp, ": k_self must have shape ", q.sizes(),
                    " like q, got ", k_self.sizes());
  TORCH_CHECK_VALUE(v_self.sizes() == q.sizes(), kOp, ": v_self must have shape ", q.sizes(),
                    " like q, got ", v_self.sizes());
  const int64_t B = q.size(0), H = q.size(1), d = q.size(3), M = k_ref.size(2);
  TORCH_CHECK_VALUE(k_ref.size(0) == B && k_ref.size(1) == H && k_ref.size(3) == d, kOp,
                    ": k_ref must have shape (B, h, M, d) = (", B, ", ", H, ", M, ", d,
                    "), got ", k_ref.sizes());
  TORCH_CHECK_VALUE(v_ref.sizes() == k_ref.sizes(), kOp, ": v_ref must have shape ",
                    k_ref.sizes(), " like k_ref, got ", v_ref.sizes());
  TORCH_CHECK_VALUE(ref_keep.dim() == 2, kOp, ": ref_keep must have 2 dims, got ",
                    ref_keep.sizes());
  TORCH_CHECK_TYPE(ref_keep.device().is_cpu(), kOp, ": ref_keep must be a CPU tensor, got ",
                   ref_keep.device());
  TORCH_CHECK_TYPE(ref_keep.scalar_type() == at::kBool, kOp,
                   ": ref_keep must be bool, got ", ref_keep.scalar_type());
  TORCH_CHECK_VALUE(ref_keep.size(0) == B && ref_keep.size(1) == M, kOp,
                    ": ref_keep must have shape (B, M) = (", B, ", ", M, "), got ",
                    ref_keep.sizes());
}

template <typename T>
void run(const at::Tensor& q, const at::Tensor& k_self, const at::Tensor& v_self,
         const at::Tensor& k_ref, const at::Tensor& v_ref, const at::Tensor& ref_keep,
         double scale, bool exclude, Gemm gemm, at::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), d = q.size(3), M = k_ref.size(2);
  Plan<T> plan{View4<T>(q), View4<T>(k_self), View4<T>(v_self), View4<T>(k_ref),
               View4<T>(v_ref), B, H, L, d, M, blocking(gemm).qblock, blocking(gemm).tile,
               std::vector<int64_t>(B * M), std::vector<int64_t>(B, 0), 0, float(scale) * kLog2e,
               exclude};
  const at::Tensor keep = ref_keep.contiguous();
  const bool* kp = keep.const_data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t m = 0; m < M; ++m)
      if (kp[b * M + m]) plan.kept[b * M + plan.n_kept[b]++] = m;
    plan.max_tiles = std::max(plan.max_tiles, plan.n_tiles(b));
  }
  T* o = reinterpret_cast<T*>(out.data_ptr());
  if constexpr (std::is_same_v<T, bf16_bits>) {
    if (gemm == Gemm::kBrgemmBf16) {
      AmxKernel kernel(plan);
      return drive(plan, kernel, o);
    }
    if (gemm == Gemm::kMklBf16) {
      RowMajorKernel<T, bf16_bits> kernel(plan, gemm);
      return drive(plan, kernel, o);
    }
  }
  RowMajorKernel<T, float> kernel(plan, gemm);  // bfloat16 inputs converted to float32
  drive(plan, kernel, o);
}

// shared_self_attention on inputs that check_args passed.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k_self, const at::Tensor& v_self,
                  const at::Tensor& k_ref, const at::Tensor& v_ref, const at::Tensor& ref_keep,
                  double scale, bool exclude) {
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  const Gemm gemm = choose_gemm(bf16);
  if (bf16)
    run<bf16_bits>(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude, gemm, out);
  else
    run<float>(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude, gemm, out);
  return out;
}

}  // namespace

at::Tensor shared_self_attention(const at::Tensor& q, const at::Tensor& k_self,
                                 const at::Tensor& v_self, const at::Tensor& k_ref,
                                 const at::Tensor& v_ref, const at::Tensor& ref_keep,
                                 double scale, bool exclude) {
  check_args(q, k_self, v_self, k_ref, v_ref, ref_keep);
  return attend(q, k_self, v_self, k_ref, v_ref, ref_keep, scale, exclude);
}

// The public function's call in plain eager mode (direct_call.h): the kernel's result,
// or None for the Python route, which sends other dtypes to the reference and reports
// bad inputs. scale: None for d ** -0.5.
std::optional<at::Tensor> shared_self_attention_eager(
    const at::Tensor& q, const at::Tensor& k_self, const at::Tensor& v_self,
    const at::Tensor& k_ref, const at::Tensor& v_ref, const at::Tensor& ref_keep,
    std::optional<double> scale, bool exclude) {
  if (!facegen::direct_call_allowed({&q, &k_self, &v_self, &k_ref, &v_ref, &ref_keep}) ||
      !facegen::checks_pass([&] { check_args(q, k_self, v_self, k_ref, v_ref, ref_keep); })) {
    return std::nullopt;
  }
  const std::optional<double> s = facegen::scale_or_default(scale, q.size(3));
  if (!s) return std::nullopt;
  return attend(q, k_self, v_self, k_ref, v_ref, ref_keep, *s, exclude);
}

// Which GEMM backend a dtype ("float32" or "bfloat16") uses in this process.
std::string shared_self_attention_gemm_backend(const std::string& dtype) {
  TORCH_CHECK_VALUE(dtype == "float32" || dtype == "bfloat16", kOp,
                    ": dtype must be 'float32' or 'bfloat16', got '", dtype, "'");
  return gemm_name(choose_gemm(dtype == "bfloat16"));
}

void register_shared_self_attention(pybind11::module_& m) {
  m.def("shared_self_attention", &shared_self_attention,
        "Parts2Whole shared self-attention for the L target queries (flash-attention style, "
        "masked reference tokens never read).\n"
        "q, k_self, v_self: [B, h, L, d]; k_ref, v_ref: [B, h, M, d]; ref_keep: [B, M] bool; "
        "float32 or bfloat16 (float32 accumulation). Masked tokens count as zero keys "
        "(exp(0 - max) in the denominator) unless exclude drops them. Returns [B, h, L, d] "
        "contiguous in q's dtype.",
        pybind11::arg("q"), pybind11::arg("k_self"), pybind11::arg("v_self"),
        pybind11::arg("k_ref"), pybind11::arg("v_ref"), pybind11::arg("ref_keep"),
        pybind11::arg("scale"), pybind11::arg("exclude"));
  m.def("shared_self_attention_eager", &shared_self_attention_eager,
        "shared_self_attention for a plain eager call, or None when the call must go "
        "through the custom op (facegen_rt.ops.shared_self_attention decides).",
        pybind11::arg("q"), pybind11::arg("k_self"), pybind11::arg("v_self"),
        pybind11::arg("k_ref"), pybind11::arg("v_ref"), pybind11::arg("ref_keep"),
        pybind11::arg("scale") = pybind11::none(), pybind11::arg("exclude") = false);
  m.def("shared_self_attention_gemm_backend", &shared_self_attention_gemm_backend,
        "Name of the GEMM backend shared_self_attention uses for dtype 'float32' or "
        "'bfloat16': onednn-brgemm-amx, mkl-bf16, mkl-sgemm or portable (the environment "
        "variable FACEGEN_SSA_GEMM = auto | mkl | portable caps the choice).",
        pybind11::arg("dtype"));
}
