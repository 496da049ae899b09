// The SwiGLU MLP: out = down(silu(gate(x)) * up(x)), forward above backward. Dense blocks use it,
// and so do MoE shared experts. Each projection goes through LinearGemm.
//
// Glossary: N tokens, C d_model, F hidden size.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "kernels/precision/linear.h"
#include "model/param.h"
#include "model/weight_grads.h"

namespace strata {

struct Mlp {
  int64_t C = 0, F = 0;
  Param w_gate;  // (F, C)
  Param w_up;    // (F, C)
  Param w_down;  // (C, F)
  LinearGemm gemm_gate, gemm_up, gemm_down;

  // prefix: the global name of this module's parameters, e.g. "layers.3.mlp.".
  void build(int64_t d_model, int64_t hidden, const LinearPolicy& policy, const std::string& module_kind,
             const std::string& prefix);
  void linear_gemms(std::vector<LinearGemm*>& out);
  void collect(ParamList& out, const std::string& prefix);
};

struct MlpSaved {
  SavedInput x;    // (N, C) input of gate and up
  Tensor gate;     // (N, F) gate(x)
  Tensor up;       // (N, F) up(x)
  SavedInput act;  // (N, F) silu(gate) * up, input of down
  int64_t N = 0;
};

// out: (N, C) overwritten; x: (N, C).
void mlp_forward(Mlp& m, MlpSaved& s, float* out, const float* x, int64_t N);
// dx: (N, C) overwritten; dout: (N, C). Projection weight gradients are queued on `wg`.
void mlp_backward(Mlp& m, MlpSaved& s, float* dx, const float* dout, WeightGrads& wg);
// Forward without saving anything (decoding). out: (N, C); x: (N, C).
void mlp_infer(Mlp& m, float* out, const float* x, int64_t N);

}  // namespace strata
