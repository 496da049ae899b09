// Parameters: every trainable tensor of the model as a (value, grad) pair with a global name, so
// that initialisation, the optimizer, checkpoints and Hugging Face name maps all address a
// parameter the same way on any layout ("layers.3.moe.experts.w_up").
//
// Values are fp32 master weights; gradients are fp32 and ACCUMULATE (+=) across micro-batches
// until the optimizer zeroes them. Experts of one layer are one stacked tensor (E, ...).
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/dispatch.h"  // compute_device

namespace strata {

// What the optimizer and initialiser need to know about a parameter.
enum class ParamKind {
  kMatrix,      // projection weights: normal(0, init_std) init, weight decay
  kEmbedding,   // token embedding: normal(0, init_std), no decay by default
  kNorm,        // RMSNorm weights: ones, no decay by default
  kBias,        // linear biases: zeros, no decay by default
  kRouterBias,  // aux-loss-free balancing bias: zeros, updated by load balancing, never by AdamW
};

struct Param {
  Tensor value;  // fp32
  Tensor grad;   // fp32, same shape; empty for kRouterBias (it has no gradient)

  void allocate(const Shape& shape, bool with_grad = true) {
    value = Tensor::zeros(shape, DType::kF32);
    if (with_grad) grad = Tensor::zeros(shape, DType::kF32);
  }
  // Moves the value and the gradient to `device` (a copy; pointers taken before are stale).
  void to(Device device) {
    if (value.defined()) value = value.to(device);
    if (grad.defined()) grad = grad.to(device);
  }
  bool defined() const { return value.defined(); }
  float* v() const { return value.f32(); }
  float* g() const {
    CHECK(grad.defined()) << "parameter has no gradient (a balancing bias?)";
    return grad.f32();
  }
};

struct ParamRef {
  std::string name;  // global name
  Param* param;
  ParamKind kind;
  // Expert parallelism: a routed-expert tensor holds rows [row_begin, row_begin + shape[0]) of a
  // global tensor with global_rows rows (0: the whole tensor). Its gradient is reduced over the
  // expert-data-parallel group instead of dp.
  int64_t row_begin = 0, global_rows = 0;
  bool expert = false;
  bool sharded() const { return global_rows > 0 && global_rows != param->value.shape()[0]; }
};

using ParamList = std::vector<ParamRef>;

// Uninitialised fp32 activation buffers, (rows, cols) and (n,), on this thread's compute device
// (the CPU, or the GPU a model moved there runs on: kernels/dispatch.h).
inline Tensor f32_matrix(int64_t rows, int64_t cols) {
  return Tensor::empty({rows, cols}, DType::kF32, compute_device());
}
inline Tensor f32_vector(int64_t n) { return Tensor::empty({n}, DType::kF32, compute_device()); }
// A copy of n int32 (token ids, positions) from `src` on src_device, on the compute device.
inline Tensor i32_copy(const int32_t* src, Device src_device, int64_t n) {
  Tensor t = Tensor::empty({n}, DType::kI32, compute_device());
  device_copy(t.raw(), t.device(), src, src_device, static_cast<size_t>(n) * sizeof(int32_t));
  return t;
}

// Fills every parameter from the counter-based RNG keyed by (seed, name, element offset), so any
// layout and any shard of a tensor starts from the same numbers (REFERENCE.md section 1).
void init_params(const ParamList& params, uint64_t seed, float init_std);

// Zeroes every gradient (start of an optimizer step).
void zero_grads(const ParamList& params);

// Number of elements over all parameters.
int64_t count_elements(const ParamList& params);

}  // namespace strata
