#include "model/flops.h"

namespace strata {

double active_matmul_params(const ModelConfig& c) {
  const double C = static_cast<double>(c.d_model), D = static_cast<double>(c.resolved_head_dim());
  const double attn = C * D * (2.0 * c.n_heads + 2.0 * c.n_kv_heads);
  double total = static_cast<double>(c.vocab_size) * C;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    total += attn;
    if (c.is_moe_block(l)) {
      total += c.moe.n_experts * C + c.moe.top_k * 3.0 * C * c.moe.expert_ffn_hidden +
               3.0 * C * c.resolved_shared_ffn_hidden() + (c.moe.shared_expert_gate ? C : 0.0);
    } else {
      total += 3.0 * C * c.ffn_hidden;
    }
  }
  return total;
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
