#include "model/mlp.h"

#include <memory>

#include "kernels/ops.h"

namespace strata {

void Mlp::build(int64_t d_model, int64_t hidden, const LinearPolicy& policy, const std::string& module_kind,
                const std::string& prefix) {
  C = d_model;
  F = hidden;
  w_gate.allocate({F, C});
  w_up.allocate({F, C});
  w_down.allocate({C, F});
  gemm_gate = policy.make(module_kind, prefix + "w_gate");
  gemm_up = policy.make(module_kind, prefix + "w_up");
  gemm_down = policy.make(module_kind, prefix + "w_down");
}

void Mlp::linear_gemms(std::vector<LinearGemm*>& out) {
  for (LinearGemm* g : {&gemm_gate, &gemm_up, &gemm_down}) out.push_back(g);
}

void Mlp::collect(ParamList& out, const std::string& prefix) {
  out.push_back({prefix + "w_gate", &w_gate, ParamKind::kMatrix});
  out.push_back({prefix + "w_up", &w_up, ParamKind::kMatrix});
  out.push_back({prefix + "w_down", &w_down, ParamKind::kMatrix});
}

void mlp_forward(Mlp& m, MlpSaved& s, float* out, const float* x, int64_t N) {
  s.N = N;
  s.gate = Tensor::empty({N, m.F}, DType::kF32);
  s.up = Tensor::empty({N, m.F}, DType::kF32);
  Tensor act = Tensor::empty({N, m.F}, DType::kF32);
  m.gemm_gate.forward(s.gate.f32(), x, m.w_gate.v(), N, m.C, m.F, &s.x);
  m.gemm_up.forward(s.up.f32(), x, m.w_up.v(), N, m.C, m.F);
  swiglu_forward_f32(act.f32(), s.gate.f32(), s.up.f32(), N * m.F);
  m.gemm_down.forward(out, act.f32(), m.w_down.v(), N, m.F, m.C, &s.act);
}

void mlp_backward(Mlp& m, MlpSaved& s, float* dx, const float* dout, WeightGrads& wg) {
  const int64_t N = s.N;
  struct Grads {
    Tensor dout, dgate, dup;
  };
  auto g = std::make_shared<Grads>();
  g->dout = Tensor::empty({N, m.C}, DType::kF32);
  copy_f32(g->dout.f32(), dout, N * m.C);
  g->dgate = Tensor::empty({N, m.F}, DType::kF32);
  g->dup = Tensor::empty({N, m.F}, DType::kF32);
  Tensor dact = Tensor::empty({N, m.F}, DType::kF32);
  m.gemm_down.backward_input(dact.f32(), dout, m.w_down.v(), N, m.F, m.C);
  swiglu_backward_f32(g->dgate.f32(), g->dup.f32(), dact.f32(), s.gate.f32(), s.up.f32(), N * m.F);
  m.gemm_gate.backward_input(dx, g->dgate.f32(), m.w_gate.v(), N, m.C, m.F);
  Tensor tmp = Tensor::empty({N, m.C}, DType::kF32);
  m.gemm_up.backward_input(tmp.f32(), g->dup.f32(), m.w_up.v(), N, m.C, m.F);
  add_inplace_f32(dx, tmp.f32(), N * m.C);
  wg.add([&m, &s, g, N] {
    m.gemm_down.backward_weight(m.w_down.g(), g->dout.f32(), s.act, N, m.F, m.C);
    m.gemm_gate.backward_weight(m.w_gate.g(), g->dgate.f32(), s.x, N, m.C, m.F);
    m.gemm_up.backward_weight(m.w_up.g(), g->dup.f32(), s.x, N, m.C, m.F);
  });
}

void mlp_infer(Mlp& m, float* out, const float* x, int64_t N) {
  Tensor gate = Tensor::empty({N, m.F}, DType::kF32), up = Tensor::empty({N, m.F}, DType::kF32);
  m.gemm_gate.forward(gate.f32(), x, m.w_gate.v(), N, m.C, m.F);
  m.gemm_up.forward(up.f32(), x, m.w_up.v(), N, m.C, m.F);
  Tensor act = Tensor::empty({N, m.F}, DType::kF32);
  swiglu_forward_f32(act.f32(), gate.f32(), up.f32(), N * m.F);
  m.gemm_down.forward(out, act.f32(), m.w_down.v(), N, m.F, m.C);
}

}  // namespace strata
