#include "model/block.h"

#include "kernels/dispatch.h"  // dev:: ops on the compute device

namespace strata {

void Block::build(const ModelConfig& config, const LinearPolicy& policy, int64_t block_index, ExpertShard experts) {
  const std::string prefix = "layers." + std::to_string(block_index) + ".";
  index = block_index;
  is_moe = config.is_moe_block(block_index);
  recompute = config.recompute == Recompute::kFull;
  norm_eps = static_cast<float>(config.norm_eps);
  attn_norm.allocate({config.d_model});
  mlp_norm.allocate({config.d_model});
  attn.build(config, policy, prefix + "attn.");
  if (is_moe) {
    moe.build(config, policy, prefix + "moe.", experts);
  } else {
    mlp.build(config.d_model, config.ffn_hidden, policy, "mlp", prefix + "mlp.");
  }
}

void Block::linear_gemms(std::vector<LinearGemm*>& out) {
  attn.linear_gemms(out);
  if (is_moe) {
    moe.linear_gemms(out);
  } else {
    mlp.linear_gemms(out);
  }
}

void Block::collect(ParamList& out, const std::string& prefix) {
  out.push_back({prefix + "attn_norm", &attn_norm, ParamKind::kNorm});
  attn.collect(out, prefix + "attn.");
  out.push_back({prefix + "mlp_norm", &mlp_norm, ParamKind::kNorm});
  if (is_moe) {
    moe.collect(out, prefix + "moe.");
  } else {
    mlp.collect(out, prefix + "mlp.");
  }
}

void block_forward(Block& blk, BlockSaved& s, float* y, const float* x, const int32_t* pos,
                   const int32_t* key_start, int64_t B, int64_t T, const RopeTables& rope) {
  const int64_t N = B * T, C = blk.attn.C;
  s.B = B;
  s.T = T;
  s.pos = pos;
  s.key_start = key_start;
  s.rope = &rope;
  if (s.x.raw() != x) {
    s.x = f32_matrix(N, C);
    dev::copy_f32(s.x.f32(), x, N * C);
  }
  Tensor xn = f32_matrix(N, C);  // norm outputs: the layers keep what their backward needs of them
  s.rstd1 = f32_vector(N);
  dev::rmsnorm_forward_f32(xn.f32(), s.rstd1.f32(), x, blk.attn_norm.v(), N, C, blk.norm_eps);
  s.h = f32_matrix(N, C);
  attention_forward(blk.attn, s.attn, s.h.f32(), xn.f32(), pos, key_start, B, T, rope);
  dev::add_inplace_f32(s.h.f32(), x, N * C);
  s.rstd2 = f32_vector(N);
  dev::rmsnorm_forward_f32(xn.f32(), s.rstd2.f32(), s.h.f32(), blk.mlp_norm.v(), N, C, blk.norm_eps);
  if (blk.is_moe) {
    moe_forward(blk.moe, s.moe, y, xn.f32(), B, T);
  } else {
    mlp_forward(blk.mlp, s.mlp, y, xn.f32(), N);
  }
  dev::add_inplace_f32(y, s.h.f32(), N * C);
  s.complete = true;
  if (blk.recompute) {  // keep the input (and the MoE statistics); rebuild the rest in backward
    s.rstd1 = s.h = s.rstd2 = Tensor();
    s.attn = AttentionSaved();
    s.mlp = MlpSaved();
    MoeSaved kept;
    kept.load = std::move(s.moe.load);
    kept.prob_sum = std::move(s.moe.prob_sum);
    kept.dropped = s.moe.dropped;
    kept.aux_loss = s.moe.aux_loss;
    s.moe = std::move(kept);
    s.complete = false;
  }
}

void block_backward(Block& blk, BlockSaved& s, float* dx, const float* dy, WeightGrads& wg) {
  const int64_t N = s.B * s.T, C = blk.attn.C;
  if (!s.complete) {  // recomputation: the same forward again, now keeping everything
    std::vector<float> aux_dprob = std::move(s.moe.aux_dprob);
    const double aux_weight = s.moe.aux_weight;
    Tensor y = f32_matrix(N, C);
    const bool recompute = blk.recompute;
    blk.recompute = false;
    block_forward(blk, s, y.f32(), s.x.f32(), s.pos, s.key_start, s.B, s.T, *s.rope);
    blk.recompute = recompute;
    s.moe.aux_dprob = std::move(aux_dprob);
    s.moe.aux_weight = aux_weight;
  }
  // y = h + ffn(norm2(h)): dh = dy + norm2'(ffn'(dy)).
  Tensor dxn = f32_matrix(N, C), dh = f32_matrix(N, C);
  if (blk.is_moe) {
    moe_backward(blk.moe, s.moe, dxn.f32(), dy, wg);
  } else {
    mlp_backward(blk.mlp, s.mlp, dxn.f32(), dy, wg);
  }
  dev::rmsnorm_backward_f32(dh.f32(), blk.mlp_norm.g(), dxn.f32(), s.h.f32(), blk.mlp_norm.v(), s.rstd2.f32(), N, C);
  dev::add_inplace_f32(dh.f32(), dy, N * C);
  // h = x + attn(norm1(x)): dx = dh + norm1'(attn'(dh)).
  attention_backward(blk.attn, s.attn, dxn.f32(), dh.f32(), wg);
  dev::rmsnorm_backward_f32(dx, blk.attn_norm.g(), dxn.f32(), s.x.f32(), blk.attn_norm.v(), s.rstd1.f32(), N, C);
  dev::add_inplace_f32(dx, dh.f32(), N * C);
}

void block_decode(Block& blk, KVCache& cache, float* y, const float* x, const int32_t* pos,
                  const int32_t* key_start, int64_t B, int64_t T_new, const RopeTables& rope) {
  const int64_t N = B * T_new, C = blk.attn.C;
  Tensor xn = f32_matrix(N, C), rstd = f32_vector(N), h = f32_matrix(N, C);
  dev::rmsnorm_forward_f32(xn.f32(), rstd.f32(), x, blk.attn_norm.v(), N, C, blk.norm_eps);
  attention_decode(blk.attn, cache, h.f32(), xn.f32(), pos, key_start, B, T_new, rope);
  dev::add_inplace_f32(h.f32(), x, N * C);
  dev::rmsnorm_forward_f32(xn.f32(), rstd.f32(), h.f32(), blk.mlp_norm.v(), N, C, blk.norm_eps);
  if (blk.is_moe) {
    MoeSaved scratch;
    moe_forward(blk.moe, scratch, y, xn.f32(), B, T_new);
  } else {
    mlp_infer(blk.mlp, y, xn.f32(), N);
  }
  dev::add_inplace_f32(y, h.f32(), N * C);
}

}  // namespace strata
