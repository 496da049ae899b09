#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>

#include "core/check.h"
#include "core/timer.h"
#include "kernels/moe_ops.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace strata {
namespace {


inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// Fills the expert-side layout of `s` from its slots: with one rank, the slots themselves;
// otherwise exchanges per-expert counts over the expert group. Returns whether rows must move.
bool exchange_layout(Moe& m, MoeSaved& s) {
  const int64_t P = m.P, El = m.El;
  if (P == 1) {
    s.Mr = s.M;
    s.local_offsets = s.offsets;
    return false;
  }
  CHECK(m.ep != nullptr && m.ep->size() == P) << "MoE with " << P << " expert-parallel ranks needs its expert group";
  // Rows for rank q: the slots of experts [q*El, (q+1)*El), contiguous in the layout.
  std::vector<int64_t> counts(static_cast<size_t>(P * El));
  s.send_rows.assign(static_cast<size_t>(P), 0);
  for (int64_t q = 0; q < P; ++q) {
    for (int64_t i = 0; i < El; ++i) counts[q * El + i] = s.offsets[q * El + i + 1] - s.offsets[q * El + i];
    s.send_rows[q] = s.offsets[(q + 1) * El] - s.offsets[q * El];
  }
  s.recv_counts.assign(static_cast<size_t>(P * El), 0);
  const std::vector<int64_t> count_bytes(static_cast<size_t>(P), El * static_cast<int64_t>(sizeof(int64_t)));
  Timer t;
  const Status st = m.ep->all_to_all_v(counts.data(), count_bytes, s.recv_counts.data(), count_bytes);
  m.comm.seconds += t.seconds();
  CHECK(st.ok()) << "MoE dispatch counts: " << st.message();
  s.recv_rows.assign(static_cast<size_t>(P), 0);
  s.local_offsets.assign(static_cast<size_t>(El + 1), 0);
  for (int64_t q = 0; q < P; ++q)
    for (int64_t i = 0; i < El; ++i) {
      s.recv_rows[q] += s.recv_counts[q * El + i];
      s.local_offsets[i + 1] += s.recv_counts[q * El + i];
    }
  for (int64_t i = 0; i < El; ++i) s.local_offsets[i + 1] += s.local_offsets[i];
  s.Mr = s.local_offsets[El];
  return true;
}

// Moves rows between the source-major order of an exchange (rank q's rows, by local expert) and
// the expert-major order the grouped GEMM runs (expert i: rank 0's rows, rank 1's, ...).
void reorder_rows(const MoeSaved& s, int64_t P, int64_t El, const float* in, float* out, int64_t C,
                  bool to_expert_major) {
  std::vector<int64_t> at(s.local_offsets.begin(), s.local_offsets.end() - 1);  // next row per expert
  int64_t src = 0;
  for (int64_t q = 0; q < P; ++q)
    for (int64_t i = 0; i < El; ++i) {
      const int64_t n = s.recv_counts[q * El + i];
      if (to_expert_major) {
        copy_f32(out + at[i] * C, in + src * C, n * C);
      } else {
        copy_f32(out + src * C, in + at[i] * C, n * C);
      }
      at[i] += n;
      src += n;
    }
}

// Dispatch direction: rows (M, C) in slot order to the experts' ranks -> (Mr, C) expert-major.
Tensor dispatch_rows(Moe& m, const MoeSaved& s, const Tensor& rows, int64_t C, int64_t* bytes) {
  const int64_t row_bytes = C * static_cast<int64_t>(sizeof(float));
  std::vector<int64_t> send(s.send_rows.size()), recv(s.recv_rows.size());
  for (size_t q = 0; q < send.size(); ++q) {
    send[q] = s.send_rows[q] * row_bytes;
    recv[q] = s.recv_rows[q] * row_bytes;
    *bytes += send[q];
  }
  Tensor got = f32_matrix(std::max<int64_t>(s.Mr, 1), C), out = f32_matrix(std::max<int64_t>(s.Mr, 1), C);
  Timer t;
  const Status st = m.ep->all_to_all_v(rows.f32(), send, got.f32(), recv);
  m.comm.seconds += t.seconds();
  CHECK(st.ok()) << "MoE dispatch: " << st.message();
  reorder_rows(s, m.P, m.El, got.f32(), out.f32(), C, /*to_expert_major=*/true);
  return out;
}

// Dispatch of the forward's token rows in fp8: each row as C E4M3 codes followed by its
// ceil(C / 128) fp32 tile scales; the owner dequantises them -> (Mr, C) expert-major.
Tensor dispatch_rows_fp8(Moe& m, const MoeSaved& s, const Tensor& rows, int64_t C, int64_t* bytes) {
  const int64_t n_scales = quant_tile_count(1, C, kTile1x128);
  const int64_t row_bytes = C + n_scales * static_cast<int64_t>(sizeof(float));
  std::vector<uint8_t> packed(static_cast<size_t>(std::max<int64_t>(s.M, 1) * row_bytes));
  std::vector<uint8_t> codes(static_cast<size_t>(C));
  std::vector<float> scales(static_cast<size_t>(n_scales));
  for (int64_t j = 0; j < s.M; ++j) {
    quantize_tiles(rows.f32() + j * C, codes.data(), scales.data(), 1, C, kTile1x128, DType::kF8E4M3, /*pow2=*/false);
    uint8_t* at = packed.data() + j * row_bytes;
    std::memcpy(at, codes.data(), static_cast<size_t>(C));
    std::memcpy(at + C, scales.data(), static_cast<size_t>(n_scales) * sizeof(float));
  }
  std::vector<int64_t> send(s.send_rows.size()), recv(s.recv_rows.size());
  for (size_t q = 0; q < send.size(); ++q) {
    send[q] = s.send_rows[q] * row_bytes;
    recv[q] = s.recv_rows[q] * row_bytes;
    *bytes += send[q];
  }
  std::vector<uint8_t> got(static_cast<size_t>(std::max<int64_t>(s.Mr, 1) * row_bytes));
  Timer t;
  const Status st = m.ep->all_to_all_v(packed.data(), send, got.data(), recv);
  m.comm.seconds += t.seconds();
  CHECK(st.ok()) << "MoE dispatch: " << st.message();
  Tensor flat = f32_matrix(std::max<int64_t>(s.Mr, 1), C), out = f32_matrix(std::max<int64_t>(s.Mr, 1), C);
  for (int64_t j = 0; j < s.Mr; ++j) {
    const uint8_t* at = got.data() + j * row_bytes;
    std::memcpy(scales.data(), at + C, static_cast<size_t>(n_scales) * sizeof(float));
    dequantize_tiles(at, scales.data(), flat.f32() + j * C, 1, C, kTile1x128, DType::kF8E4M3);
  }
  reorder_rows(s, m.P, m.El, flat.f32(), out.f32(), C, /*to_expert_major=*/true);
  return out;
}

// Combine direction: rows (Mr, C) expert-major back to the tokens' ranks -> (M, C) in slot order.
Tensor combine_rows(Moe& m, const MoeSaved& s, const Tensor& rows, int64_t C, int64_t* bytes) {
  const int64_t row_bytes = C * static_cast<int64_t>(sizeof(float));
  Tensor packed = f32_matrix(std::max<int64_t>(s.Mr, 1), C);
  reorder_rows(s, m.P, m.El, rows.f32(), packed.f32(), C, /*to_expert_major=*/false);
  std::vector<int64_t> send(s.recv_rows.size()), recv(s.send_rows.size());
  for (size_t q = 0; q < send.size(); ++q) {
    send[q] = s.recv_rows[q] * row_bytes;
    recv[q] = s.send_rows[q] * row_bytes;
    *bytes += send[q];
  }
  Tensor out = f32_matrix(std::max<int64_t>(s.M, 1), C);
  Timer t;
  const Status st = m.ep->all_to_all_v(packed.f32(), send, out.f32(), recv);
  m.comm.seconds += t.seconds();
  CHECK(st.ok()) << "MoE combine: " << st.message();
  return out;
}

}  // namespace

void Moe::build(const ModelConfig& config, const LinearPolicy& policy, const std::string& prefix,
                ExpertShard shard) {
  const MoeConfig& mc = config.moe;
  C = config.d_model;
  E = mc.n_experts;
  P = shard.size;
  CHECK(P >= 1 && E % P == 0 && 0 <= shard.rank && shard.rank < P)
      << "expert shard " << shard.rank << " of " << P << " for " << E << " experts";
  El = E / P;
  e0 = shard.rank * El;
  K = mc.top_k;
  Fe = mc.expert_ffn_hidden;
  scoring = mc.scoring;
  norm_topk_prob = mc.norm_topk_prob;
  routed_scaling_factor = static_cast<float>(mc.routed_scaling_factor);
  n_group = mc.n_group;
  topk_group = mc.topk_group;
  aux_loss = mc.aux_loss;
  aux_loss_coef = static_cast<float>(mc.aux_loss_coef);
  capacity_factor = mc.capacity_factor;
  router.allocate({E, C});
  if (scoring == RouterScoring::kSigmoid) router_bias.allocate({E}, /*with_grad=*/false);
  w_gate.allocate({El, Fe, C});
  w_up.allocate({El, Fe, C});
  w_down.allocate({El, C, Fe});
  gemm_router = policy.make("router", prefix + "router");
  gemm_gate.clear();
  gemm_up.clear();
  gemm_down.clear();
  for (int64_t e = e0; e < e0 + El; ++e) {  // named by the global expert index
    const std::string ex = prefix + "experts." + std::to_string(e) + ".";
    gemm_gate.push_back(policy.make("experts", ex + "w_gate"));
    gemm_up.push_back(policy.make("experts", ex + "w_up"));
    gemm_down.push_back(policy.make("experts", ex + "w_down"));
  }
  has_shared = mc.n_shared_experts > 0;
  shared_gated = mc.shared_expert_gate;
  if (has_shared) shared.build(C, config.resolved_shared_ffn_hidden(), policy, "shared_experts", prefix + "shared.");
  if (shared_gated) shared_gate.allocate({1, C});
}

void Moe::linear_gemms(std::vector<LinearGemm*>& out) {
  out.push_back(&gemm_router);
  for (int64_t e = 0; e < El; ++e) {
    out.push_back(&gemm_gate[e]);
    out.push_back(&gemm_up[e]);
    out.push_back(&gemm_down[e]);
  }
  if (has_shared) shared.linear_gemms(out);
}

void Moe::collect(ParamList& out, const std::string& prefix) {
  out.push_back({prefix + "router", &router, ParamKind::kMatrix});
  if (router_bias.defined()) out.push_back({prefix + "router_bias", &router_bias, ParamKind::kRouterBias});
  for (auto [name, p] : {std::pair<const char*, Param*>{"experts.w_gate", &w_gate}, {"experts.w_up", &w_up},
                         {"experts.w_down", &w_down}}) {
    out.push_back({prefix + name, p, ParamKind::kMatrix, e0, E, true});
  }
  if (has_shared) shared.collect(out, prefix + "shared.");
  if (shared_gated) out.push_back({prefix + "shared_gate", &shared_gate, ParamKind::kMatrix});
}

namespace {
// The kernels' view of this layer's routing settings.
MoeRouting routing_of(const Moe& m) {
  MoeRouting r;
  r.E = m.E;
  r.K = m.K;
  r.scoring = m.scoring == RouterScoring::kSoftmax ? RouteScoring::kSoftmax : RouteScoring::kSigmoid;
  r.norm_topk_prob = m.norm_topk_prob;
  r.routed_scaling_factor = m.routed_scaling_factor;
  r.n_group = m.n_group;
  r.topk_group = m.topk_group;
  return r;
}
}  // namespace

void moe_route(const Moe& m, const float* logits, int64_t N, float* probs, int32_t* idx, float* w) {
  moe_route_f32(probs, idx, w, logits, m.router_bias.defined() ? m.router_bias.v() : nullptr, N, routing_of(m));
}

void moe_forward(Moe& m, MoeSaved& s, float* out, const float* x, int64_t B, int64_t T) {
  const int64_t N = B * T, C = m.C, E = m.E, K = m.K, Fe = m.Fe;
  s.N = N;
  s.B = B;
  s.T = T;
  s.x = f32_matrix(N, C);
  copy_f32(s.x.f32(), x, N * C);

  // Route in fp32.
  Tensor logits = f32_matrix(N, E);
  m.gemm_router.forward(logits.f32(), x, m.router.v(), N, C, E);
  s.probs = f32_matrix(N, E);
  s.topk_idx.assign(static_cast<size_t>(N * K), 0);
  s.topk_w.assign(static_cast<size_t>(N * K), 0.0f);
  moe_route(m, logits.f32(), N, s.probs.f32(), s.topk_idx.data(), s.topk_w.data());

  // Count, apply the capacity limit in (token, rank) order, and lay slots out grouped by expert.
  s.load.assign(static_cast<size_t>(E), 0);
  for (int32_t e : s.topk_idx) s.load[e]++;
  s.prob_sum.assign(static_cast<size_t>(E), 0.0);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t e = 0; e < E; ++e) s.prob_sum[e] += s.probs.f32()[t * E + e];
  const int64_t capacity =
      m.capacity_factor > 0 ? static_cast<int64_t>(std::ceil(m.capacity_factor * N * K / static_cast<double>(E)))
                            : N * K;
  std::vector<int64_t> kept(static_cast<size_t>(E), 0);
  s.slot_of.assign(static_cast<size_t>(N * K), -1);
  s.dropped = 0;
  for (int64_t i = 0; i < N * K; ++i) {
    int32_t e = s.topk_idx[i];
    if (kept[e] < capacity) {
      s.slot_of[i] = static_cast<int32_t>(kept[e]++);  // rank within the expert for now
    } else {
      s.dropped++;
    }
  }
  s.offsets.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t e = 0; e < E; ++e) s.offsets[e + 1] = s.offsets[e] + kept[e];
  s.M = s.offsets[E];
  s.slot_token.assign(static_cast<size_t>(s.M), 0);
  for (int64_t i = 0; i < N * K; ++i) {
    if (s.slot_of[i] < 0) continue;
    s.slot_of[i] = static_cast<int32_t>(s.offsets[s.topk_idx[i]] + s.slot_of[i]);
    s.slot_token[s.slot_of[i]] = static_cast<int32_t>(i / K);
  }

  // Dispatch (gather), run each expert over its block (on its rank), combine.
  const int64_t M = s.M;
  Tensor xe = f32_matrix(M, C);
  gather_rows_f32(xe.f32(), x, s.slot_token.data(), M, C);
  m.comm.slots_sent += M;
  Tensor xr;
  if (!exchange_layout(m, s)) {
    // One rank: the fp8 payload is quantised and dequantised in place, as a dispatch would.
    if (m.dispatch_fp8 && M > 0) fake_quant_tiles(xe.f32(), xe.f32(), M, C, kTile1x128, DType::kF8E4M3, /*pow2=*/false);
    xr = xe;
  } else {
    xr = m.dispatch_fp8 ? dispatch_rows_fp8(m, s, xe, C, &m.comm.dispatch_bytes)
                        : dispatch_rows(m, s, xe, C, &m.comm.dispatch_bytes);
  }
  const int64_t Mr = s.Mr;
  Tensor act = f32_matrix(Mr, Fe), yr = f32_matrix(Mr, C);
  s.gate = f32_matrix(Mr, Fe);
  s.up = f32_matrix(Mr, Fe);
  s.xe.assign(static_cast<size_t>(m.El), SavedInput());
  s.act.assign(static_cast<size_t>(m.El), SavedInput());
  for (int64_t e = 0; e < m.El; ++e) {
    const int64_t r0 = s.local_offsets[e], n = s.local_offsets[e + 1] - r0;
    if (n == 0) continue;
    m.gemm_gate[e].forward(s.gate.f32() + r0 * Fe, xr.f32() + r0 * C, m.w_gate.v() + e * Fe * C, n, C, Fe, &s.xe[e]);
    m.gemm_up[e].forward(s.up.f32() + r0 * Fe, xr.f32() + r0 * C, m.w_up.v() + e * Fe * C, n, C, Fe);
    swiglu_forward_f32(act.f32() + r0 * Fe, s.gate.f32() + r0 * Fe, s.up.f32() + r0 * Fe, n * Fe);
    m.gemm_down[e].forward(yr.f32() + r0 * C, act.f32() + r0 * Fe, m.w_down.v() + e * C * Fe, n, Fe, C, &s.act[e]);
  }
  s.ye = m.P > 1 ? combine_rows(m, s, yr, C, &m.comm.combine_bytes) : yr;
  moe_combine_f32(out, s.ye.f32(), s.slot_of.data(), s.topk_w.data(), N, K, C);

  if (m.has_shared) {
    s.shared_y = f32_matrix(N, C);
    mlp_forward(m.shared, s.shared, s.shared_y.f32(), x, N);
    s.shared_g.assign(static_cast<size_t>(N), 1.0f);
    if (m.shared_gated) {
      for (int64_t t = 0; t < N; ++t) {
        double z = 0;
        for (int64_t c = 0; c < C; ++c) z += static_cast<double>(x[t * C + c]) * m.shared_gate.v()[c];
        s.shared_g[t] = sigmoid(static_cast<float>(z));
      }
    }
    for (int64_t t = 0; t < N; ++t) axpy_f32(out + t * C, s.shared_g[t], s.shared_y.f32() + t * C, C);
  }

  // DeepSeek-V3's sequence-wise balance loss: alpha * mean_b sum_i f_i P_i over this layer.
  s.aux_loss = 0.0;
  if (m.aux_loss == AuxLoss::kSeq) {
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> f(static_cast<size_t>(E), 0.0), P(static_cast<size_t>(E), 0.0);
      for (int64_t t = b * T; t < (b + 1) * T; ++t) {
        for (int64_t k = 0; k < K; ++k) f[s.topk_idx[t * K + k]] += 1.0;
        const float* p = s.probs.f32() + t * E;
        double sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += p[e];
        for (int64_t e = 0; e < E; ++e) P[e] += p[e] / sum;
      }
      double l = 0;
      for (int64_t e = 0; e < E; ++e) l += (f[e] * E / (K * T)) * (P[e] / T);
      s.aux_loss += m.aux_loss_coef * l / B;
    }
  }
  s.aux_dprob.clear();
}

void moe_backward(Moe& m, MoeSaved& s, float* dx, const float* dout, WeightGrads& wg) {
  const int64_t N = s.N, C = m.C, E = m.E, K = m.K, Fe = m.Fe, M = s.M;
  fill_f32(dx, 0.0f, N * C);

  // Shared experts (and their gate).
  if (m.has_shared) {
    Tensor dy = f32_matrix(N, C), dxs = f32_matrix(N, C);
    for (int64_t t = 0; t < N; ++t) {
      const float g = s.shared_g[t];
      for (int64_t c = 0; c < C; ++c) dy.f32()[t * C + c] = g * dout[t * C + c];
      if (m.shared_gated) {
        double dg = 0;
        for (int64_t c = 0; c < C; ++c) dg += static_cast<double>(dout[t * C + c]) * s.shared_y.f32()[t * C + c];
        const float dz = static_cast<float>(dg) * g * (1.0f - g);
        axpy_f32(m.shared_gate.g(), dz, s.x.f32() + t * C, C);
        axpy_f32(dx + t * C, dz, m.shared_gate.v(), C);
      }
    }
    mlp_backward(m.shared, s.shared, dxs.f32(), dy.f32(), wg);
    add_inplace_f32(dx, dxs.f32(), N * C);
  }

  // Combine's backward: the gradient each slot receives, and each weight's gradient.
  struct Grads {
    Tensor dye, dgate, dup;
  };
  auto g = std::make_shared<Grads>();
  g->dye = f32_matrix(M, C);
  std::vector<float> dw(static_cast<size_t>(N * K), 0.0f);
  moe_combine_backward_f32(g->dye.f32(), dw.data(), dout, s.ye.f32(), s.slot_of.data(), s.topk_w.data(), N, K, C);

  // The slot gradients go to the experts' ranks (as dispatch did); experts' backward there; the
  // input gradients come back (as combine did) and scatter-add to the tokens.
  const int64_t Mr = s.Mr;
  if (m.P > 1) g->dye = dispatch_rows(m, s, g->dye, C, &m.comm.backward_bytes);
  g->dgate = f32_matrix(Mr, Fe);
  g->dup = f32_matrix(Mr, Fe);
  Tensor dact = f32_matrix(Mr, Fe), dxr = f32_matrix(Mr, C), tmp = f32_matrix(Mr, C);
  const int64_t El = m.El;
  for (int64_t e = 0; e < El; ++e) {
    const int64_t r0 = s.local_offsets[e], n = s.local_offsets[e + 1] - r0;
    if (n == 0) continue;
    m.gemm_down[e].backward_input(dact.f32() + r0 * Fe, g->dye.f32() + r0 * C, m.w_down.v() + e * C * Fe, n, Fe, C);
    swiglu_backward_f32(g->dgate.f32() + r0 * Fe, g->dup.f32() + r0 * Fe, dact.f32() + r0 * Fe,
                        s.gate.f32() + r0 * Fe, s.up.f32() + r0 * Fe, n * Fe);
    m.gemm_gate[e].backward_input(dxr.f32() + r0 * C, g->dgate.f32() + r0 * Fe, m.w_gate.v() + e * Fe * C, n, C, Fe);
    m.gemm_up[e].backward_input(tmp.f32() + r0 * C, g->dup.f32() + r0 * Fe, m.w_up.v() + e * Fe * C, n, C, Fe);
    add_inplace_f32(dxr.f32() + r0 * C, tmp.f32() + r0 * C, n * C);
  }
  wg.add([&m, &s, g, El, C, Fe] {
    for (int64_t e = 0; e < El; ++e) {
      const int64_t r0 = s.local_offsets[e], n = s.local_offsets[e + 1] - r0;
      if (n == 0) continue;
      m.gemm_down[e].backward_weight(m.w_down.g() + e * C * Fe, g->dye.f32() + r0 * C, s.act[e], n, Fe, C);
      m.gemm_gate[e].backward_weight(m.w_gate.g() + e * Fe * C, g->dgate.f32() + r0 * Fe, s.xe[e], n, C, Fe);
      m.gemm_up[e].backward_weight(m.w_up.g() + e * Fe * C, g->dup.f32() + r0 * Fe, s.xe[e], n, C, Fe);
    }
  });
  const Tensor dxe = m.P > 1 ? combine_rows(m, s, dxr, C, &m.comm.backward_bytes) : dxr;
  scatter_add_rows_f32(dx, dxe.f32(), s.slot_token.data(), M, C);

  // Router: combine weights -> scores, plus the auxiliary losses, -> logits.
  Tensor dprobs = Tensor::zeros({N, E}, DType::kF32);
  float* dp = dprobs.f32();
  const float* probs = s.probs.f32();
  moe_route_backward_f32(dp, dw.data(), probs, s.topk_idx.data(), N, routing_of(m));
  if (!s.aux_dprob.empty()) bias_add_f32(dp, s.aux_dprob.data(), N, E);  // the switch loss: the same row for every token
  if (m.aux_loss == AuxLoss::kSeq) {
    // d/dp of alpha/B * sum_i f_i * mean_t p_i / sum_j p_j, per sequence (f carries no gradient).
    const int64_t B = s.B, T = s.T;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> f(static_cast<size_t>(E), 0.0);
      for (int64_t t = b * T; t < (b + 1) * T; ++t)
        for (int64_t k = 0; k < K; ++k) f[s.topk_idx[t * K + k]] += 1.0;
      for (int64_t e = 0; e < E; ++e) f[e] *= static_cast<double>(E) / (K * T) * m.aux_loss_coef * s.aux_weight / (B * T);
      for (int64_t t = b * T; t < (b + 1) * T; ++t) {
        const float* p = probs + t * E;
        double S = 0, dot = 0;
        for (int64_t e = 0; e < E; ++e) S += p[e];
        for (int64_t e = 0; e < E; ++e) dot += f[e] * p[e];
        for (int64_t e = 0; e < E; ++e) dp[t * E + e] += static_cast<float>(f[e] / S - dot / (S * S));
      }
    }
  }
  Tensor dlogits = f32_matrix(N, E);
  if (m.scoring == RouterScoring::kSoftmax) {
    softmax_backward_f32(dlogits.f32(), dp, probs, N, E);
  } else {
    sigmoid_backward_f32(dlogits.f32(), dp, probs, N * E);
  }
  Tensor dx_router = f32_matrix(N, C);
  m.gemm_router.backward_input(dx_router.f32(), dlogits.f32(), m.router.v(), N, C, E);
  add_inplace_f32(dx, dx_router.f32(), N * C);
  auto dl = std::make_shared<Tensor>(dlogits);
  wg.add([&m, &s, dl, N, C, E] { m.gemm_router.backward_weight(m.router.g(), dl->f32(), s.x.f32(), N, C, E); });
}

void moe_update_bias(Moe& m, const std::vector<int64_t>& load, float gamma) {
  CHECK(m.router_bias.defined()) << "aux-loss-free balancing needs sigmoid scoring";
  CHECK_EQ(static_cast<int64_t>(load.size()), m.E);
  double mean = 0;
  for (int64_t l : load) mean += static_cast<double>(l);
  mean /= static_cast<double>(m.E);
  float* b = m.router_bias.v();
  for (int64_t e = 0; e < m.E; ++e) {
    const double diff = mean - static_cast<double>(load[e]);
    b[e] += gamma * static_cast<float>((diff > 0) - (diff < 0));
  }
}

}  // namespace strata
