#include "model/config.h"

#include "absl/strings/str_cat.h"

namespace strata {

void RopeScalingConfig::validate(ConfigChecker& c) const {
  if (type == RopeScalingType::kLlama3 && !(high_freq_factor > low_freq_factor)) {
    c.fail("high_freq_factor",
           absl::StrCat(high_freq_factor, " must be greater than low_freq_factor=", low_freq_factor),
           {"low_freq_factor"});
  }
}

void MoeConfig::validate(ConfigChecker& c) const {
  if (n_experts == 0) return;  // dense model: the other MoE fields are unused
  if (top_k > n_experts) {
    c.fail("top_k", absl::StrCat(top_k, " exceeds n_experts=", n_experts), {"n_experts"});
  }
  if (expert_ffn_hidden == 0) {
    c.fail("expert_ffn_hidden", "must be set (> 0) when n_experts > 0", {"n_experts"});
  }
  if (n_experts % n_group != 0) {
    c.fail("n_group", absl::StrCat(n_group, " does not divide n_experts=", n_experts), {"n_experts"});
  } else if (topk_group > n_group) {
    c.fail("topk_group", absl::StrCat(topk_group, " exceeds n_group=", n_group), {"n_group"});
  } else if (topk_group * (n_experts / n_group) < top_k) {
    c.fail("topk_group",
           absl::StrCat("the ", topk_group, " kept groups hold ", topk_group * (n_experts / n_group),
                        " experts, fewer than top_k=", top_k),
           {"top_k"});
  }
  if (shared_expert_gate && n_shared_experts == 0) {
    c.fail("shared_expert_gate", "needs n_shared_experts > 0", {"n_shared_experts"});
  }
}

void ModelConfig::validate(ConfigChecker& c) const {
  if (head_dim == 0 && d_model % n_heads != 0) {
    c.fail("n_heads", absl::StrCat(n_heads, " does not divide d_model=", d_model, " (or set head_dim)"),
           {"d_model"});
  }
  if (n_heads % n_kv_heads != 0) {
    c.fail("n_kv_heads", absl::StrCat(n_kv_heads, " does not divide n_heads=", n_heads), {"n_heads"});
  }
  if (resolved_head_dim() % 2 != 0) {
    c.fail("head_dim", absl::StrCat("RoPE needs an even head size, got ", resolved_head_dim()), {"d_model", "n_heads"});
  }
  if (moe.n_experts > 0 && moe.first_k_dense >= n_layers) {
    c.fail("moe.first_k_dense",
           absl::StrCat(moe.first_k_dense, " leaves no MoE block among n_layers=", n_layers), {"n_layers"});
  }
  if (!init_from.empty() && init_from.rfind("hf:", 0) != 0) {
    c.fail("init_from", absl::StrCat("\"", init_from, "\" must be empty or hf:DIR"));
  }
}

}  // namespace strata
