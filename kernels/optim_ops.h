// The optimizer's element ops (REFERENCE.md section 2): one AdamW update over a flat fp32 tensor
// with fp32 or bf16 moments, and the sum of squares a global gradient norm is built from. The
// formulas, and how they match torch.optim.AdamW bit for bit, are in optim/adamw.h, which builds
// the scalars (adamw_scalars) and calls these per tensor. kernels/cpu/adamw.cc is the reference
// (AVX2); kernels/cuda/ has the same functions for GPUs.
#pragma once

#include <cstdint>

namespace strata {

// The per-step scalars, each rounded to fp32 once as torch rounds its Python-float arguments.
struct AdamwScalars {
  bool decay = false;      // this tensor decays (and wd != 0)
  float decay_mul = 1.0f;  // 1 - lr * wd
  float w = 0.1f;          // lerp weight 1 - b1
  float one_minus_w = 0.9f;
  float b2 = 0.999f;
  float c2 = 0.001f;       // 1 - b2
  float bc2_sqrt = 1.0f;   // sqrt(1 - b2^t), as pow(., 0.5) like Python's ** 0.5
  float eps = 1e-8f;
  float neg_step = 0.0f;   // -lr / (1 - b1^t)
};

// Scalars of update number t (>= 1) at learning rate lr; decay as AdamwScalars::decay.
AdamwScalars adamw_scalars(double beta1, double beta2, double eps, double weight_decay, double lr,
                           int64_t t, bool decay);

// p, g, m, v: (n,). p -= the update, m and v advanced in place. bf16: m, v hold bf16 bits and are
// rounded (nearest even) before the parameter update uses them.
void adamw_update_f32(float* p, const float* g, float* m, float* v, int64_t n,
                      const AdamwScalars& s);
void adamw_update_bf16(float* p, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                       const AdamwScalars& s);

// Sum of x^2 over `count` arrays (xs[i] of ns[i] elements) in double, each array in chunks of
// 2^14 with 8 lanes per chunk, chunks then arrays added in order: the result depends only on the
// data (the global-norm clip and the NaN check of every layout agree bit for bit).
double grad_sum_squares_f32(const float* const* xs, const int64_t* ns, int64_t count);

}  // namespace strata
