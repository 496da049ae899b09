#include "model/attention.h"

#include <cmath>
#include <cstring>

#include "core/check.h"
#include "kernels/dispatch.h"  // dev:: ops on the compute device

namespace strata {
namespace {

// Projections, q/k norm and RoPE for N tokens: fills q (N, Hq*D), k and v (N, Hkv*D); keeps the
// pre-norm projections and norm statistics in `s` when qk_norm is on.
void project_qkv(Attention& a, AttentionSaved* s, float* q, float* k, float* v, const float* x,
                 const int32_t* pos, int64_t N, const RopeTables& rope) {
  const int64_t qd = a.Hq * a.D, kd = a.Hkv * a.D;
  a.gemm_q.forward(q, x, a.wq.v(), N, a.C, qd, s ? &s->x : nullptr);
  a.gemm_k.forward(k, x, a.wk.v(), N, a.C, kd);
  a.gemm_v.forward(v, x, a.wv.v(), N, a.C, kd);
  if (a.qkv_bias) {
    dev::bias_add_f32(q, a.bq.v(), N, qd);
    dev::bias_add_f32(k, a.bk.v(), N, kd);
    dev::bias_add_f32(v, a.bv.v(), N, kd);
  }
  if (a.qk_norm) {
    Tensor q_rstd_tmp, k_rstd_tmp;
    float* q_rstd;
    float* k_rstd;
    if (s) {
      s->q_raw = f32_matrix(N, qd);
      s->k_raw = f32_matrix(N, kd);
      dev::copy_f32(s->q_raw.f32(), q, N * qd);
      dev::copy_f32(s->k_raw.f32(), k, N * kd);
      s->q_rstd = f32_vector(N * a.Hq);
      s->k_rstd = f32_vector(N * a.Hkv);
      q_rstd = s->q_rstd.f32();
      k_rstd = s->k_rstd.f32();
    } else {
      q_rstd_tmp = f32_vector(N * a.Hq);
      k_rstd_tmp = f32_vector(N * a.Hkv);
      q_rstd = q_rstd_tmp.f32();
      k_rstd = k_rstd_tmp.f32();
    }
    dev::rmsnorm_forward_f32(q, q_rstd, q, a.q_norm.v(), N * a.Hq, a.D, a.norm_eps);
    dev::rmsnorm_forward_f32(k, k_rstd, k, a.k_norm.v(), N * a.Hkv, a.D, a.norm_eps);
  }
  dev::rope_apply_f32(q, pos, rope.cos.f32(), rope.sin.f32(), N, a.Hq, a.D, false);
  dev::rope_apply_f32(k, pos, rope.cos.f32(), rope.sin.f32(), N, a.Hkv, a.D, false);
}

}  // namespace

void Attention::build(const ModelConfig& config, const LinearPolicy& policy, const std::string& prefix) {
  C = config.d_model;
  Hq = config.n_heads;
  Hkv = config.n_kv_heads;
  D = config.resolved_head_dim();
  qkv_bias = config.qkv_bias;
  qk_norm = config.qk_norm;
  norm_eps = static_cast<float>(config.norm_eps);
  wq.allocate({Hq * D, C});
  wk.allocate({Hkv * D, C});
  wv.allocate({Hkv * D, C});
  wo.allocate({C, Hq * D});
  if (qkv_bias) {
    bq.allocate({Hq * D});
    bk.allocate({Hkv * D});
    bv.allocate({Hkv * D});
  }
  if (qk_norm) {
    q_norm.allocate({D});
    k_norm.allocate({D});
  }
  gemm_q = policy.make("attention_proj", prefix + "wq");
  gemm_k = policy.make("attention_proj", prefix + "wk");
  gemm_v = policy.make("attention_proj", prefix + "wv");
  gemm_o = policy.make("attention_proj", prefix + "wo");
}

void Attention::linear_gemms(std::vector<LinearGemm*>& out) {
  for (LinearGemm* g : {&gemm_q, &gemm_k, &gemm_v, &gemm_o}) out.push_back(g);
}

void Attention::collect(ParamList& out, const std::string& prefix) {
  out.push_back({prefix + "wq", &wq, ParamKind::kMatrix});
  out.push_back({prefix + "wk", &wk, ParamKind::kMatrix});
  out.push_back({prefix + "wv", &wv, ParamKind::kMatrix});
  out.push_back({prefix + "wo", &wo, ParamKind::kMatrix});
  if (qkv_bias) {
    out.push_back({prefix + "bq", &bq, ParamKind::kBias});
    out.push_back({prefix + "bk", &bk, ParamKind::kBias});
    out.push_back({prefix + "bv", &bv, ParamKind::kBias});
  }
  if (qk_norm) {
    out.push_back({prefix + "q_norm", &q_norm, ParamKind::kNorm});
    out.push_back({prefix + "k_norm", &k_norm, ParamKind::kNorm});
  }
}

void attention_forward(Attention& a, AttentionSaved& s, float* out, const float* x, const int32_t* pos,
                       const int32_t* key_start, int64_t B, int64_t T, const RopeTables& rope) {
  const int64_t N = B * T, qd = a.Hq * a.D, kd = a.Hkv * a.D;
  s.B = B;
  s.T = T;
  // pos and key_start live on the compute device, as every pointer of a model call does.
  s.pos = i32_copy(pos, compute_device(), N);
  s.key_start = key_start ? i32_copy(key_start, compute_device(), B) : Tensor::zeros({B}, DType::kI32, compute_device());
  s.q = f32_matrix(N, qd);
  s.k = f32_matrix(N, kd);
  s.v = f32_matrix(N, kd);
  project_qkv(a, &s, s.q.f32(), s.k.f32(), s.v.f32(), x, pos, N, rope);
  s.rope = &rope;
  s.att = f32_matrix(N, qd);
  s.lse = Tensor::empty({B, a.Hq, T}, DType::kF32, compute_device());
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.D));
  dev::attention_forward_f32(s.att.f32(), s.lse.f32(), s.q.f32(), s.k.f32(), s.v.f32(), s.key_start.data<int32_t>(), B, T,
                             T, T, a.Hq, a.Hkv, a.D, scale);
  a.gemm_o.forward(out, s.att.f32(), a.wo.v(), N, qd, a.C);
}

void attention_backward(Attention& a, AttentionSaved& s, float* dx, const float* dout, WeightGrads& wg) {
  const int64_t B = s.B, T = s.T, N = B * T, qd = a.Hq * a.D, kd = a.Hkv * a.D;
  // Gradients the deferred weight GEMMs read live in this heap block, owned by the queued tasks.
  struct Grads {
    Tensor dout, dq, dk, dv;
  };
  auto g = std::make_shared<Grads>();
  g->dout = f32_matrix(N, a.C);
  dev::copy_f32(g->dout.f32(), dout, N * a.C);
  g->dq = f32_matrix(N, qd);
  g->dk = f32_matrix(N, kd);
  g->dv = f32_matrix(N, kd);

  Tensor datt = f32_matrix(N, qd);
  a.gemm_o.backward_input(datt.f32(), dout, a.wo.v(), N, qd, a.C);
  wg.add([&a, &s, g, N, qd] { a.gemm_o.backward_weight(a.wo.g(), g->dout.f32(), s.att.f32(), N, qd, a.C); });

  const float scale = 1.0f / std::sqrt(static_cast<float>(a.D));
  dev::attention_backward_f32(g->dq.f32(), g->dk.f32(), g->dv.f32(), datt.f32(), s.att.f32(), s.lse.f32(), s.q.f32(),
                              s.k.f32(), s.v.f32(), s.key_start.data<int32_t>(), B, T, T, T, a.Hq, a.Hkv, a.D, scale);
  // Undo RoPE (its transpose), then the q/k norms, to reach the gradients of the projections.
  const int32_t* pos = s.pos.data<int32_t>();
  dev::rope_apply_f32(g->dq.f32(), pos, s.rope->cos.f32(), s.rope->sin.f32(), N, a.Hq, a.D, true);
  dev::rope_apply_f32(g->dk.f32(), pos, s.rope->cos.f32(), s.rope->sin.f32(), N, a.Hkv, a.D, true);
  if (a.qk_norm) {
    Tensor dq_normed = g->dq.clone(), dk_normed = g->dk.clone();
    dev::rmsnorm_backward_f32(g->dq.f32(), a.q_norm.g(), dq_normed.f32(), s.q_raw.f32(), a.q_norm.v(), s.q_rstd.f32(),
                              N * a.Hq, a.D);
    dev::rmsnorm_backward_f32(g->dk.f32(), a.k_norm.g(), dk_normed.f32(), s.k_raw.f32(), a.k_norm.v(), s.k_rstd.f32(),
                              N * a.Hkv, a.D);
  }
  if (a.qkv_bias) {
    dev::bias_backward_f32(a.bq.g(), g->dq.f32(), N, qd);
    dev::bias_backward_f32(a.bk.g(), g->dk.f32(), N, kd);
    dev::bias_backward_f32(a.bv.g(), g->dv.f32(), N, kd);
  }
  a.gemm_q.backward_input(dx, g->dq.f32(), a.wq.v(), N, a.C, qd);
  Tensor tmp = f32_matrix(N, a.C);
  a.gemm_k.backward_input(tmp.f32(), g->dk.f32(), a.wk.v(), N, a.C, kd);
  dev::add_inplace_f32(dx, tmp.f32(), N * a.C);
  a.gemm_v.backward_input(tmp.f32(), g->dv.f32(), a.wv.v(), N, a.C, kd);
  dev::add_inplace_f32(dx, tmp.f32(), N * a.C);
  wg.add([&a, &s, g, N, qd, kd] {
    a.gemm_q.backward_weight(a.wq.g(), g->dq.f32(), s.x, N, a.C, qd);
    a.gemm_k.backward_weight(a.wk.g(), g->dk.f32(), s.x, N, a.C, kd);
    a.gemm_v.backward_weight(a.wv.g(), g->dv.f32(), s.x, N, a.C, kd);
  });
}

void attention_decode(Attention& a, KVCache& cache, float* out, const float* x, const int32_t* pos,
                      const int32_t* key_start, int64_t B, int64_t T_new, const RopeTables& rope) {
  CHECK_EQ(B, cache.B) << "decode batch vs cache";
  CHECK_LE(cache.length + T_new, cache.S_cap) << "KV cache full";
  const int64_t N = B * T_new, qd = a.Hq * a.D, kd = a.Hkv * a.D;
  Tensor q = f32_matrix(N, qd), k = f32_matrix(N, kd), v = f32_matrix(N, kd);
  project_qkv(a, nullptr, q.f32(), k.f32(), v.f32(), x, pos, N, rope);
  // Append the new keys and values at [length, length + T_new) of every row.
  for (int64_t b = 0; b < B; ++b) {
    float* kc = cache.k.f32() + (b * cache.S_cap + cache.length) * kd;
    float* vc = cache.v.f32() + (b * cache.S_cap + cache.length) * kd;
    dev::copy_f32(kc, k.f32() + b * T_new * kd, T_new * kd);
    dev::copy_f32(vc, v.f32() + b * T_new * kd, T_new * kd);
  }
  cache.length += T_new;
  Tensor att = f32_matrix(N, qd);
  Tensor lse = f32_vector(B * a.Hq * T_new);
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.D));
  dev::attention_forward_f32(att.f32(), lse.f32(), q.f32(), cache.k.f32(), cache.v.f32(), key_start, B, T_new,
                             cache.length, cache.S_cap, a.Hq, a.Hkv, a.D, scale);
  a.gemm_o.forward(out, att.f32(), a.wo.v(), N, qd, a.C);
}

void KVCache::allocate(int64_t batch, int64_t capacity, int64_t Hkv, int64_t D) {
  B = batch;
  S_cap = capacity;
  length = 0;
  k = Tensor::zeros({batch, capacity, Hkv, D}, DType::kF32);
  v = Tensor::zeros({batch, capacity, Hkv, D}, DType::kF32);
}

}  // namespace strata
