// SPADE normalization on CUDA: out = act(GroupNorm(x, groups, eps) * (1 + gamma) + beta).
//
// Status: compile-checked only (nvcc -ptx for sm_80 and sm_90). It is not yet wired
// into a torch extension: the CPU build of torch on the development machine cannot
// build CUDA extensions, and no GPU was available to run it. The CPU kernel
// (spade_norm.cpp) is the tested implementation; this file carries the same math
// for a future native CUDA backend.
//
// Plain CUDA C++ (no torch headers). Inputs are contiguous [B, C, H, W] tensors of
// float or __nv_bfloat16; arithmetic and accumulation in float32.
//
// Design: one thread block per (image, group). In NCHW the group is one contiguous
// run of n = (C / groups) * H * W elements at offset (b * groups + g) * n. The block
// makes two reduction passes (the mean, then the sums of deviations and of their
// squares about it, each a per-thread sum followed by warp shuffles and one
// shared-memory step), then the apply pass. The second and third passes mostly hit
// L2, since a group of one image is a few hundred KB at most in SCA-DM.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_convert.cuh"

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

using facegen_cuda::from_f32;
using facegen_cuda::to_f32;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block, returned to every thread. scratch: kWarps floats.
__device__ float block_sum(float v, float* scratch) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kWarps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// grid.x = B * groups; each block normalizes the n elements of one (image, group).
template <typename T, bool kSilu>
__global__ void __launch_bounds__(kThreads)
    spade_norm_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                      const T* __restrict__ beta, T* __restrict__ out, int64_t n, float eps) {
  __shared__ float scratch[kWarps];
  const int64_t base = int64_t(blockIdx.x) * n;
  x += base;
  gamma += base;
  beta += base;
  out += base;

  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += to_f32(x[i]);
  const float mean0 = block_sum(sum, scratch) / float(n);

  float m2 = 0.0f, drift = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float dev = to_f32(x[i]) - mean0;
    m2 += dev * dev;
    drift += dev;
  }
  m2 = block_sum(m2, scratch);
  drift = block_sum(drift, scratch);
  // drift / n is what rounding left out of the first mean; adding it, and removing
  // drift^2 / n from m2, gives the moments about the exact mean (the corrected
  // two-pass formula), which matters when |mean| is large against the spread.
  const float mean = mean0 + drift / float(n);
  const float var = fmaxf(0.0f, (m2 - drift * drift / float(n)) / float(n));  // biased
  const float rstd = rsqrtf(var + eps);

  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float norm = (to_f32(x[i]) - mean) * rstd;
    float v = fmaf(norm, to_f32(gamma[i]), norm) + to_f32(beta[i]);  // norm * (1 + gamma) + beta
    if (kSilu) v = v / (1.0f + expf(-v));
    out[i] = from_f32<T>(v);
  }
}

template <typename T>
cudaError_t launch(const T* x, const T* gamma, const T* beta, T* out, int64_t batch,
                   int64_t channels, int64_t hw, int64_t groups, float eps, int silu,
                   cudaStream_t stream) {
  if (batch < 0 || channels <= 0 || hw < 0 || groups <= 0 || channels % groups != 0 ||
      !(eps > 0.0f) || batch * groups > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  const int64_t runs = batch * groups;
  const int64_t n = channels / groups * hw;
  if (runs == 0 || n == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(runs));
  if (silu) {
    spade_norm_kernel<T, true><<<grid, kThreads, 0, stream>>>(x, gamma, beta, out, n, eps);
  } else {
    spade_norm_kernel<T, false><<<grid, kThreads, 0, stream>>>(x, gamma, beta, out, n, eps);
  }
  return cudaGetLastError();
}

}  // namespace

// x, gamma, beta, out: contiguous [batch, channels, H, W] with hw = H * W; groups
// divides channels; silu != 0 applies SiLU. Returns the launch status.
extern "C" cudaError_t facegen_spade_norm_f32(const float* x, const float* gamma,
                                              const float* beta, float* out, int64_t batch,
                                              int64_t channels, int64_t hw, int64_t groups,
                                              float eps, int silu, cudaStream_t stream) {
  return launch(x, gamma, beta, out, batch, channels, hw, groups, eps, silu, stream);
}

extern "C" cudaError_t facegen_spade_norm_bf16(const __nv_bfloat16* x, const __nv_bfloat16* gamma,
                                               const __nv_bfloat16* beta, __nv_bfloat16* out,
                                               int64_t batch, int64_t channels, int64_t hw,
                                               int64_t groups, float eps, int silu,
                                               cudaStream_t stream) {
  return launch(x, gamma, beta, out, batch, channels, hw, groups, eps, silu, stream);
}
