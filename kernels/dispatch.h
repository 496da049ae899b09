// The ops as model code calls them: strata::dev::X runs kernels/ops.h's X on the CPU, or its
// CUDA twin (kernels/cuda/ops_cuda.h) when this thread's compute device is a GPU. The compute
// device is a per-thread setting that a ComputeDeviceScope holds for the duration of a model call
// (Transformer::forward / backward on a model moved to a GPU), so layer code stays one piece of
// code with raw pointers whatever the backend: every pointer passed must live on that device.
//
// Only the ops model/ uses on its training path are here; add one the same way when a layer
// needs it. Activation buffers follow the same setting (model/param.h's f32_matrix).
#pragma once

#include <cstdint>

#include "core/device.h"
#include "kernels/moe_ops.h"
#include "kernels/ops.h"
#ifdef STRATA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace strata {

// This thread's compute device: the CPU unless a ComputeDeviceScope is alive.
Device compute_device();

// Sets the thread's compute device (and for a GPU, the current CUDA device) until destroyed;
// scopes nest. A GPU in a build without CUDA is a CHECK failure naming it.
class ComputeDeviceScope {
 public:
  explicit ComputeDeviceScope(Device device);
  ~ComputeDeviceScope();
  ComputeDeviceScope(const ComputeDeviceScope&) = delete;
  ComputeDeviceScope& operator=(const ComputeDeviceScope&) = delete;

 private:
  Device previous_;
};

namespace dev {

#ifdef STRATA_WITH_CUDA
#define STRATA_DEV_OP(op, ...) \
  (compute_device().is_cuda() ? ::strata::cuda::op(__VA_ARGS__) : ::strata::op(__VA_ARGS__))
#else
#define STRATA_DEV_OP(op, ...) ::strata::op(__VA_ARGS__)
#endif

inline void fill_f32(float* out, float value, int64_t n) { STRATA_DEV_OP(fill_f32, out, value, n); }
inline void copy_f32(float* out, const float* x, int64_t n) { STRATA_DEV_OP(copy_f32, out, x, n); }
inline void add_inplace_f32(float* y, const float* x, int64_t n) { STRATA_DEV_OP(add_inplace_f32, y, x, n); }
inline void scale_f32(float* y, float s, int64_t n) { STRATA_DEV_OP(scale_f32, y, s, n); }
inline void axpy_f32(float* y, float a, const float* x, int64_t n) { STRATA_DEV_OP(axpy_f32, y, a, x, n); }
inline void bias_add_f32(float* y, const float* b, int64_t rows, int64_t cols) {
  STRATA_DEV_OP(bias_add_f32, y, b, rows, cols);
}
inline void bias_backward_f32(float* db, const float* dy, int64_t rows, int64_t cols) {
  STRATA_DEV_OP(bias_backward_f32, db, dy, rows, cols);
}
inline void swiglu_forward_f32(float* out, const float* gate, const float* up, int64_t n) {
  STRATA_DEV_OP(swiglu_forward_f32, out, gate, up, n);
}
inline void swiglu_backward_f32(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                                int64_t n) {
  STRATA_DEV_OP(swiglu_backward_f32, dgate, dup, dout, gate, up, n);
}
inline void rmsnorm_forward_f32(float* y, float* rstd, const float* x, const float* w, int64_t rows, int64_t C,
                                float eps) {
  STRATA_DEV_OP(rmsnorm_forward_f32, y, rstd, x, w, rows, C, eps);
}
inline void rmsnorm_backward_f32(float* dx, float* dw, const float* dy, const float* x, const float* w,
                                 const float* rstd, int64_t rows, int64_t C) {
  STRATA_DEV_OP(rmsnorm_backward_f32, dx, dw, dy, x, w, rstd, rows, C);
}
inline void rope_apply_f32(float* x, const int32_t* pos, const float* cos, const float* sin, int64_t rows, int64_t H,
                           int64_t D, bool inverse) {
  STRATA_DEV_OP(rope_apply_f32, x, pos, cos, sin, rows, H, D, inverse);
}
inline void attention_forward_f32(float* out, float* lse, const float* q, const float* k, const float* v,
                                  const int32_t* key_start, int64_t B, int64_t T, int64_t S, int64_t S_cap,
                                  int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  STRATA_DEV_OP(attention_forward_f32, out, lse, q, k, v, key_start, B, T, S, S_cap, Hq, Hkv, D, scale);
}
inline void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                   const float* lse, const float* q, const float* k, const float* v,
                                   const int32_t* key_start, int64_t B, int64_t T, int64_t S, int64_t S_cap,
                                   int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  STRATA_DEV_OP(attention_backward_f32, dq, dk, dv, dout, out, lse, q, k, v, key_start, B, T, S, S_cap, Hq, Hkv, D,
                scale);
}
inline double cross_entropy_forward_f32(float* losses, float* lse, const float* logits, const int32_t* targets,
                                        int64_t N, int64_t V) {
  return STRATA_DEV_OP(cross_entropy_forward_f32, losses, lse, logits, targets, N, V);
}
inline void cross_entropy_backward_f32(float* dlogits, const float* logits, const int32_t* targets, const float* lse,
                                       float scale, int64_t N, int64_t V, const float* row_scale) {
  STRATA_DEV_OP(cross_entropy_backward_f32, dlogits, logits, targets, lse, scale, N, V, row_scale);
}
inline void gather_rows_f32(float* out, const float* x, const int32_t* index, int64_t M, int64_t C) {
  STRATA_DEV_OP(gather_rows_f32, out, x, index, M, C);
}
inline void scatter_add_rows_f32(float* out, const float* rows, const int32_t* index, int64_t M, int64_t C) {
  STRATA_DEV_OP(scatter_add_rows_f32, out, rows, index, M, C);
}

#undef STRATA_DEV_OP

}  // namespace dev
}  // namespace strata
