// facegen_rt._C: the C++ CPU kernels. Each op file registers its own functions.
#include <torch/extension.h>

void register_spade_norm(pybind11::module_& m);
void register_masked_cross_attention(pybind11::module_& m);
void register_shared_self_attention(pybind11::module_& m);
void register_bias_act(pybind11::module_& m);
void register_upfirdn2d(pybind11::module_& m);
void register_modulated_conv2d(pybind11::module_& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "facegen_rt C++ CPU kernels (OpenMP; float32 and bfloat16 inputs, float32 accumulation)";
  register_spade_norm(m);
  register_masked_cross_attention(m);
  register_shared_self_attention(m);
  register_bias_act(m);
  register_upfirdn2d(m);
  register_modulated_conv2d(m);
}
