// CPU elementwise ops of kernels/ops.h: arithmetic on flat arrays, bias rows, SiLU and SwiGLU
// forward and backward. Single-threaded: these are memory-bound (a second core adds little bandwidth on this
// machine) and cheap next to the GEMMs around them; the SiLU family uses the vectorised exp of
// vec.h, which is what makes them cheap.
#include <cstring>

#include "core/check.h"
#include "kernels/cpu/vec.h"  // map_f32, exp_f32, sigmoid_f32
#include "kernels/ops.h"

namespace strata {

using cpu::map_f32;
using cpu::sigmoid_f32;

void fill_f32(float* out, float value, int64_t n) {
  map_f32(out, n, [=](int64_t) { return value; });
}

void copy_f32(float* out, const float* x, int64_t n) {
  if (out != x && n > 0) std::memcpy(out, x, static_cast<size_t>(n) * sizeof(float));
}

void add_f32(float* out, const float* a, const float* b, int64_t n) {
  map_f32(out, n, [=](int64_t i) { return a[i] + b[i]; });
}

void add_inplace_f32(float* y, const float* x, int64_t n) {
  map_f32(y, n, [=](int64_t i) { return y[i] + x[i]; });
}

void mul_f32(float* out, const float* a, const float* b, int64_t n) {
  map_f32(out, n, [=](int64_t i) { return a[i] * b[i]; });
}

void scale_f32(float* y, float s, int64_t n) {
  map_f32(y, n, [=](int64_t i) { return y[i] * s; });
}

void axpy_f32(float* y, float a, const float* x, int64_t n) {
  // fma: one rounding, as cuBLAS's and OpenBLAS's saxpy do.
  map_f32(y, n, [=](int64_t i) { return std::fma(a, x[i], y[i]); });
}

void bias_add_f32(float* y, const float* b, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) add_inplace_f32(y + r * cols, b, cols);
}

void bias_backward_f32(float* db, const float* dy, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) add_inplace_f32(db, dy + r * cols, cols);  // rows in order
}

void sigmoid_backward_f32(float* dx, const float* dy, const float* y, int64_t n) {
  map_f32(dx, n, [=](int64_t i) { return dy[i] * y[i] * (1.0f - y[i]); });
}

void silu_forward_f32(float* out, const float* x, int64_t n) {
  map_f32(out, n, [=](int64_t i) { return x[i] * sigmoid_f32(x[i]); });
}

void silu_backward_f32(float* dx, const float* dout, const float* x, int64_t n) {
  map_f32(dx, n, [=](int64_t i) {
    const float s = sigmoid_f32(x[i]);
    return dout[i] * (s * (1.0f + x[i] * (1.0f - s)));
  });
}

void swiglu_forward_f32(float* out, const float* gate, const float* up, int64_t n) {
  map_f32(out, n, [=](int64_t i) { return gate[i] * sigmoid_f32(gate[i]) * up[i]; });
}

void swiglu_backward_f32(float* dgate, float* dup, const float* dout, const float* gate,
                         const float* up, int64_t n) {
  CHECK(n == 0 || dgate != dup) << "swiglu_backward: dgate and dup must be different arrays";
  // Both outputs are computed into locals before either is stored, so dgate or dup may alias
  // gate, up or dout exactly (map_f32's reasoning, written out for two outputs).
  int64_t i = 0;
  auto lane = [=](int64_t k, float* dg, float* du) {
    const float g = gate[k];
    const float s = sigmoid_f32(g);
    const float d = dout[k];
    *dg = d * up[k] * (s * (1.0f + g * (1.0f - s)));
    *du = d * g * s;
  };
  for (; i + cpu::kLanes <= n; i += cpu::kLanes) {
    float dg[cpu::kLanes], du[cpu::kLanes];
    for (int64_t j = 0; j < cpu::kLanes; ++j) lane(i + j, &dg[j], &du[j]);
    for (int64_t j = 0; j < cpu::kLanes; ++j) dgate[i + j] = dg[j];
    for (int64_t j = 0; j < cpu::kLanes; ++j) dup[i + j] = du[j];
  }
  for (; i < n; ++i) {
    float dg, du;
    lane(i, &dg, &du);
    dgate[i] = dg;
    dup[i] = du;
  }
}

}  // namespace strata
