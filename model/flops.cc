#include "model/flops.h"

namespace strata {

double block_active_matmul_params(const ModelConfig& c, int64_t layer) {
  const double C = static_cast<double>(c.d_model), D = static_cast<double>(c.resolved_head_dim());
  const double attn = C * D * (2.0 * c.n_heads + 2.0 * c.n_kv_heads);
  if (c.is_moe_block(layer)) {
    return attn + c.moe.n_experts * C + c.moe.top_k * 3.0 * C * c.moe.expert_ffn_hidden +
           3.0 * C * c.resolved_shared_ffn_hidden() + (c.moe.shared_expert_gate ? C : 0.0);
  }
  return attn + 3.0 * C * c.ffn_hidden;
}

double active_matmul_params(const ModelConfig& c) {
  double total = static_cast<double>(c.vocab_size) * static_cast<double>(c.d_model);
  for (int64_t l = 0; l < c.n_layers; ++l) total += block_active_matmul_params(c, l);
  return total;
}

double block_train_flops_per_token(const ModelConfig& c, int64_t layer, int64_t S) {
  return 6.0 * block_active_matmul_params(c, layer) + 12.0 * c.n_heads * c.resolved_head_dim() * static_cast<double>(S) / 2.0;
}

double head_train_flops_per_token(const ModelConfig& c) {
  return 6.0 * static_cast<double>(c.vocab_size) * static_cast<double>(c.d_model);
}

double train_flops_per_token(const ModelConfig& c, int64_t S) {
  return 6.0 * active_matmul_params(c) +
         12.0 * c.n_layers * c.n_heads * c.resolved_head_dim() * static_cast<double>(S) / 2.0;
}

double forward_flops_per_token(const ModelConfig& c, int64_t S) {
  return 2.0 * active_matmul_params(c) +
         4.0 * c.n_layers * c.n_heads * c.resolved_head_dim() * static_cast<double>(S) / 2.0;
}

}  // namespace strata
