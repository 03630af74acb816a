// SCA-DM masked cross-attention on CPU, exactly as masked_cross_attention_reference:
//   sim = (q . k) * scale * mask;  sim[sim == 0] = -FLT_MAX;  out = softmax_R(sim) @ v
// with q [B, h, L, d], k and v [B, h, R, d], mask [B, L, R] shared by the heads.
//
// The mask row of a query position is read once per block of rows and decides, for
// all heads, how the row is computed:
// * one nonzero entry r (a one-hot semantic mask): every other logit is -FLT_MAX, and
//   exp(-FLT_MAX - s) is 0 in float32 for any finite s > -FLT_MAX, so the softmax is
//   exactly one-hot and out = v[r]; unless s itself is exactly 0 (then it is masked as
//   well, all logits are equal and out = mean of the v rows). One dot product per
//   head decides, and the row is a copy.
// * no nonzero entry: all logits are -FLT_MAX, out = mean of the v rows.
// * two to kSparse nonzero entries (soft masks at region borders): only those logits
//   can be above -FLT_MAX, and the others get weight exactly 0, so the softmax runs
//   over the nonzero entries alone.
// * more: the full softmax over the R logits.
// All of it in float32. The shortcuts need every logit that the mask zeroes to be a
// finite number before the mask (else NaN * 0 = NaN reaches the softmax, as in the
// reference). A bound checks that cheaply, |q . k_j| <= sum|q| * max|k|; rows that
// fail it (or rows of heads whose k or v hold a NaN or inf) take the full path,
// which follows the reference in every case.

#include "common.h"
#include "direct_call.h"
#include "vec16.h"

#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

// The kernels below are written as plain loops for the auto-vectorizer. GCC's default
// for AVX-512 machines is to vectorize with 256-bit registers; 512-bit ones halve the
// instruction count of these loops (the target option has no effect on CPUs without
// AVX-512).
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")

namespace {

using facegen::bf16_bits;
using namespace facegen;  // vec16.h's f32x16 / i32x16, their operators and helpers

constexpr const char* kOp = "masked_cross_attention";

// Rows with 2..kSparse nonzero mask entries take the sparse path.
constexpr int kSparse = 4;  // sparse_row's lane initializer lists four entries

// Below this, the bound on |q . k_j * scale| proves that every logit the mask zeroes
// becomes exactly 0 (then -FLT_MAX), which the shortcuts rely on.
constexpr double kLimit = 0.25 * double(FLT_MAX);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The full path works on blocks of kBlock = 32 floats held in two f32x16 (vec16.h:
// one zmm register with AVX-512, two ymm without). Fixed-size vector values stay in
// registers, where runtime-length loops over a scratch buffer would chain every update
// through a store and a reload.
constexpr int64_t kBlock = 32;

// q . k over d values (kD: d when it is a compile-time multiple of 16, else 0).
template <int64_t kD, typename T>
inline float dot_row(const T* q, const float* k, int64_t d) {
  if constexpr (kD != 0 && kD % 16 == 0) {
    f32x16 acc = load16_f32(q) * load16(k);
    for (int64_t i = 16; i < kD; i += 16) acc += load16_f32(q + i) * load16(k + i);
    return sum16(acc);
  } else {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < d; ++i) dot += facegen::load_f32(q[i]) * k[i];
    return dot;
  }
}

// What one mask row holds, found once for all heads.
struct RowPlan {
  int32_t nnz;             // nonzero entries, capped at kSparse + 1 ("more")
  int32_t idx[kSparse];    // their positions, when nnz <= kSparse
  float val[kSparse];      // and values
};

// Bit j of the result is set when m[j] is nonzero, for R <= 64. The test is on the
// bits with the sign cleared, so -0.0 counts as zero and NaN as nonzero, as the float
// comparison m[j] != 0 would have it; without branches, as the position of a one-hot
// entry is random and a branch on it would be mispredicted on most rows.
inline uint64_t nonzero_bits(const float* m, int64_t R) {
  uint64_t bits = 0;
#if defined(__AVX512F__)
  const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
  for (int64_t j0 = 0; j0 < R; j0 += 16) {
    const int64_t n = std::min<int64_t>(16, R - j0);
    const __mmask16 lanes = __mmask16((1u << n) - 1u);  // masked lanes are never read
    const __m512i x = _mm512_maskz_loadu_epi32(lanes, m + j0);
    bits |= uint64_t(_mm512_test_epi32_mask(x, magnitude)) << j0;
  }
#elif defined(__AVX2__)
  // Eight entries per step (a scalar test per entry cost more than the rest of the
  // row's plan). A masked load for the last, partial step reads nothing past the row's
  // end; its masked-off lanes read as 0, so their bits stay clear.
  const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
  auto step = [&](int64_t j0, __m256i x) {
    const __m256i zero = _mm256_cmpeq_epi32(_mm256_and_si256(x, magnitude),
                                            _mm256_setzero_si256());
    bits |= uint64_t(~_mm256_movemask_ps(_mm256_castsi256_ps(zero)) & 0xFF) << j0;
  };
  int64_t j0 = 0;
  for (; j0 + 8 <= R; j0 += 8) {
    step(j0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + j0)));
  }
  if (j0 < R) {
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(R - j0)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    step(j0, _mm256_maskload_epi32(reinterpret_cast<const int*>(m + j0), lanes));
  }
#else
  for (int64_t j = 0; j < R; ++j) {
    uint32_t u;
    std::memcpy(&u, m + j, sizeof u);
    bits |= uint64_t((u & 0x7FFFFFFFu) != 0) << j;
  }
#endif
  return bits;
}

inline uint64_t nonzero_bits(const bf16_bits* m, int64_t R) {
  uint64_t bits = 0;
#if defined(__AVX512BW__)
  const __m512i magnitude = _mm512_set1_epi16(0x7FFF);
  for (int64_t j0 = 0; j0 < R; j0 += 32) {
    const int64_t n = std::min<int64_t>(32, R - j0);
    const __mmask32 lanes = __mmask32(n == 32 ? ~0u : (1u << n) - 1u);
    const __m512i x = _mm512_maskz_loadu_epi16(lanes, m + j0);
    bits |= uint64_t(_mm512_test_epi16_mask(x, magnitude)) << j0;
  }
#else
  for (int64_t j = 0; j < R; ++j) bits |= uint64_t((m[j] & 0x7FFFu) != 0) << j;
#endif
  return bits;
}

// NaN compares unequal to zero, so it counts as nonzero (and then yields NaN logits).
// Fills p in place: a RowPlan built on the stack and returned would be copied out
// with wide loads over its narrow field stores, a store-forwarding stall per row.
template <typename T>
void plan_row(const T* m, int64_t R, RowPlan& p) {
  p.idx[0] = 0;  // a valid region even for an empty row (onehot_rows16 reads it)
  p.val[0] = 0.0f;
  if (R <= 64) {
    uint64_t bits = nonzero_bits(m, R);
    const int nnz = __builtin_popcountll(bits);
    p.nnz = std::min(nnz, kSparse + 1);
    if (nnz > kSparse) return;
    for (int a = 0; bits != 0; ++a, bits &= bits - 1) {
      const int j = __builtin_ctzll(bits);
      p.idx[a] = j;
      p.val[a] = facegen::load_f32(m[j]);
    }
    return;
  }
  p.nnz = 0;
  for (int64_t j = 0; j < R && p.nnz <= kSparse; ++j) {
    const float mj = facegen::load_f32(m[j]);
    if (mj != 0.0f) {
      if (p.nnz < kSparse) {
        p.idx[p.nnz] = int32_t(j);
        p.val[p.nnz] = mj;
      }
      ++p.nnz;
    }
  }
}

// Per (b, h) quantities computed once, so that the row loops never convert k or v:
// k in float32 for the shortcuts' dot products, the mean v row and the bound on k;
// and, built only when some row needs a softmax, k transposed and v in float32,
// both padded to whole kBlock blocks.
template <typename T>
struct HeadTables {
  int64_t BH, R, d;
  int64_t Rp;                    // R rounded up to kBlock: row length of kt
  int64_t dp;                    // d rounded up to kBlock: row length of v
  const T* k_in;
  const T* v_in;
  const float* k;                // [BH, R, d] the input itself when it is float32
  std::vector<float> k_copy;     // its float32 copy otherwise
  std::vector<T> vmean;          // [BH, d] mean over the R rows of v, in the output dtype
  std::vector<float> kbound;     // [BH] max|k|; +inf when k or v holds a NaN or inf
  std::unique_ptr<float[]> kt;   // [BH, d, Rp] k transposed, zero padded: logits as axpys
  std::unique_ptr<float[]> v;    // [BH, R, dp] zero padded
  std::vector<float> pad;        // [Rp] 0 for the R real logits, -inf for the padding

  // Allocates the tables; fill_head fills those of one (b, h). The softmax tables
  // (kt and v) are only allocated by allocate_softmax_tables and filled by
  // fill_softmax_head, when some row needs them.
  HeadTables(const T* k_in_, const T* v_in_, int64_t BH_, int64_t R_, int64_t d_)
      : BH(BH_), R(R_), d(d_), Rp(ceil_div(R_, kBlock) * kBlock),
        dp(ceil_div(d_, kBlock) * kBlock), k_in(k_in_), v_in(v_in_), vmean(BH_ * d_),
        kbound(BH_), pad(Rp, -INFINITY) {
    if constexpr (std::is_same_v<T, float>) {
      k = k_in;
    } else {
      k_copy.resize(BH * R * d);
      k = k_copy.data();
    }
    std::fill(pad.begin(), pad.begin() + R, 0.0f);
  }

  bool has_softmax_tables() const { return kt != nullptr; }

  void allocate_softmax_tables() {
    kt.reset(new float[BH * d * Rp]);
    v.reset(new float[BH * R * dp]);
  }

  // kt and v of one (b, h).
  void fill_softmax_head(int64_t bh) {
    const float* kh = k + bh * R * d;
    for (int64_t i = 0; i < d; ++i) {
      float* row = kt.get() + (bh * d + i) * Rp;
      for (int64_t j = 0; j < R; ++j) row[j] = kh[j * d + i];
      std::fill(row + R, row + Rp, 0.0f);
    }
    const T* vb = v_in + bh * R * d;
    float* vt = v.get() + bh * R * dp;
    for (int64_t j = 0; j < R; ++j) {
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) vt[j * dp + i] = facegen::load_f32(vb[j * d + i]);
      std::fill(vt + j * dp + d, vt + (j + 1) * dp, 0.0f);
    }
  }

  // k in float32, the bound and the mean v row of one (b, h). vsum: d floats.
  void fill_head(int64_t bh, float* vsum) {
    const int64_t n = R * d;
    const T* kb = k_in + bh * n;
    const T* vb = v_in + bh * n;
    // x * 0 is 0 for finite x and NaN for NaN or inf: one sum tells them apart.
    float kmax = 0.0f, probe = 0.0f;
#pragma omp simd reduction(max : kmax) reduction(+ : probe)
    for (int64_t e = 0; e < n; ++e) {
      const float kv = facegen::load_f32(kb[e]);
      kmax = std::max(kmax, std::fabs(kv));
      probe += kv * 0.0f + facegen::load_f32(vb[e]) * 0.0f;
    }
    kbound[bh] = probe == 0.0f ? kmax : INFINITY;
    if constexpr (!std::is_same_v<T, float>) {
      float* kc = k_copy.data() + bh * n;
#pragma omp simd
      for (int64_t e = 0; e < n; ++e) kc[e] = facegen::load_f32(kb[e]);
    }
    // The mean v row, summed along R with d-wide vector additions.
    std::fill(vsum, vsum + d, 0.0f);
    for (int64_t j = 0; j < R; ++j) {
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) vsum[i] += facegen::load_f32(vb[j * d + i]);
    }
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) facegen::store_f32(&vmean[bh * d + i], vsum[i] / float(R));
  }
};

// In 32-byte vector moves when the row is whole 32-byte chunks: GCC, tuning for Zen 2,
// expands a constant-size memcpy into 16-byte moves, twice the loads and stores (and
// stores issue one per cycle; a one-hot row is little else).
template <typename T>
inline void copy_row(T* __restrict dst, const T* __restrict src, int64_t d) {
  const size_t bytes = size_t(d) * sizeof(T);
  if (bytes % sizeof(f32x8) != 0) {
    std::memcpy(dst, src, bytes);
    return;
  }
  for (size_t b = 0; b < bytes; b += sizeof(f32x8)) {
    f32x8 x;
    std::memcpy(&x, reinterpret_cast<const char*>(src) + b, sizeof x);
    std::memcpy(reinterpret_cast<char*>(dst) + b, &x, sizeof x);
  }
}

// Sum of |x| over n values: with max|k|, a bound on every logit of the rows in x.
// NaN and inf propagate, and then no bound holds.
template <typename T>
float l1_norm(const T* x, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += std::fabs(facegen::load_f32(x[i]));
  return sum;
}

// Running sum of |q| over several rows, in vector lanes (no horizontal sum per row).
struct AbsSum {
  f32x16 lanes = {};
  float rest = 0.0f;
  float total() const { return sum16(lanes) + rest; }
};

// The row functions below take the head size as a template argument kD when it is one
// of the common sizes (0: read it from the tables), so that their loops have constant
// trip counts and the row copies become a few vector moves.

template <int64_t kD, typename T>
inline void add_abs(AbsSum& acc, const T* q, int64_t d) {
  if constexpr (kD != 0 && kD % 16 == 0) {
    for (int64_t i = 0; i < kD; i += 16) acc.lanes += abs16(load16_f32(q + i));
  } else {
    acc.rest += l1_norm(q, d);
  }
}

// Rows with at most one nonzero mask entry: a copy of v[r] or of the mean v row.
// This assumes that every logit of the row is bounded (see kLimit); the caller
// checks that afterwards for all such rows of a block at once, and recomputes them
// with full_row when it fails. Returns false, having written nothing, when the row
// needs the full path anyway (a logit that is NaN or inf).
template <int64_t kD, typename T>
inline bool shortcut_row(const T* q, const RowPlan& p, const HeadTables<T>& t, int64_t bh,
                         const T* v, float scale, T* out) {
  const int64_t d = kD ? kD : t.d;
  float s = 0.0f;
  if (p.nnz == 1) {
    const float dot = dot_row<kD>(q, t.k + (bh * t.R + p.idx[0]) * d, d);
    s = (dot * scale) * p.val[0];
  }
  if (s == 0.0f || s == -FLT_MAX) {  // every logit is -FLT_MAX: uniform weights
    copy_row(out, t.vmean.data() + bh * d, d);
    return true;
  }
  if (!std::isfinite(s)) return false;
  copy_row(out, v + (bh * t.R + p.idx[0]) * d, d);
  return true;
}

// q[r] . k[idx[r]] for sixteen rows r of one head (q: the first row; k: the head's
// float32 k), row r in lane r; and the copy of v[idx[r]] (v: the head's v) into out
// row r, made before the caller knows whether the rows may take it (when not, the
// caller writes every row again). Copying as each row's q is read keeps the stream of
// q reads and the stream of out writes in flight together: copies after all sixteen
// dot products were 11 % slower (fp32, L = 1024, one thread).
//
// Each row's products are summed to one lane by a transposing tree of pair sums
// (vec16.h), 15 merges for 16 rows where sixteen separate horizontal sums would cost
// four shuffles and adds each. The merge order leaves row bitrev(j) in lane j, so the
// rows are taken in bit-reversed order and come out in order. Raises max_q, lane-wise,
// to the largest |q| of the rows.
template <int64_t kD, typename T>
__attribute__((always_inline)) inline f32x16 onehot_dots16(const T* q, const int32_t* idx,
                                                           const float* k, const T* v,
                                                           f32x16& max_q, T* out) {
#if defined(__AVX512F__)
  constexpr int kBitrev[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  f32x16 prod[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    const int r = kBitrev[j];
    const T* qr = q + r * kD;
    const float* kr = k + int64_t(idx[r]) * kD;
    copy_row(out + r * kD, v + int64_t(idx[r]) * kD, kD);
    f32x16 acc = {}, row_max = {};
    for (int64_t i = 0; i < kD; i += 16) {
      const f32x16 qv = load16_f32(qr + i);
      acc += qv * load16(kr + i);
      row_max = lanemax16(abs16(qv), row_max);
    }
    max_q = lanemax16(row_max, max_q);
    prod[j] = acc;
  }
  f32x16 m8[8], m4[4], m2[2];
  for (int i = 0; i < 8; ++i) m8[i] = pair_sum8(prod[2 * i], prod[2 * i + 1]);
  for (int i = 0; i < 4; ++i) m4[i] = pair_sum4(m8[2 * i], m8[2 * i + 1]);
  for (int i = 0; i < 2; ++i) m2[i] = pair_sum2(m4[2 * i], m4[2 * i + 1]);
  return pair_sum1(m2[0], m2[1]);
#else
  // Sixteen 16-lane products would need 32 of the 16 ymm registers and spill; two
  // trees of eight 8-lane rows fit.
  auto eight_rows = [&](const T* q8, const int32_t* idx8, f32x8& max8_q, T* out8) {
    constexpr int kBitrev8[8] = {0, 4, 2, 6, 1, 5, 3, 7};
    f32x8 prod[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const int r = kBitrev8[j];
      const T* qr = q8 + r * kD;
      const float* kr = k + int64_t(idx8[r]) * kD;
      copy_row(out8 + r * kD, v + int64_t(idx8[r]) * kD, kD);
      // The row's max starts from its first chunk rather than from 0 (two operations
      // fewer). A NaN there can hide the row's other chunks from max8_q, but then the
      // row's logit is NaN and the group is refused anyway.
      const f32x8 q0 = in_register(load8_f32(qr));
      f32x8 acc = q0 * load8(kr), row_max = abs8(q0);
      for (int64_t i = 8; i < kD; i += 8) {
        const f32x8 qv = in_register(load8_f32(qr + i));
        acc += qv * load8(kr + i);
        row_max = lanemax8(abs8(qv), row_max);
      }
      max8_q = lanemax8(row_max, max8_q);
      prod[j] = acc;
    }
    f32x8 m4[4], m2[2];
    for (int i = 0; i < 4; ++i) m4[i] = pair_sum4(prod[2 * i], prod[2 * i + 1]);
    for (int i = 0; i < 2; ++i) m2[i] = pair_sum2(m4[2 * i], m4[2 * i + 1]);
    return pair_sum1(m2[0], m2[1]);
  };
  const f32x8 lo = eight_rows(q, idx, max_q.lo, out);
  return {lo, eight_rows(q + 8 * kD, idx + 8, max_q.hi, out + 8 * kD)};
#endif
}

// Sixteen rows of one head whose mask rows are all one-hot (OneHotRows below): the
// shortcut_row of each, with the sixteen dot products computed side by side.
// Returns false when some row needs more than a copy of v[r] (a logit that is exactly
// 0 or not finite), or when the rows' largest |q| times group_bound (d * max|k| *
// |scale|) does not prove every logit of the rows bounded (see kLimit). Out's rows may
// then hold wrong copies, and the caller computes each row again.
//
// The bound is checked here, rather than summed for a later check: a quantity used
// only after the branch is computed after it, and GCC then kept all sixteen rows of q
// on the stack across the branch (64 spills and reloads a group).
template <int64_t kD, typename T>
inline bool onehot_rows16(const T* q, const int32_t* idx, const float* val,
                          const HeadTables<T>& t, int64_t bh, const T* v, float scale,
                          float group_bound, T* out) {
  static_assert(kD % 16 == 0 && kD > 0, "sixteen-lane chunks of a row");
  if (any16(load16(val) == 0.0f)) return false;  // a row that is not one-hot
  f32x16 max_q = {};
  const int64_t head = bh * t.R * kD;
  const f32x16 dots = onehot_dots16<kD>(q, idx, t.k + head, v + head, max_q, out);
  const f32x16 s = (dots * scale) * load16(val);
  // A row needs more than the copy when its logit is 0 (the zero rule masks it too)
  // or not finite (s - s is NaN exactly then). max_q holds no NaN (lanemax drops
  // them; a NaN in q makes its row's logit NaN anyway).
  return !any16((s == 0.0f) | ((s - s) != 0.0f) | (max_q * group_bound > float(kLimit)));
}

// Rows with 2..kSparse nonzero mask entries: the other logits are -FLT_MAX, so with
// mx the largest logit, they get exp(-FLT_MAX - mx) = 0 unless mx is -FLT_MAX too.
// scratch: d floats. Returns false, having written nothing, when the row needs the
// full path.
template <int64_t kD, typename T>
inline bool sparse_row(const T* q, const RowPlan& p, const HeadTables<T>& t, int64_t bh,
                       float scale, double bound, float* scratch, T* out) {
  const int64_t d = kD ? kD : t.d;
  const int64_t dp = t.dp;
  if (!(double(l1_norm(q, d)) * bound <= kLimit)) return false;  // NaN fails too
  float* qf = scratch;
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) qf[i] = facegen::load_f32(q[i]);
  const float* k = t.k + bh * t.R * d;
  // Unused lanes hold -inf: weight 0 in the kSparse-wide exp below.
  float logit[kSparse] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  float mx = -FLT_MAX;
  for (int a = 0; a < p.nnz; ++a) {
    const float dot = dot_row<kD>(qf, k + int64_t(p.idx[a]) * d, d);
    float s = (dot * scale) * p.val[a];
    if (!std::isfinite(s)) return false;
    s = s == 0.0f ? -FLT_MAX : s;
    logit[a] = s;
    mx = std::max(mx, s);
  }
  if (mx == -FLT_MAX) {  // every logit is -FLT_MAX: uniform weights
    copy_row(out, t.vmean.data() + bh * d, d);
    return true;
  }
  float weight[kSparse];
#pragma omp simd
  for (int a = 0; a < kSparse; ++a) weight[a] = facegen::exp_f32(logit[a] - mx);
  const float inv_sum = 1.0f / ((weight[0] + weight[1]) + (weight[2] + weight[3]));
  const float* v = t.v.get() + bh * t.R * dp;
  for (int64_t i0 = 0; i0 < d; i0 += kBlock) {
    f32x16 acc0 = {}, acc1 = {};
    for (int a = 0; a < p.nnz; ++a) {
      const float* vr = v + int64_t(p.idx[a]) * dp + i0;
      acc0 += weight[a] * load16(vr);
      acc1 += weight[a] * load16(vr + 16);
    }
    float acc[kBlock];
    store16(acc, acc0 * inv_sum);
    store16(acc + 16, acc1 * inv_sum);
    const int64_t w = std::min(kBlock, d - i0);
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) facegen::store_f32(out + i0 + i, acc[i]);
  }
  return true;
}

// A mask row as floats, zero padded to Rp, as full_row takes it.
template <typename T>
void widen_mask_row(const T* m, int64_t R, int64_t Rp, float* mf) {
#pragma omp simd
  for (int64_t j = 0; j < R; ++j) mf[j] = facegen::load_f32(m[j]);
  std::fill(mf + R, mf + Rp, 0.0f);
}

// The reference's math for one (row, head) in float32, for any row. mf: the mask row
// from widen_mask_row. scratch: d + Rp floats.
template <typename T>
void full_row(const T* q, const float* mf, const HeadTables<T>& t, int64_t bh, float scale,
              float* scratch, T* out) {
  const int64_t R = t.R, d = t.d, Rp = t.Rp, dp = t.dp;
  float* qf = scratch;         // [d]
  float* logits = qf + d;      // [Rp]
  const float* kt = t.kt.get() + bh * d * Rp;
  const float* v = t.v.get() + bh * R * dp;

#pragma omp simd
  for (int64_t i = 0; i < d; ++i) qf[i] = facegen::load_f32(q[i]);
  // logits = q @ k^T, kBlock logits at a time, as rank-one updates along d. Four
  // consecutive i go to separate accumulators (eight chains of FMAs in flight).
  for (int64_t j0 = 0; j0 < Rp; j0 += kBlock) {
    f32x16 lo[4] = {}, hi[4] = {};
    int64_t i = 0;
    for (; i + 3 < d; i += 4) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const float* kr = kt + (i + u) * Rp + j0;
        lo[u] += qf[i + u] * load16(kr);
        hi[u] += qf[i + u] * load16(kr + 16);
      }
    }
    for (; i < d; ++i) {
      const float* kr = kt + i * Rp + j0;
      lo[0] += qf[i] * load16(kr);
      hi[0] += qf[i] * load16(kr + 16);
    }
    store16(logits + j0, (lo[0] + lo[1]) + (lo[2] + lo[3]));
    store16(logits + j0 + 16, (hi[0] + hi[1]) + (hi[2] + hi[3]));
  }

  // The mask and the zero rule; adding t.pad turns the padding lanes into -inf, so
  // their weight is 0. (A padding logit is NaN only when q or scale is not finite, and
  // then the reference's row is all NaN as well.) Whole blocks of kBlock lanes keep
  // these loops free of remainder code; the max and the sum are taken with vector
  // operations and one tree reduction each.
  const float* pad = t.pad.data();
  for (int64_t j0 = 0; j0 < Rp; j0 += kBlock) {
#pragma omp simd
    for (int64_t j = j0; j < j0 + kBlock; ++j) {
      const float s = (logits[j] * scale) * mf[j];
      logits[j] = (s == 0.0f ? -FLT_MAX : s) + pad[j];
    }
  }
  // A NaN or +inf logit makes the sum NaN below, so every weight is NaN as in the
  // reference; the max (which skips NaN) only has to be right for finite rows.
  f32x16 top = load16(logits);
  for (int64_t j = 16; j < Rp; j += 16) {
    const f32x16 s = load16(logits + j);
    top = select16(s > top, s, top);
  }
  const float mx = max16(top);
  for (int64_t j0 = 0; j0 < Rp; j0 += kBlock) {
#pragma omp simd
    for (int64_t j = j0; j < j0 + kBlock; ++j) logits[j] = facegen::exp_f32(logits[j] - mx);
  }
  f32x16 total = load16(logits);
  for (int64_t j = 16; j < Rp; j += 16) total += load16(logits + j);
  const float inv_sum = 1.0f / sum16(total);

  // out = (exp(logits) @ v) / sum over all R rows (zero weights too: 0 * inf must
  // give NaN), with four consecutive j in separate accumulators.
  for (int64_t i0 = 0; i0 < d; i0 += kBlock) {
    f32x16 lo[4] = {}, hi[4] = {};
    int64_t j = 0;
    for (; j + 3 < R; j += 4) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        const float* vr = v + (j + u) * dp + i0;
        lo[u] += logits[j + u] * load16(vr);
        hi[u] += logits[j + u] * load16(vr + 16);
      }
    }
    for (; j < R; ++j) {
      const float* vr = v + j * dp + i0;
      lo[0] += logits[j] * load16(vr);
      hi[0] += logits[j] * load16(vr + 16);
    }
    float acc[kBlock];
    store16(acc, ((lo[0] + lo[1]) + (lo[2] + lo[3])) * inv_sum);
    store16(acc + 16, ((hi[0] + hi[1]) + (hi[2] + hi[3])) * inv_sum);
    const int64_t w = std::min(kBlock, d - i0);
#pragma omp simd
    for (int64_t i = 0; i < w; ++i) facegen::store_f32(out + i0 + i, acc[i]);
  }
}

// What every head needs of rows [l0, l0 + rows) of image b (plans: their plans): the
// mask rows of the full path, widened, into mask_rows (rows * Rp floats); and the
// one-hot entries as arrays, for onehot_rows16. Returns how many leading rows come in
// whole groups of sixteen (0 when the head size is not a multiple of 16, which the
// group path needs).
template <int64_t kD, typename T>
int64_t prepare_rows(const T* mrows, int64_t R, int64_t Rp, int64_t rows, const RowPlan* plans,
                     float* mask_rows, int32_t* onehot_idx, float* onehot_val) {
  for (int64_t l = 0; l < rows; ++l) {
    if (plans[l].nnz > kSparse) widen_mask_row(mrows + l * R, R, Rp, mask_rows + l * Rp);
  }
  if constexpr (kD % 16 == 0 && kD > 0) {
    for (int64_t l = 0; l < rows; ++l) {
      onehot_idx[l] = plans[l].idx[0];
      onehot_val[l] = plans[l].nnz == 1 ? plans[l].val[0] : 0.0f;
    }
    return rows / 16 * 16;
  }
  return 0;
}

// One work unit: rows [l0, l0 + rows) of image b and head h, with the arrays that
// prepare_rows made of those rows. Without the softmax tables (no row of the whole
// call has two or more nonzero mask entries), shortcut rows that cannot all be taken
// set redo and are left for redo_rows. scratch: d + 2 * Rp floats.
template <int64_t kD, typename T>
void attention_rows(const T* q, const T* v, const T* mask, T* out, const HeadTables<T>& t,
                    int64_t b, int64_t h, int64_t H, int64_t L, int64_t l0, int64_t rows,
                    const RowPlan* plans, float scale, float* scratch, const float* mask_rows,
                    const int32_t* onehot_idx, const float* onehot_val, int64_t groups_end,
                    char& redo) {
  const int64_t d = kD ? kD : t.d;
  const int64_t R = t.R, Rp = t.Rp;
  const bool softmax = t.has_softmax_tables();
  const T* mrows = mask + (b * L + l0) * R;
  float* fallback_mask = scratch + d + Rp;  // for rows that only fall back to full_row
  const int64_t bh = b * H + h;
  const T* qh = q + (bh * L + l0) * d;
  T* oh = out + (bh * L + l0) * d;
  const double bound = double(t.kbound[bh]) * std::fabs(double(scale));
  // d * max|k| * |scale|: with a row's largest |q|, a bound on its logits. NaN (a
  // zero scale times an infinite kbound) becomes +inf like an overflow, so that no
  // group passes on it; a group whose q is all zero has zero logits and fails anyway.
  const double group_bound_d = double(d) * bound;
  const float group_bound = group_bound_d <= kLimit ? float(group_bound_d) : INFINITY;
  // One streaming pass over the rows. The shortcut rows outside the groups sum |q| as
  // they go, and are checked against the bound together at the end.
  AbsSum abs_sum;
  bool shortcuts = false;
  redo = 0;
  for (int64_t l = 0; l < rows; ++l) {
    if constexpr (kD % 16 == 0 && kD > 0) {
      // A zero onehot_val marks a row that is not one-hot: its group takes the row
      // path (as does a group with a row whose logit needs more than a copy, and the
      // row path then writes each of its rows again, now or in redo_rows).
      if (l % 16 == 0 && l < groups_end &&
          onehot_rows16<kD>(qh + l * d, onehot_idx + l, onehot_val + l, t, bh, v, scale,
                            group_bound, oh + l * d)) {
        shortcuts = true;
        l += 15;
        continue;
      }
    }
    const T* qr = qh + l * d;
    T* orow = oh + l * d;
    const RowPlan& p = plans[l];
    const float* mf = mask_rows + l * Rp;
    if (p.nnz <= 1) {
      add_abs<kD>(abs_sum, qr, d);
      if (shortcut_row<kD>(qr, p, t, bh, v, scale, orow)) {
        shortcuts = true;
        continue;
      }
      if (!softmax) {
        redo = 1;
        continue;
      }
      widen_mask_row(mrows + l * R, R, Rp, fallback_mask);
      mf = fallback_mask;
    } else if (p.nnz <= kSparse) {
      if (sparse_row<kD>(qr, p, t, bh, scale, bound, scratch, orow)) continue;
      widen_mask_row(mrows + l * R, R, Rp, fallback_mask);
      mf = fallback_mask;
    }
    full_row(qr, mf, t, bh, scale, scratch, orow);
  }
  // Huge or non-finite q, k or v: a logit that the mask zeroes may not become 0 (it
  // can be NaN), so the shortcuts may be wrong. Recompute those rows exactly.
  if (shortcuts && !(double(abs_sum.total()) * bound <= kLimit)) {
    if (!softmax) {
      redo = 1;
      return;
    }
    for (int64_t l = 0; l < rows; ++l) {
      if (plans[l].nnz > 1) continue;
      widen_mask_row(mrows + l * R, R, Rp, fallback_mask);
      full_row(qh + l * d, fallback_mask, t, bh, scale, scratch, oh + l * d);
    }
  }
}

// Recomputes with full_row the shortcut rows of one work item and head.
template <typename T>
void redo_rows(const T* q, const T* mask, T* out, const HeadTables<T>& t, int64_t b, int64_t h,
               int64_t H, int64_t L, int64_t l0, int64_t rows, const RowPlan* plans,
               float scale, float* scratch) {
  const int64_t d = t.d, R = t.R, bh = b * H + h;
  float* mf = scratch + d + t.Rp;
  for (int64_t l = l0; l < l0 + rows; ++l) {
    if (plans[l - l0].nnz > 1) continue;
    widen_mask_row(mask + (b * L + l) * R, R, t.Rp, mf);
    full_row(q + (bh * L + l) * d, mf, t, bh, scale, scratch, out + (bh * L + l) * d);
  }
}

// Rows per work unit (a unit: a block of rows of one image and one head), at most
// kMaxBlock, and at least 4 or L (the redo array is sized on that). Without rows of
// the full path the work is a stream through q and out; a unit's rows are one
// contiguous stretch of each and the hardware prefetchers restart at every new
// stretch, so blocks are long and shortened only when there would be fewer units
// than threads. (Blocks shortened to four per thread per image, as the full path
// has them, were 128 rows at L = 1024 and 8 at L = 64, too few for sixteen-row
// groups: 4 % and 35 % slower.) The full path reads a block's widened mask rows
// (block * Rp floats) again for every head, and there blocks of an eighth of an image
// at two threads keep them in L1 (at L = 1024, 512-row blocks were 23 % slower).
constexpr int64_t kMaxBlock = 512;

inline int64_t rows_per_unit(int64_t B, int64_t L, int64_t H, int64_t threads,
                             bool full_rows) {
  if (full_rows) {
    int64_t block = kMaxBlock;  // powers of two, down to 4
    while (block > 4 && B * ceil_div(L, block) < 4 * threads) block /= 2;
    return block;
  }
  int64_t block = std::min(L, kMaxBlock);  // down to 9 when above 16
  while (block > 16 && B * ceil_div(L, block) * H < threads) block = ceil_div(block, 2);
  return block;
}

template <typename T>
void attention_kernel(const T* q, const T* k, const T* v, const T* mask, T* out, int64_t B,
                      int64_t H, int64_t L, int64_t R, int64_t d, float scale) {
  HeadTables<T> tables(k, v, B * H, R, d);
  // Left uninitialized: plan_row sets every field that is read (zeroing them first
  // cost about 2 us a call at L = 1024, on one thread before the parallel region).
  std::unique_ptr<RowPlan[]> plans(new RowPlan[B * L]);
  const int64_t threads = omp_get_max_threads();
  // Per unit, whether its shortcut rows need redo_rows; sized for the smallest blocks
  // so that the threads need not wait for one to size it.
  std::vector<char> redo(B * ceil_div(L, 4) * H, 0);
  int64_t multi = 0, redos = 0;

  // One parallel region (its barriers cost less than separate regions' fork and
  // join, which matters at the small shapes): plan every mask row once for all heads,
  // fill the per-head tables, and the softmax tables only when some row has two or
  // more nonzero mask entries; then the rows.
#pragma omp parallel
  {
    // Per-thread arrays, left uninitialized (prepare_rows writes what is read).
    std::vector<float> scratch(d + 2 * tables.Rp);
    std::unique_ptr<float[]> mask_rows(new float[kMaxBlock * tables.Rp]);
    std::unique_ptr<int32_t[]> onehot_idx(new int32_t[kMaxBlock]);
    std::unique_ptr<float[]> onehot_val(new float[kMaxBlock]);
#pragma omp for schedule(static) reduction(+ : multi)
    for (int64_t row = 0; row < B * L; ++row) {
      plan_row(mask + row * R, R, plans[row]);
      multi += plans[row].nnz > 1;
    }
    // Every thread derives the same blocks from the reduced multi.
    const int64_t block = rows_per_unit(B, L, H, threads, multi > 0);
    const int64_t blocks = ceil_div(L, block);
    const int64_t items = B * blocks;  // (image, block) pairs; unit = item * H + head
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) tables.fill_head(bh, scratch.data());
    if (multi > 0) {
#pragma omp single
      tables.allocate_softmax_tables();
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < B * H; ++bh) tables.fill_softmax_head(bh);
    }

    // A thread's units come in order, so it prepares the rows of an item once for
    // the consecutive heads it takes of it.
    int64_t prepared = -1, groups_end = 0;
#pragma omp for schedule(static) reduction(+ : redos)
    for (int64_t unit = 0; unit < items * H; ++unit) {
      const int64_t item = unit / H, h = unit % H;
      const int64_t b = item / blocks;
      const int64_t l0 = (item % blocks) * block;
      const int64_t rows = std::min(L, l0 + block) - l0;
      const RowPlan* item_plans = plans.get() + b * L + l0;
      auto run = [&](auto kd) {
        constexpr int64_t kD = decltype(kd)::value;
        if (item != prepared) {
          groups_end = prepare_rows<kD>(mask + (b * L + l0) * R, R, tables.Rp, rows,
                                        item_plans, mask_rows.get(), onehot_idx.get(),
                                        onehot_val.get());
          prepared = item;
        }
        attention_rows<kD>(q, v, mask, out, tables, b, h, H, L, l0, rows, item_plans, scale,
                           scratch.data(), mask_rows.get(), onehot_idx.get(),
                           onehot_val.get(), groups_end, redo[unit]);
      };
      if (d == 32) {
        run(std::integral_constant<int64_t, 32>{});
      } else if (d == 64) {
        run(std::integral_constant<int64_t, 64>{});
      } else {
        run(std::integral_constant<int64_t, 0>{});
      }
      redos += redo[unit];
    }

    // Rows the shortcuts could not take while the softmax tables were not built (only
    // with huge or non-finite inputs): build them now and recompute those rows.
    if (redos > 0) {
#pragma omp single
      tables.allocate_softmax_tables();
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < B * H; ++bh) tables.fill_softmax_head(bh);
#pragma omp for schedule(static)
      for (int64_t item = 0; item < items; ++item) {
        const int64_t b = item / blocks;
        const int64_t l0 = (item % blocks) * block;
        const int64_t rows = std::min(L, l0 + block) - l0;
        for (int64_t h = 0; h < H; ++h) {
          if (!redo[item * H + h]) continue;
          redo_rows(q, mask, out, tables, b, h, H, L, l0, rows, plans.get() + b * L + l0, scale,
                    scratch.data());
        }
      }
    }
  }
}

}  // namespace

#pragma GCC pop_options

namespace {

// Raises ValueError or TypeError naming the argument at fault.
void check_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                const at::Tensor& mask) {
  facegen::check_input(kOp, "q", q, 4);
  facegen::check_input(kOp, "k", k, 4);
  facegen::check_input(kOp, "v", v, 4);
  facegen::check_input(kOp, "mask", mask, 3);
  facegen::check_same_dtype(kOp, "k", k, "q", q);
  facegen::check_same_dtype(kOp, "v", v, "q", q);
  facegen::check_same_dtype(kOp, "mask", mask, "q", q);
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), d = q.size(3);
  const int64_t R = k.size(2);
  TORCH_CHECK_VALUE(k.size(0) == B && k.size(1) == H && k.size(3) == d, kOp,
                    ": k must have shape (B, h, R, d) = (", B, ", ", H, ", R, ", d,
                    ") matching q, got ", k.sizes());
  TORCH_CHECK_VALUE(v.sizes() == k.sizes(), kOp, ": v must have the shape of k ", k.sizes(),
                    ", got ", v.sizes());
  TORCH_CHECK_VALUE(R > 0, kOp, ": k has no tokens (R = 0)");
  TORCH_CHECK_VALUE(mask.size(0) == B && mask.size(1) == L && mask.size(2) == R, kOp,
                    ": mask must have shape (B, L, R) = (", B, ", ", L, ", ", R, "), got ",
                    mask.sizes());
}

// masked_cross_attention on inputs that check_args passed.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask, double scale) {
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), d = q.size(3);
  const int64_t R = k.size(2);
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const at::Tensor mc = mask.contiguous();
  const float s = float(scale);
  if (q.scalar_type() == at::kFloat) {
    attention_kernel(facegen::raw_ptr<const float>(qc), facegen::raw_ptr<const float>(kc),
                     facegen::raw_ptr<const float>(vc), facegen::raw_ptr<const float>(mc),
                     facegen::raw_ptr<float>(out), B, H, L, R, d, s);
  } else {
    attention_kernel(facegen::raw_ptr<const bf16_bits>(qc), facegen::raw_ptr<const bf16_bits>(kc),
                     facegen::raw_ptr<const bf16_bits>(vc), facegen::raw_ptr<const bf16_bits>(mc),
                     facegen::raw_ptr<bf16_bits>(out), B, H, L, R, d, s);
  }
  return out;
}

}  // namespace

// q: [B, h, L, d]; k, v: [B, h, R, d]; mask: [B, L, R]; one dtype (float32 or
// bfloat16), any strides. Returns softmax_R(mask-filtered q k^T * scale) @ v with
// the reference's zero-logit rule, as a contiguous [B, h, L, d] tensor of q's dtype.
at::Tensor masked_cross_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask, double scale) {
  check_args(q, k, v, mask);
  return attention(q, k, v, mask, scale);
}

// The public function's call in plain eager mode (direct_call.h): the kernel's result,
// or None for the Python route, which converts a mask of another dtype, sends other
// dtypes to the reference and reports bad inputs. scale: None for d ** -0.5.
std::optional<at::Tensor> masked_cross_attention_eager(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v,
                                                       const at::Tensor& mask,
                                                       std::optional<double> scale) {
  if (!facegen::direct_call_allowed({&q, &k, &v, &mask}) ||
      !facegen::checks_pass([&] { check_args(q, k, v, mask); })) {
    return std::nullopt;
  }
  const std::optional<double> s = facegen::scale_or_default(scale, q.size(3));
  if (!s) return std::nullopt;
  return attention(q, k, v, mask, *s);
}

void register_masked_cross_attention(pybind11::module_& m) {
  m.def("masked_cross_attention", &masked_cross_attention, pybind11::arg("q"),
        pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("mask"), pybind11::arg("scale"),
        R"doc(SCA-DM masked cross-attention with the reference's semantics.

q: [B, h, L, d]; k, v: [B, h, R, d]; mask: [B, L, R] (shared by the heads); all one
dtype (float32 or bfloat16), any strides. Logits (q . k) * scale * mask; logits exactly
0 become -FLT_MAX; softmax over R in float32; times v. Rows whose mask has at most one
nonzero entry take an exact shortcut (a copy of one v row or of the mean v row).
Returns a contiguous [B, h, L, d] tensor of q's dtype.)doc");
  m.def("masked_cross_attention_eager", &masked_cross_attention_eager, pybind11::arg("q"),
        pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("mask"),
        pybind11::arg("scale") = pybind11::none(),
        "masked_cross_attention for a plain eager call, or None when the call must go "
        "through the custom op (facegen_rt.ops.masked_cross_attention decides).");
}
