// StyleGAN2 bias + activation on CUDA: y = clamp(gain * act(x + b), -clamp, clamp),
// and its backward dx = grad * gain * slope(x + b) * [|y| <= clamp].
//
// Status: compile-checked only (nvcc -ptx for sm_80 and sm_90). It is not wired into
// a torch extension: the CPU build of torch on the development machine cannot build
// CUDA extensions, and no GPU was available to run it. On GPUs the op runs the
// Triton kernel (kernels/bias_act.py); the CPU kernel (bias_act.cpp) is the tested
// C++ implementation, and this file carries the same math for a native CUDA backend.
//
// Plain CUDA C++ (no torch headers). x, grad, out: contiguous tensors of float or
// __nv_bfloat16 viewed as [outer, C, inner], C the biased dimension; b: [C] or null.
// Arithmetic in float32. The bias gradient (a reduction over outer and inner) is
// left to the caller's sum over dx, as the PyTorch backward does.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_convert.cuh"

namespace {

constexpr int kThreads = 256;

using facegen_cuda::from_f32;
using facegen_cuda::to_f32;

struct Act {
  int lrelu;
  float alpha, gain, clamp;  // clamp < 0: no clamp
};

// x + b[c] for flat index i of an [outer, C, inner] tensor.
template <typename T>
__device__ __forceinline__ float biased(const T* x, const T* b, int64_t i, int64_t C,
                                        int64_t inner) {
  float z = to_f32(x[i]);
  if (b != nullptr) z += to_f32(b[(i / inner) % C]);
  return z;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bias_act_forward_kernel(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y,
                            int64_t n, int64_t C, int64_t inner, Act a) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads) {
    const float z = biased(x, b, i, C, inner);
    float v = (a.lrelu && !(z > 0.0f)) ? z * a.alpha : z;
    v *= a.gain;
    if (a.clamp >= 0.0f) v = fminf(fmaxf(v, -a.clamp), a.clamp);
    y[i] = from_f32<T>(v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    bias_act_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                             const T* __restrict__ b, T* __restrict__ dx, int64_t n, int64_t C,
                             int64_t inner, Act a) {
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads) {
    const float z = biased(x, b, i, C, inner);
    const float slope = (a.lrelu && !(z > 0.0f)) ? a.alpha : 1.0f;
    // torch.clamp passes the gradient where -clamp <= y <= clamp (inclusive).
    const bool pass = a.clamp < 0.0f || fabsf(z * slope * a.gain) <= a.clamp;
    dx[i] = from_f32<T>(pass ? to_f32(grad[i]) * slope * a.gain : 0.0f);
  }
}

bool valid(int64_t n, int64_t C, int64_t inner) { return n >= 0 && C > 0 && inner > 0; }

dim3 grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < 65535 ? blocks : 65535));  // grid-stride beyond
}

template <typename T>
cudaError_t forward(const T* x, const T* b, T* y, int64_t n, int64_t C, int64_t inner, Act a,
                    cudaStream_t stream) {
  if (!valid(n, C, inner)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  bias_act_forward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(x, b, y, n, C, inner, a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(const T* grad, const T* x, const T* b, T* dx, int64_t n, int64_t C,
                     int64_t inner, Act a, cudaStream_t stream) {
  if (!valid(n, C, inner)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  bias_act_backward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(grad, x, b, dx, n, C, inner,
                                                                    a);
  return cudaGetLastError();
}

}  // namespace

// n = outer * C * inner elements; b may be null; lrelu != 0 selects leaky ReLU with
// slope alpha; clamp < 0 disables the clamp. Returns the launch status.
extern "C" cudaError_t facegen_bias_act_f32(const float* x, const float* b, float* y, int64_t n,
                                            int64_t C, int64_t inner, int lrelu, float alpha,
                                            float gain, float clamp, cudaStream_t stream) {
  return forward(x, b, y, n, C, inner, Act{lrelu, alpha, gain, clamp}, stream);
}

extern "C" cudaError_t facegen_bias_act_bf16(const __nv_bfloat16* x, const __nv_bfloat16* b,
                                             __nv_bfloat16* y, int64_t n, int64_t C,
                                             int64_t inner, int lrelu, float alpha, float gain,
                                             float clamp, cudaStream_t stream) {
  return forward(x, b, y, n, C, inner, Act{lrelu, alpha, gain, clamp}, stream);
}

extern "C" cudaError_t facegen_bias_act_backward_f32(const float* grad, const float* x,
                                                     const float* b, float* dx, int64_t n,
                                                     int64_t C, int64_t inner, int lrelu,
                                                     float alpha, float gain, float clamp,
                                                     cudaStream_t stream) {
  return backward(grad, x, b, dx, n, C, inner, Act{lrelu, alpha, gain, clamp}, stream);
}

extern "C" cudaError_t facegen_bias_act_backward_bf16(const __nv_bfloat16* grad,
                                                      const __nv_bfloat16* x,
                                                      const __nv_bfloat16* b,
                                                      __nv_bfloat16* dx, int64_t n, int64_t C,
                                                      int64_t inner, int lrelu, float alpha,
                                                      float gain, float clamp,
                                                      cudaStream_t stream) {
  return backward(grad, x, b, dx, n, C, inner, Act{lrelu, alpha, gain, clamp}, stream);
}
