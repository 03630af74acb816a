// Fixed-width vector types for the CPU kernels: f32x8 / i32x8 (eight lanes, one ymm or
// two xmm registers), and f32x16 / i32x16 (sixteen lanes) with the operations on them
// that the masked cross-attention kernels use.
//
// With AVX-512 the sixteen-lane types are GCC vector types, one zmm register each.
// Without it no register holds 64 bytes, and GCC 12 then keeps such a type on the
// stack: on an AVX2 CPU a 16-lane axpy compiled to sixteen scalar stores per broadcast
// and a stack round trip per update. So there they are structs of two 8-lane vectors,
// which stay in two ymm registers. Both forms compute the same lanes in the same order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"

// Built for a CPU without AVX-512, GCC notes that passing a 64-byte vector by value
// would change the ABI; these helpers are all inlined, so no call ever does.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace facegen {

typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

#define FACEGEN_INLINE __attribute__((always_inline)) inline

FACEGEN_INLINE f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// v, kept in a register. When registers are scarce, GCC folds the load of a vector that
// two instructions use into both, as memory operands, and reads it twice; this makes
// it load the vector once (one-hot rows of masked cross-attention: 5 % faster on Zen 2).
FACEGEN_INLINE f32x8 in_register(f32x8 v) {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+x"(v));
#endif
  return v;
}

FACEGEN_INLINE f32x8 abs8(f32x8 v) { return (f32x8)((u32x8)v & 0x7FFFFFFFu); }

// Lane-wise max (one vmaxps; a NaN in a is dropped, a NaN in b is kept).
FACEGEN_INLINE f32x8 lanemax8(f32x8 a, f32x8 b) { return a > b ? a : b; }

FACEGEN_INLINE f32x8 load8_f32(const float* p) { return load8(p); }

// 8 bfloat16 values as floats: a bfloat16 is the top half of a float32.
FACEGEN_INLINE f32x8 load8_f32(const bf16_bits* p) {
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  return (f32x8)(__builtin_convertvector(h, u32x8) << 16);
}

// The pair sums of a transposing reduction tree over 8-lane vectors: per slot of 2w
// lanes, [x's two w-lane halves summed | y's two halves summed], for w = 4, 2, 1.
// Three levels (7 merges) leave the sums of 8 vectors in the lanes of one, vector
// bitrev3(j) in lane j.
FACEGEN_INLINE f32x8 pair_sum4(f32x8 x, f32x8 y) {
  return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
}
FACEGEN_INLINE f32x8 pair_sum2(f32x8 x, f32x8 y) {
  return __builtin_shufflevector(x, y, 0, 1, 8, 9, 4, 5, 12, 13) +
         __builtin_shufflevector(x, y, 2, 3, 10, 11, 6, 7, 14, 15);
}
FACEGEN_INLINE f32x8 pair_sum1(f32x8 x, f32x8 y) {
  return __builtin_shufflevector(x, y, 0, 8, 2, 10, 4, 12, 6, 14) +
         __builtin_shufflevector(x, y, 1, 9, 3, 11, 5, 13, 7, 15);
}

#if defined(__AVX512F__)

typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));

FACEGEN_INLINE f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

FACEGEN_INLINE void store16(float* p, f32x16 v) { std::memcpy(p, &v, sizeof v); }

FACEGEN_INLINE f32x8 lo8(f32x16 v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
FACEGEN_INLINE f32x8 hi8(f32x16 v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}
FACEGEN_INLINE i32x8 lo8(i32x16 v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
FACEGEN_INLINE i32x8 hi8(i32x16 v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}
FACEGEN_INLINE f32x16 select16(i32x16 m, f32x16 a, f32x16 b) { return m ? a : b; }
FACEGEN_INLINE f32x16 lanemax16(f32x16 a, f32x16 b) { return a > b ? a : b; }

FACEGEN_INLINE f32x16 abs16(f32x16 v) {
  typedef uint32_t u32x16 __attribute__((vector_size(64)));
  return (f32x16)((u32x16)v & 0x7FFFFFFFu);
}

// 16 bfloat16 values as floats: a bfloat16 is the top half of a float32.
FACEGEN_INLINE f32x16 load16_f32(const bf16_bits* p) {
  typedef uint16_t u16x16 __attribute__((vector_size(32)));
  typedef uint32_t u32x16 __attribute__((vector_size(64)));
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  return (f32x16)(__builtin_convertvector(h, u32x16) << 16);
}

// Pair sums of the transposing reduction tree (see onehot_dots16): per slot of 2w
// lanes, [x's two w-lane halves summed | y's two halves summed], for w = 8, 4, 2, 1.
FACEGEN_INLINE f32x16 pair_sum8(f32x16 x, f32x16 y) {
  return __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
         __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}
FACEGEN_INLINE f32x16 pair_sum4(f32x16 x, f32x16 y) {
  return __builtin_shufflevector(x, y, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
         __builtin_shufflevector(x, y, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
}
FACEGEN_INLINE f32x16 pair_sum2(f32x16 x, f32x16 y) {
  return __builtin_shufflevector(x, y, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
         __builtin_shufflevector(x, y, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
}
FACEGEN_INLINE f32x16 pair_sum1(f32x16 x, f32x16 y) {
  return __builtin_shufflevector(x, y, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
         __builtin_shufflevector(x, y, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
}

#else  // two 8-lane halves: lanes 0-7 in lo, 8-15 in hi

struct f32x16 {
  f32x8 lo, hi;
};
struct i32x16 {
  i32x8 lo, hi;
};

// Member by member: a memcpy of the whole struct goes through the stack.
FACEGEN_INLINE f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v.lo, p, sizeof v.lo);
  std::memcpy(&v.hi, p + 8, sizeof v.hi);
  return v;
}

FACEGEN_INLINE void store16(float* p, f32x16 v) {
  std::memcpy(p, &v.lo, sizeof v.lo);
  std::memcpy(p + 8, &v.hi, sizeof v.hi);
}

FACEGEN_INLINE f32x8 lo8(f32x16 v) { return v.lo; }
FACEGEN_INLINE f32x8 hi8(f32x16 v) { return v.hi; }
FACEGEN_INLINE i32x8 lo8(i32x16 v) { return v.lo; }
FACEGEN_INLINE i32x8 hi8(i32x16 v) { return v.hi; }

FACEGEN_INLINE f32x16 operator+(f32x16 a, f32x16 b) { return {a.lo + b.lo, a.hi + b.hi}; }
FACEGEN_INLINE f32x16 operator-(f32x16 a, f32x16 b) { return {a.lo - b.lo, a.hi - b.hi}; }
FACEGEN_INLINE f32x16 operator*(f32x16 a, f32x16 b) { return {a.lo * b.lo, a.hi * b.hi}; }
FACEGEN_INLINE f32x16 operator*(float a, f32x16 b) { return {a * b.lo, a * b.hi}; }
FACEGEN_INLINE f32x16 operator*(f32x16 a, float b) { return {a.lo * b, a.hi * b}; }
FACEGEN_INLINE f32x16& operator+=(f32x16& a, f32x16 b) {
  a.lo += b.lo;
  a.hi += b.hi;
  return a;
}
FACEGEN_INLINE i32x16 operator==(f32x16 a, float b) { return {a.lo == b, a.hi == b}; }
FACEGEN_INLINE i32x16 operator!=(f32x16 a, float b) { return {a.lo != b, a.hi != b}; }
FACEGEN_INLINE i32x16 operator>(f32x16 a, f32x16 b) { return {a.lo > b.lo, a.hi > b.hi}; }
FACEGEN_INLINE i32x16 operator>(f32x16 a, float b) { return {a.lo > b, a.hi > b}; }
FACEGEN_INLINE i32x16 operator|(i32x16 a, i32x16 b) { return {a.lo | b.lo, a.hi | b.hi}; }
FACEGEN_INLINE f32x16 select16(i32x16 m, f32x16 a, f32x16 b) {
  return {m.lo ? a.lo : b.lo, m.hi ? a.hi : b.hi};
}

FACEGEN_INLINE f32x16 lanemax16(f32x16 a, f32x16 b) {
  return {lanemax8(a.lo, b.lo), lanemax8(a.hi, b.hi)};
}

FACEGEN_INLINE f32x16 abs16(f32x16 v) { return {abs8(v.lo), abs8(v.hi)}; }

// 16 bfloat16 values as floats: a bfloat16 is the top half of a float32.
FACEGEN_INLINE f32x16 load16_f32(const bf16_bits* p) {
  return {load8_f32(p), load8_f32(p + 8)};
}

// Pair sums of the transposing reduction tree (see onehot_dots16): per slot of 2w
// lanes, [x's two w-lane halves summed | y's two halves summed], for w = 8, 4, 2, 1.
// Below w = 8 every slot lies within one 8-lane half, so the halves are merged apart.
FACEGEN_INLINE f32x16 pair_sum8(f32x16 x, f32x16 y) { return {x.lo + x.hi, y.lo + y.hi}; }
FACEGEN_INLINE f32x16 pair_sum4(f32x16 x, f32x16 y) {
  return {pair_sum4(x.lo, y.lo), pair_sum4(x.hi, y.hi)};
}
FACEGEN_INLINE f32x16 pair_sum2(f32x16 x, f32x16 y) {
  return {pair_sum2(x.lo, y.lo), pair_sum2(x.hi, y.hi)};
}
FACEGEN_INLINE f32x16 pair_sum1(f32x16 x, f32x16 y) {
  return {pair_sum1(x.lo, y.lo), pair_sum1(x.hi, y.hi)};
}

#endif

FACEGEN_INLINE f32x16 load16_f32(const float* p) { return load16(p); }

// Sum of the 16 lanes as a tree of halvings: a short dependency chain in registers.
// (Taking the halves with memcpy makes GCC spill the vector to the stack and reload
// it, a store-forwarding stall on every call.)
FACEGEN_INLINE float sum16(f32x16 v) {
  const f32x8 s8 = lo8(v) + hi8(v);
  const f32x4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) +
                   __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// Largest of the 16 lanes, as a tree like sum16 (NaN lanes are skipped).
FACEGEN_INLINE float max16(f32x16 v) {
  const f32x8 lo = lo8(v), hi = hi8(v);
  const f32x8 m8 = hi > lo ? hi : lo;
  const f32x4 lo4 = __builtin_shufflevector(m8, m8, 0, 1, 2, 3);
  const f32x4 hi4 = __builtin_shufflevector(m8, m8, 4, 5, 6, 7);
  const f32x4 m4 = hi4 > lo4 ? hi4 : lo4;
  return std::max(std::max(m4[0], m4[1]), std::max(m4[2], m4[3]));
}

// True when any lane of a comparison result is set.
FACEGEN_INLINE bool any16(i32x16 m) {
  const i32x8 m8 = lo8(m) | hi8(m);
  const i32x4 m4 = __builtin_shufflevector(m8, m8, 0, 1, 2, 3) |
                   __builtin_shufflevector(m8, m8, 4, 5, 6, 7);
  return (m4[0] | m4[1] | m4[2] | m4[3]) != 0;
}

#undef FACEGEN_INLINE

}  // namespace facegen
