#include "model/mlp.h"

#include <memory>

#include "kernels/dispatch.h"  // dev:: ops on the compute device

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
  s.gate = f32_matrix(N, m.F);
  s.up = f32_matrix(N, m.F);
  Tensor act = f32_matrix(N, m.F);
  m.gemm_gate.forward(s.gate.f32(), x, m.w_gate.v(), N, m.C, m.F, &s.x);
  m.gemm_up.forward(s.up.f32(), x, m.w_up.v(), N, m.C, m.F);
  dev::swiglu_forward_f32(act.f32(), s.gate.f32(), s.up.f32(), N * m.F);
  m.gemm_down.forward(out, act.f32(), m.w_down.v(), N, m.F, m.C, &s.act);
}

void mlp_backward(Mlp& m, MlpSaved& s, float* dx, const float* dout, WeightGrads& wg) {
  const int64_t N = s.N;
  struct Grads {
    Tensor dout, dgate, dup;
  };
  auto g = std::make_shared<Grads>();
  g->dout = f32_matrix(N, m.C);
  dev::copy_f32(g->dout.f32(), dout, N * m.C);
  g->dgate = f32_matrix(N, m.F);
  g->dup = f32_matrix(N, m.F);
  Tensor dact = f32_matrix(N, m.F);
  m.gemm_down.backward_input(dact.f32(), dout, m.w_down.v(), N, m.F, m.C);
  dev::swiglu_backward_f32(g->dgate.f32(), g->dup.f32(), dact.f32(), s.gate.f32(), s.up.f32(), N * m.F);
  m.gemm_gate.backward_input(dx, g->dgate.f32(), m.w_gate.v(), N, m.C, m.F);
  Tensor tmp = f32_matrix(N, m.C);
  m.gemm_up.backward_input(tmp.f32(), g->dup.f32(), m.w_up.v(), N, m.C, m.F);
  dev::add_inplace_f32(dx, tmp.f32(), N * m.C);
  wg.add([&m, &s, g, N] {
    m.gemm_down.backward_weight(m.w_down.g(), g->dout.f32(), s.act, N, m.F, m.C);
    m.gemm_gate.backward_weight(m.w_gate.g(), g->dgate.f32(), s.x, N, m.C, m.F);
    m.gemm_up.backward_weight(m.w_up.g(), g->dup.f32(), s.x, N, m.C, m.F);
  });
}

void mlp_infer(Mlp& m, float* out, const float* x, int64_t N) {
  Tensor gate = f32_matrix(N, m.F), up = f32_matrix(N, m.F);
  m.gemm_gate.forward(gate.f32(), x, m.w_gate.v(), N, m.C, m.F);
  m.gemm_up.forward(up.f32(), x, m.w_up.v(), N, m.C, m.F);
  Tensor act = f32_matrix(N, m.F);
  dev::swiglu_forward_f32(act.f32(), gate.f32(), up.f32(), N * m.F);
  m.gemm_down.forward(out, act.f32(), m.w_down.v(), N, m.F, m.C);
}

}  // namespace strata
