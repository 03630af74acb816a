// SCA-DM masked cross-attention on CUDA, with the semantics of
// masked_cross_attention_reference:
//   sim = (q . k) * scale * mask;  sim[sim == 0] = -FLT_MAX;  out = softmax_R(sim) @ v
// q [B, h, L, d], k and v [B, h, R, d], mask [B, L, R] shared by the heads.
//
// Status: compile-checked only (nvcc -ptx for sm_80 and sm_90). It is not yet wired
// into a torch extension: the CPU build of torch on the development machine cannot
// build CUDA extensions, and no GPU was available to run it. The CPU kernel
// (masked_cross_attention.cpp) is the tested implementation; this file carries the
// same semantics for a future native CUDA backend.
//
// Plain CUDA C++ (no torch headers); contiguous float or __nv_bfloat16 tensors,
// float32 arithmetic. One thread block per (image, tile of kTile query rows) handles
// all heads, so each mask row is classified once:
// * one nonzero entry r: every other logit is -FLT_MAX and the softmax is exactly
//   one-hot, so out = v[r]; unless the surviving logit is exactly 0 (masked too: out =
//   mean of the v rows). One warp-reduced dot product per (row, head) decides.
// * no nonzero entry: out = mean of the v rows.
// * otherwise: the full softmax over R, one warp per (row, head).
// The shortcuts need the logits that the mask zeroes to be finite before the mask
// (NaN * 0 stays NaN in the reference); |q . k_j| <= sum|q| * max|k| checks it, and
// rows that fail the check, or heads whose k or v hold a NaN or inf, take the
// general path, which follows the reference in every case.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "cuda_convert.cuh"

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;           // query rows per block
constexpr int kEmptyRow = -1;       // mask row of zeros
constexpr int kGeneralRow = -2;     // two or more nonzero entries

using facegen_cuda::from_f32;
using facegen_cuda::to_f32;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Max of v over the block, returned to every thread. scratch: kWarps floats.
__device__ float block_max(float v, float* scratch) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kWarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// The reference's math for one (row, head), run by one warp. qbuf: d floats and
// weights: R floats, both private to the warp. Every lane gets the same `sum`, so
// the warp stays converged.
template <typename T>
__device__ void general_row(const T* __restrict__ qr, const T* __restrict__ mrow,
                            const T* __restrict__ kh, const T* __restrict__ vh, int R, int d,
                            float scale, float* qbuf, float* weights, T* __restrict__ orow) {
  const int lane = threadIdx.x % 32;
  for (int i = lane; i < d; i += 32) qbuf[i] = to_f32(qr[i]);
  __syncwarp();
  float mx = -INFINITY;
  for (int j = lane; j < R; j += 32) {
    float dot = 0.0f;
    for (int i = 0; i < d; ++i) dot = fmaf(qbuf[i], to_f32(kh[j * d + i]), dot);
    float s = (dot * scale) * to_f32(mrow[j]);
    s = s == 0.0f ? -FLT_MAX : s;
    weights[j] = s;
    mx = fmaxf(mx, s);
  }
  // fmaxf drops NaN, but a NaN (or +inf) logit makes the sum NaN, so every weight
  // is NaN as in the reference.
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j < R; j += 32) {
    const float e = expf(weights[j] - mx);
    weights[j] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  __syncwarp();
  for (int i = lane; i < d; i += 32) {
    float acc = 0.0f;
    // No skipping of zero weights: 0 * inf must give NaN as in the reference.
    for (int j = 0; j < R; ++j) acc = fmaf(weights[j] / sum, to_f32(vh[j * d + i]), acc);
    orow[i] = from_f32<T>(acc);
  }
  __syncwarp();  // qbuf and weights are reused by the warp's next row
}

// grid = (ceil(L / kTile), B). Dynamic shared memory: (d + kWarps * (d + R)) floats.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    masked_cross_attention_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                  const T* __restrict__ v, const T* __restrict__ mask,
                                  T* __restrict__ out, int H, int L, int R, int d, float scale) {
  extern __shared__ float smem[];
  float* vmean = smem;                                    // [d]
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  float* qbuf = smem + d + warp * (d + R);                // [d] per warp
  float* weights = qbuf + d;                              // [R] per warp
  __shared__ int kind[kTile];
  __shared__ float scratch[kWarps];

  const int b = blockIdx.y;
  const int l0 = blockIdx.x * kTile;
  const int rows = min(kTile, L - l0);
  const T* mtile = mask + (int64_t(b) * L + l0) * R;

  // Each mask row is classified once for all heads.
  for (int t = threadIdx.x; t < rows; t += kThreads) {
    int found = kEmptyRow;
    for (int j = 0; j < R; ++j) {
      if (to_f32(mtile[int64_t(t) * R + j]) != 0.0f) {  // NaN counts as nonzero
        if (found != kEmptyRow) {
          found = kGeneralRow;
          break;
        }
        found = j;
      }
    }
    kind[t] = found;
  }

  for (int h = 0; h < H; ++h) {
    const int64_t bh = int64_t(b) * H + h;
    const T* kh = k + bh * R * d;
    const T* vh = v + bh * R * d;
    __syncthreads();  // kind[] written; vmean of the previous head no longer read

    // Per-head quantities: the mean v row and max|k| (+inf when k or v is not finite).
    for (int i = threadIdx.x; i < d; i += kThreads) {
      float s = 0.0f;
      for (int j = 0; j < R; ++j) s += to_f32(vh[j * d + i]);
      vmean[i] = s / float(R);
    }
    float kmax = 0.0f;
    bool finite = true;
    for (int e = threadIdx.x; e < R * d; e += kThreads) {
      const float kv = to_f32(kh[e]);
      const float vv = to_f32(vh[e]);
      finite = finite && isfinite(kv) && isfinite(vv);
      kmax = fmaxf(kmax, fabsf(kv));
    }
    const float kbound = block_max(finite ? kmax : INFINITY, scratch);  // syncs: vmean ready
    const float bound = kbound * fabsf(scale);

    for (int t = warp; t < rows; t += kWarps) {
      const int64_t row = bh * L + l0 + t;
      const T* qr = q + row * d;
      T* orow = out + row * d;
      const T* mrow = mtile + int64_t(t) * R;
      const int r = kind[t];
      if (r != kGeneralRow) {
        float dot = 0.0f, qabs = 0.0f;
        for (int i = lane; i < d; i += 32) {
          const float qi = to_f32(qr[i]);
          qabs += fabsf(qi);
          if (r >= 0) dot = fmaf(qi, to_f32(kh[r * d + i]), dot);
        }
        dot = warp_sum(dot);
        qabs = warp_sum(qabs);
        // Warp-uniform from here: every lane holds the same dot and qabs. A NaN or
        // overflowing bound fails the comparison and takes the general path.
        if (qabs * bound <= 0.25f * FLT_MAX) {
          const float s = r >= 0 ? (dot * scale) * to_f32(mrow[r]) : 0.0f;
          if (s == 0.0f) {
            for (int i = lane; i < d; i += 32) orow[i] = from_f32<T>(vmean[i]);
            continue;
          }
          if (isfinite(s) && s != -FLT_MAX) {
            for (int i = lane; i < d; i += 32) orow[i] = vh[r * d + i];
            continue;
          }
        }
      }
      general_row(qr, mrow, kh, vh, R, d, scale, qbuf, weights, orow);
    }
  }
}

template <typename T>
cudaError_t launch(const T* q, const T* k, const T* v, const T* mask, T* out, int64_t batch,
                   int64_t heads, int64_t L, int64_t R, int64_t d, float scale,
                   cudaStream_t stream) {
  if (batch < 0 || heads < 0 || L < 0 || R <= 0 || d <= 0 || batch > 65535 ||
      L > 0x7fffffff || R * d > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  if (batch == 0 || heads == 0 || L == 0) return cudaSuccess;
  const size_t smem = size_t(d + kWarps * (d + R)) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        masked_cross_attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>((L + kTile - 1) / kTile), static_cast<unsigned>(batch));
  masked_cross_attention_kernel<T><<<grid, kThreads, smem, stream>>>(
      q, k, v, mask, out, int(heads), int(L), int(R), int(d), scale);
  return cudaGetLastError();
}

}  // namespace

// q, out: contiguous [batch, heads, L, d]; k, v: [batch, heads, R, d]; mask:
// [batch, L, R], same dtype as q. Returns the launch status.
extern "C" cudaError_t facegen_masked_cross_attention_f32(const float* q, const float* k,
                                                          const float* v, const float* mask,
                                                          float* out, int64_t batch,
                                                          int64_t heads, int64_t L, int64_t R,
                                                          int64_t d, float scale,
                                                          cudaStream_t stream) {
  return launch(q, k, v, mask, out, batch, heads, L, R, d, scale, stream);
}

extern "C" cudaError_t facegen_masked_cross_attention_bf16(
    const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
    const __nv_bfloat16* mask, __nv_bfloat16* out, int64_t batch, int64_t heads, int64_t L,
    int64_t R, int64_t d, float scale, cudaStream_t stream) {
  return launch(q, k, v, mask, out, batch, heads, L, R, d, scale, stream);
}
