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
