// Whether a Python call may run a CPU kernel directly, skipping the facegen:: custom
// op: the C++ half of facegen_rt/ops/_dispatch.py's direct_call_allowed, for the ops'
// `<op>_eager` entries. The Python route to a kernel (argument checks, the dispatch
// tests, backend choice) costs 12-20 us a call, as much as a masked cross-attention
// kernel at 64 tokens takes; these entries check the same in well under a microsecond.
//
// The direct call gives what the op gives only when the dispatcher has nothing to
// do: no tracer, no Python dispatch or function mode, no functorch transform, no
// input that autograd tracks, and plain dense CPU tensors. (The Python caller also
// rules out graph capture, which runs Python code but none of this, and tensor
// subclasses, whose Python type the at::Tensor here no longer shows.)
#pragma once

#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/extension.h>

#include <cmath>
#include <initializer_list>
#include <optional>

namespace facegen {

// True when nothing but the kernel itself has work to do on a call with `tensors`.
inline bool direct_call_allowed(std::initializer_list<const at::Tensor*> tensors) {
  if (torch::jit::tracer::isTracing() || c10::impl::TorchDispatchModeTLS::stack_len() > 0 ||
      at::impl::PythonTorchFunctionTLS::stack_len() > 0) {
    return false;
  }
  // A functorch transform in progress puts its dynamic-layer keys in the thread's
  // included set (what torch._C._are_functorch_transforms_active reads).
  const c10::DispatchKeySet transforms({c10::DispatchKey::FuncTorchDynamicLayerFrontMode,
                                        c10::DispatchKey::FuncTorchDynamicLayerBackMode});
  if (c10::impl::tls_local_dispatch_key_set().included_.has_any(transforms)) return false;
  // Keys of tensors that wrap another (functionalization, vmap, grad transforms),
  // carry Python behaviour, or hold no data (forward-mode AD's zero tensors).
  const c10::DispatchKeySet wrapped({c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                     c10::DispatchKey::FuncTorchBatched,
                                     c10::DispatchKey::FuncTorchGradWrapper,
                                     c10::DispatchKey::ZeroTensor});
  const bool grad = at::GradMode::is_enabled();
  for (const at::Tensor* t : tensors) {
    if (!t->defined() || !t->is_cpu() || t->layout() != at::kStrided ||
        t->key_set().has_any(wrapped) || (grad && t->requires_grad())) {
      return false;
    }
  }
  return true;
}

// True when `check` (a kernel's argument checks, which raise c10::Error) passes. The
// Python route reports a failing check in its own words.
template <typename Check>
bool checks_pass(Check&& check) {
  try {
    check();
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

// The scale a Python call means: `scale`, or d ** -0.5 when it is None, as the Python
// functions compute it. None for d = 0, where Python's division raises.
inline std::optional<double> scale_or_default(std::optional<double> scale, int64_t d) {
  if (scale) return scale;
  if (d == 0) return std::nullopt;
  return 1.0 / std::sqrt(double(d));
}

}  // namespace facegen
