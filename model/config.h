// ModelConfig: the architecture of a decoder-only (MoE) transformer, in Hugging Face's terms so
// that weights import and export (REFERENCE.md section 1). Field docs name the HF config key
// where it differs. A model with moe.n_experts = 0 is dense; otherwise blocks from
// moe.first_k_dense on are MoE blocks.
#pragma once

#include <cstdint>
#include <string>

#include "core/config_schema.h"

namespace strata {

enum class ModelArch { kLlama, kQwen2, kQwen3, kMixtral, kQwen2Moe, kQwen3Moe, kGlm4Moe };
enum class RouterScoring { kSoftmax, kSigmoid };
enum class AuxLoss { kNone, kSeq, kSwitch };
enum class RopeScalingType { kNone, kLlama3 };
enum class Recompute { kNone, kFull };

struct RopeScalingConfig {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;

  template <class V>
  void visit(V& v) {
    v.choice("type", type, "RoPE frequency scaling (HF rope_scaling.rope_type)",
             Choices<RopeScalingType>{{"none", RopeScalingType::kNone}, {"llama3", RopeScalingType::kLlama3}});
    v.field("factor", factor, "llama3: wavelength scale factor", Range::at_least(1));
    v.field("low_freq_factor", low_freq_factor, "llama3: low-frequency factor", Range::above(0));
    v.field("high_freq_factor", high_freq_factor, "llama3: high-frequency factor", Range::above(0));
    v.field("original_max_position_embeddings", original_max_position_embeddings,
            "llama3: context length the model was pre-trained with", Range::at_least(1));
  }
  void validate(ConfigChecker& c) const;
};

struct MoeConfig {
  int64_t n_experts = 0;
  int64_t top_k = 2;
  int64_t expert_ffn_hidden = 0;
  int64_t n_shared_experts = 0;
  int64_t shared_ffn_hidden = 0;
  bool shared_expert_gate = false;
  int64_t first_k_dense = 0;
  RouterScoring scoring = RouterScoring::kSoftmax;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  AuxLoss aux_loss = AuxLoss::kNone;
  double aux_loss_coef = 1e-4;
  double bias_update_rate = 0.0;
  double capacity_factor = 0.0;

  template <class V>
  void visit(V& v) {
    v.field("n_experts", n_experts, "routed experts per MoE block; 0 = dense model (HF n_routed_experts / num_experts)",
            Range::at_least(0));
    v.field("top_k", top_k, "experts chosen per token (HF num_experts_per_tok)", Range::at_least(1));
    v.field("expert_ffn_hidden", expert_ffn_hidden, "hidden size of each expert (HF moe_intermediate_size)",
            Range::at_least(0));
    v.field("n_shared_experts", n_shared_experts, "always-on shared experts (DeepSeek-V3, Qwen2-MoE)", Range::at_least(0));
    v.field("shared_ffn_hidden", shared_ffn_hidden,
            "hidden size of the shared-expert MLP; 0 = n_shared_experts x expert_ffn_hidden (HF shared_expert_intermediate_size)",
            Range::at_least(0));
    v.field("shared_expert_gate", shared_expert_gate, "scale shared experts by sigmoid(gate(x)) as Qwen2-MoE does");
    v.field("first_k_dense", first_k_dense, "leading blocks that use the dense MLP (HF first_k_dense_replace)",
            Range::at_least(0));
    v.choice("scoring", scoring, "router scoring: softmax (Mixtral, Qwen-MoE) or sigmoid (DeepSeek-V3)",
             Choices<RouterScoring>{{"softmax", RouterScoring::kSoftmax}, {"sigmoid", RouterScoring::kSigmoid}});
    v.field("norm_topk_prob", norm_topk_prob, "renormalise the top-k weights to sum to 1");
    v.field("routed_scaling_factor", routed_scaling_factor, "multiplier on routed-expert weights (DeepSeek-V3)",
            Range::above(0));
    v.field("n_group", n_group, "expert groups for group-limited routing (1 = off)", Range::at_least(1));
    v.field("topk_group", topk_group, "groups kept per token in group-limited routing", Range::at_least(1));
    v.choice("aux_loss", aux_loss, "auxiliary balance loss: none, seq (DeepSeek-V3 sequence-wise), switch (Mixtral/Qwen)",
             Choices<AuxLoss>{{"none", AuxLoss::kNone}, {"seq", AuxLoss::kSeq}, {"switch", AuxLoss::kSwitch}});
    v.field("aux_loss_coef", aux_loss_coef, "weight of the auxiliary loss (alpha)", Range::at_least(0));
    v.field("bias_update_rate", bias_update_rate, "aux-loss-free balancing step gamma (0 = off; DeepSeek-V3 used 1e-3)",
            Range::at_least(0));
    v.field("capacity_factor", capacity_factor, "expert capacity as a multiple of the even share; 0 = unlimited (no drops)",
            Range::at_least(0));
  }
  void validate(ConfigChecker& c) const;
};

struct ModelConfig {
  ModelArch arch = ModelArch::kLlama;
  int64_t vocab_size = 256;
  int64_t d_model = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t head_dim = 0;
  int64_t ffn_hidden = 1024;
  int64_t max_seq_len = 512;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  bool tie_embeddings = false;
  bool qkv_bias = false;
  bool qk_norm = false;
  double init_std = 0.02;
  Recompute recompute = Recompute::kNone;
  std::string init_from;
  RopeScalingConfig rope_scaling;
  MoeConfig moe;

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : d_model / n_heads; }
  int64_t resolved_shared_ffn_hidden() const {
    return moe.shared_ffn_hidden > 0 ? moe.shared_ffn_hidden : moe.n_shared_experts * moe.expert_ffn_hidden;
  }
  // Block i is an MoE block (else it uses the dense MLP).
  bool is_moe_block(int64_t i) const { return moe.n_experts > 0 && i >= moe.first_k_dense; }
  bool is_moe() const { return moe.n_experts > 0; }

  template <class V>
  void visit(V& v) {
    v.choice("arch", arch,
             "architecture, which fixes Hugging Face names for import/export; glm4_moe is DeepSeek-V3's MoE "
             "(sigmoid routing, balancing bias, groups, shared experts) on standard attention",
             Choices<ModelArch>{{"llama", ModelArch::kLlama},
                                {"qwen2", ModelArch::kQwen2},
                                {"qwen3", ModelArch::kQwen3},
                                {"mixtral", ModelArch::kMixtral},
                                {"qwen2_moe", ModelArch::kQwen2Moe},
                                {"qwen3_moe", ModelArch::kQwen3Moe},
                                {"glm4_moe", ModelArch::kGlm4Moe}});
    v.field("vocab_size", vocab_size, "vocabulary size (must cover the tokenizer)", Range::at_least(1));
    v.field("d_model", d_model, "hidden size (HF hidden_size)", Range::at_least(1));
    v.field("n_layers", n_layers, "transformer blocks (HF num_hidden_layers)", Range::at_least(1));
    v.field("n_heads", n_heads, "attention query heads", Range::at_least(1));
    v.field("n_kv_heads", n_kv_heads, "key/value heads (grouped-query attention); must divide n_heads", Range::at_least(1));
    v.field("head_dim", head_dim, "size of each head; 0 = d_model / n_heads", Range::at_least(0));
    v.field("ffn_hidden", ffn_hidden, "hidden size of the dense SwiGLU MLP (HF intermediate_size)", Range::at_least(1));
    v.field("max_seq_len", max_seq_len, "longest sequence, prompt plus completion (HF max_position_embeddings)",
            Range::at_least(1));
    v.field("rope_theta", rope_theta, "RoPE base frequency", Range::above(0));
    v.field("norm_eps", norm_eps, "RMSNorm epsilon (HF rms_norm_eps)", Range::above(0));
    v.field("tie_embeddings", tie_embeddings, "share the embedding and LM-head matrix");
    v.field("qkv_bias", qkv_bias, "bias on q/k/v projections (Qwen2)");
    v.field("qk_norm", qk_norm, "per-head RMSNorm on queries and keys (Qwen3)");
    v.field("init_std", init_std, "standard deviation of the normal initialisation", Range::above(0));
    v.choice("recompute", recompute, "activation recomputation per block: none or full",
             Choices<Recompute>{{"none", Recompute::kNone}, {"full", Recompute::kFull}});
    v.field("init_from", init_from, "start from weights: \"\" (random init), hf:DIR (a Hugging Face checkpoint) or ckpt:PATH (a Strata run or checkpoint; weights only)");
    v.section("rope_scaling", rope_scaling, "RoPE scaling (Llama-3 long context)");
    v.section("moe", moe, "Mixture-of-Experts blocks");
  }
  void validate(ConfigChecker& c) const;
};

}  // namespace strata
