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

namespace {
// What each architecture fixes, so that a model of that arch can be exported to (and imported
// from) its Hugging Face form without changing the function it computes.
void validate_arch(const ModelConfig& m, ConfigChecker& c) {
  const bool moe = m.moe.n_experts > 0;
  std::string name;
  bool want_bias = false, want_qk_norm = false, want_moe = false, allow_bias_choice = false, allow_qk_choice = false;
  switch (m.arch) {
    case ModelArch::kLlama: name = "llama"; break;
    case ModelArch::kQwen2: name = "qwen2"; want_bias = true; break;
    case ModelArch::kQwen3: name = "qwen3"; want_qk_norm = true; break;
    case ModelArch::kMixtral: name = "mixtral"; want_moe = true; break;
    case ModelArch::kQwen2Moe: name = "qwen2_moe"; want_bias = true; want_moe = true; break;
    case ModelArch::kQwen3Moe: name = "qwen3_moe"; want_qk_norm = true; want_moe = true; break;
    case ModelArch::kGlm4Moe:
      name = "glm4_moe";
      want_moe = true;
      allow_bias_choice = allow_qk_choice = true;
      break;
  }
  auto fail = [&](const std::string& key, const std::string& what) {
    c.fail(key, absl::StrCat(what, " (arch: ", name, ")"), {"arch"});
  };
  if (!allow_bias_choice && m.qkv_bias != want_bias) fail("qkv_bias", want_bias ? "must be true" : "must be false");
  if (!allow_qk_choice && m.qk_norm != want_qk_norm) fail("qk_norm", want_qk_norm ? "must be true" : "must be false");
  if (moe != want_moe) {
    fail("moe.n_experts", want_moe ? "must be > 0: this is an MoE architecture" : "must be 0: this is a dense architecture");
    return;
  }
  if (!moe) return;
  const MoeConfig& e = m.moe;
  const bool sigmoid = m.arch == ModelArch::kGlm4Moe;
  if ((e.scoring == RouterScoring::kSigmoid) != sigmoid) fail("moe.scoring", sigmoid ? "must be sigmoid" : "must be softmax");
  if (!sigmoid && e.first_k_dense != 0) fail("moe.first_k_dense", "must be 0");
  if (!sigmoid && (e.n_group != 1 || e.routed_scaling_factor != 1.0)) {
    fail(e.n_group != 1 ? "moe.n_group" : "moe.routed_scaling_factor", "group routing and scaling are glm4_moe's");
  }
  if (m.arch == ModelArch::kMixtral && !e.norm_topk_prob) fail("moe.norm_topk_prob", "must be true");
  if (m.arch == ModelArch::kMixtral && e.expert_ffn_hidden != m.ffn_hidden) {
    fail("moe.expert_ffn_hidden", absl::StrCat("must equal ffn_hidden=", m.ffn_hidden));
  }
  const bool gated_shared = m.arch == ModelArch::kQwen2Moe;
  if (gated_shared && (e.n_shared_experts != 1 || !e.shared_expert_gate)) {
    fail("moe.shared_expert_gate", "qwen2_moe has one sigmoid-gated shared expert (n_shared_experts: 1, shared_expert_gate: true)");
  }
  if (!gated_shared && e.shared_expert_gate) fail("moe.shared_expert_gate", "must be false");
  if ((m.arch == ModelArch::kMixtral || m.arch == ModelArch::kQwen3Moe) && e.n_shared_experts != 0) {
    fail("moe.n_shared_experts", "must be 0");
  }
  if (m.arch == ModelArch::kGlm4Moe && e.shared_ffn_hidden != 0 &&
      e.shared_ffn_hidden != e.n_shared_experts * e.expert_ffn_hidden) {
    fail("moe.shared_ffn_hidden", "must be 0 (= n_shared_experts x expert_ffn_hidden)");
  }
}
}  // namespace

void ModelConfig::validate(ConfigChecker& c) const {
  validate_arch(*this, c);
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
  if (!init_from.empty() && init_from.rfind("hf:", 0) != 0 && init_from.rfind("ckpt:", 0) != 0) {
    c.fail("init_from", absl::StrCat("\"", init_from, "\" must be empty, hf:DIR or ckpt:PATH"));
  }
}

}  // namespace strata
