// upfirdn2d on CPU, shared by the op itself and by modulated_conv2d's resampling.
#pragma once
#include <torch/extension.h>

namespace facegen {

// Parsed upfirdn2d arguments: factors, padding (x0, x1, y0, y1) in the upsampled
// image (negative crops), flip_filter and gain.
struct Ufd {
  int64_t upx = 1, upy = 1, downx = 1, downy = 1;
  int64_t px0 = 0, px1 = 0, py0 = 0, py1 = 0;
  bool flip = false;
  double gain = 1.0;
};

// x: [N, C, H, W] float32 or bfloat16, any strides; f: [fh, fw] or separable [taps]
// (any float dtype; undefined = the 1x1 identity). Returns [N, C, oh, ow] contiguous.
at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, const Ufd& p);

// The arguments whose upfirdn2d is the gradient of upfirdn2d(x, f, p) for an
// [in_h, in_w] input and an [out_h, out_w] output: up and down swapped, the filter
// flipped, the padding mirrored.
Ufd upfirdn2d_grad_args(const Ufd& p, const at::Tensor& f, int64_t in_h, int64_t in_w,
                        int64_t out_h, int64_t out_w);

}  // namespace facegen
