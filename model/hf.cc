#include "model/hf.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/safetensors.h"

namespace strata {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

StatusOr<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct ArchInfo {
  ModelArch arch;
  const char* model_type;
};
constexpr ArchInfo kArchs[] = {
    {ModelArch::kLlama, "llama"},         {ModelArch::kQwen2, "qwen2"},
    {ModelArch::kQwen3, "qwen3"},         {ModelArch::kMixtral, "mixtral"},
    {ModelArch::kQwen2Moe, "qwen2_moe"},  {ModelArch::kQwen3Moe, "qwen3_moe"},
    {ModelArch::kGlm4Moe, "glm4_moe"},
};

// Reads config.json fields with typed, named errors.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  template <typename T>
  Status get(const char* key, T* out) const {
    if (!j_.contains(key) || j_[key].is_null()) return absl::InvalidArgumentError(absl::StrCat(source_, ": ", key, ": missing"));
    return read(key, j_[key], out);
  }
  template <typename T>
  Status get_or(const char* key, T* out, T fallback) const {
    if (!j_.contains(key) || j_[key].is_null()) {
      *out = fallback;
      return OkStatus();
    }
    return read(key, j_[key], out);
  }
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
  const json& at(const char* key) const { return j_[key]; }
  Status unsupported(const char* key, const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", key, ": ", why));
  }

 private:
  template <typename T>
  Status read(const char* key, const json& v, T* out) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) return type_error(key, "true or false");
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) return type_error(key, "an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) return type_error(key, "a number");
    } else {
      if (!v.is_string()) return type_error(key, "a string");
    }
    *out = v.get<T>();
    return OkStatus();
  }
  Status type_error(const char* key, const char* want) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", key, ": expected ", want));
  }
  const json& j_;
  std::string source_;
};

Status read_rope(const Fields& f, const std::string& source, ModelConfig* c) {
  // transformers 5 nests RoPE in rope_parameters; published checkpoints have top-level fields.
  json rope = json::object();
  if (f.has("rope_parameters")) {
    rope = f.at("rope_parameters");
  } else {
    if (f.has("rope_scaling")) rope = f.at("rope_scaling");
    if (f.has("rope_theta")) rope["rope_theta"] = f.at("rope_theta");
  }
  if (!rope.is_object()) return absl::InvalidArgumentError(absl::StrCat(source, ": rope_parameters: expected an object"));
  Fields r(rope, source + ": rope_parameters");
  RETURN_IF_ERROR(r.get_or("rope_theta", &c->rope_theta, 10000.0));
  std::string type = "default";
  if (rope.contains("rope_type")) RETURN_IF_ERROR(r.get("rope_type", &type));
  else if (rope.contains("type")) RETURN_IF_ERROR(r.get("type", &type));
  double partial = 1.0;
  RETURN_IF_ERROR(r.get_or("partial_rotary_factor", &partial, 1.0));
  if (f.has("partial_rotary_factor")) RETURN_IF_ERROR(f.get("partial_rotary_factor", &partial));
  if (partial != 1.0) return f.unsupported("partial_rotary_factor", absl::StrCat(partial, ": only full rotary (1.0) is supported"));
  if (type == "default") {
    c->rope_scaling.type = RopeScalingType::kNone;
  } else if (type == "llama3") {
    RopeScalingConfig& s = c->rope_scaling;
    s.type = RopeScalingType::kLlama3;
    RETURN_IF_ERROR(r.get("factor", &s.factor));
    RETURN_IF_ERROR(r.get("low_freq_factor", &s.low_freq_factor));
    RETURN_IF_ERROR(r.get("high_freq_factor", &s.high_freq_factor));
    RETURN_IF_ERROR(r.get("original_max_position_embeddings", &s.original_max_position_embeddings));
  } else {
    return f.unsupported("rope_type", absl::StrCat("\"", type, "\" is not supported (default, llama3)"));
  }
  return OkStatus();
}

bool is_moe_arch(ModelArch a) {
  return a == ModelArch::kMixtral || a == ModelArch::kQwen2Moe || a == ModelArch::kQwen3Moe ||
         a == ModelArch::kGlm4Moe;
}

}  // namespace

const char* hf_model_type(ModelArch arch) {
  for (const ArchInfo& a : kArchs)
    if (a.arch == arch) return a.model_type;
  return "?";
}

StatusOr<ModelConfig> model_config_from_hf_json(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  Fields f(j, source);
  std::string model_type;
  RETURN_IF_ERROR(f.get("model_type", &model_type));
  ModelConfig c;
  bool known = false;
  for (const ArchInfo& a : kArchs) {
    if (model_type == a.model_type) {
      c.arch = a.arch;
      known = true;
    }
  }
  if (!known) {
    std::vector<std::string> names;
    for (const ArchInfo& a : kArchs) names.push_back(a.model_type);
    return f.unsupported("model_type", absl::StrCat("\"", model_type, "\" is not supported (", absl::StrJoin(names, ", "), ")"));
  }
  RETURN_IF_ERROR(f.get("vocab_size", &c.vocab_size));
  RETURN_IF_ERROR(f.get("hidden_size", &c.d_model));
  RETURN_IF_ERROR(f.get("num_hidden_layers", &c.n_layers));
  RETURN_IF_ERROR(f.get("num_attention_heads", &c.n_heads));
  RETURN_IF_ERROR(f.get_or("num_key_value_heads", &c.n_kv_heads, c.n_heads));
  RETURN_IF_ERROR(f.get_or("head_dim", &c.head_dim, int64_t{0}));
  if (c.head_dim == c.d_model / c.n_heads) c.head_dim = 0;
  RETURN_IF_ERROR(f.get_or("intermediate_size", &c.ffn_hidden, int64_t{0}));
  RETURN_IF_ERROR(f.get_or("max_position_embeddings", &c.max_seq_len, int64_t{2048}));
  RETURN_IF_ERROR(f.get_or("rms_norm_eps", &c.norm_eps, 1e-6));
  RETURN_IF_ERROR(f.get_or("tie_word_embeddings", &c.tie_embeddings, false));
  RETURN_IF_ERROR(f.get_or("initializer_range", &c.init_std, 0.02));
  RETURN_IF_ERROR(read_rope(f, source, &c));
  std::string act = "silu";
  RETURN_IF_ERROR(f.get_or("hidden_act", &act, std::string("silu")));
  if (act != "silu") return f.unsupported("hidden_act", absl::StrCat("\"", act, "\": only silu (SwiGLU) is supported"));

  bool attention_bias = false;
  RETURN_IF_ERROR(f.get_or("attention_bias", &attention_bias, false));
  bool mlp_bias = false;
  RETURN_IF_ERROR(f.get_or("mlp_bias", &mlp_bias, false));
  if (mlp_bias) return f.unsupported("mlp_bias", "MLP biases are not supported");
  switch (c.arch) {
    case ModelArch::kLlama:
    case ModelArch::kMixtral:
      // Llama's attention_bias adds a bias to o_proj too, which Strata does not have.
      if (attention_bias) return f.unsupported("attention_bias", "biases on all four projections are not supported");
      break;
    case ModelArch::kQwen2:
    case ModelArch::kQwen2Moe:
      c.qkv_bias = true;  // always on in Qwen2 attention
      break;
    case ModelArch::kQwen3:
    case ModelArch::kQwen3Moe:
      c.qk_norm = true;
      if (attention_bias) return f.unsupported("attention_bias", "biases on all four projections are not supported");
      break;
    case ModelArch::kGlm4Moe: {
      c.qkv_bias = attention_bias;  // GLM-4-MoE biases q, k, v only
      RETURN_IF_ERROR(f.get_or("use_qk_norm", &c.qk_norm, false));
      int64_t mtp = 0;
      RETURN_IF_ERROR(f.get_or("num_nextn_predict_layers", &mtp, int64_t{0}));
      (void)mtp;  // multi-token-prediction layers are not loaded; the main model is complete without them
      break;
    }
  }
  bool sliding = false;
  RETURN_IF_ERROR(f.get_or("use_sliding_window", &sliding, false));
  if (sliding) return f.unsupported("use_sliding_window", "sliding-window attention is not supported");

  MoeConfig& m = c.moe;
  if (is_moe_arch(c.arch)) {
    RETURN_IF_ERROR(f.get("num_experts_per_tok", &m.top_k));
    bool router_logits = false;
    RETURN_IF_ERROR(f.get_or("output_router_logits", &router_logits, false));
    double coef = 0.0;
    RETURN_IF_ERROR(f.get_or("router_aux_loss_coef", &coef, 0.001));
    if (router_logits) {  // transformers adds the load-balancing loss only then
      m.aux_loss = AuxLoss::kSwitch;
      m.aux_loss_coef = coef;
    }
  }
  switch (c.arch) {
    case ModelArch::kMixtral:
      RETURN_IF_ERROR(f.get("num_local_experts", &m.n_experts));
      m.expert_ffn_hidden = c.ffn_hidden;
      m.norm_topk_prob = true;
      break;
    case ModelArch::kQwen2Moe:
    case ModelArch::kQwen3Moe: {
      // transformers 5 writes num_local_experts for qwen3_moe; published checkpoints num_experts.
      RETURN_IF_ERROR(f.has("num_local_experts") ? f.get("num_local_experts", &m.n_experts)
                                                 : f.get("num_experts", &m.n_experts));
      RETURN_IF_ERROR(f.get("moe_intermediate_size", &m.expert_ffn_hidden));
      RETURN_IF_ERROR(f.get_or("norm_topk_prob", &m.norm_topk_prob, false));
      int64_t step = 1;
      RETURN_IF_ERROR(f.get_or("decoder_sparse_step", &step, int64_t{1}));
      if (step != 1) return f.unsupported("decoder_sparse_step", absl::StrCat(step, ": only 1 (every block MoE) is supported"));
      if (f.has("mlp_only_layers")) {  // dense blocks: only a prefix 0..k-1 (Strata's first_k_dense)
        const json& dense = f.at("mlp_only_layers");
        bool prefix = dense.is_array();
        for (size_t i = 0; prefix && i < dense.size(); ++i) prefix = dense[i].is_number_integer() && dense[i] == json(i);
        if (!prefix) return f.unsupported("mlp_only_layers", "only the first blocks (0, 1, ..., k-1) may be dense");
        m.first_k_dense = static_cast<int64_t>(dense.size());
      }
      if (c.arch == ModelArch::kQwen2Moe) {
        m.n_shared_experts = 1;
        m.shared_expert_gate = true;
        RETURN_IF_ERROR(f.get("shared_expert_intermediate_size", &m.shared_ffn_hidden));
      }
      break;
    }
    case ModelArch::kGlm4Moe: {
      RETURN_IF_ERROR(f.get("n_routed_experts", &m.n_experts));
      RETURN_IF_ERROR(f.get("moe_intermediate_size", &m.expert_ffn_hidden));
      RETURN_IF_ERROR(f.get_or("n_shared_experts", &m.n_shared_experts, int64_t{0}));
      RETURN_IF_ERROR(f.get_or("first_k_dense_replace", &m.first_k_dense, int64_t{0}));
      RETURN_IF_ERROR(f.get_or("n_group", &m.n_group, int64_t{1}));
      RETURN_IF_ERROR(f.get_or("topk_group", &m.topk_group, int64_t{1}));
      RETURN_IF_ERROR(f.get_or("routed_scaling_factor", &m.routed_scaling_factor, 1.0));
      RETURN_IF_ERROR(f.get_or("norm_topk_prob", &m.norm_topk_prob, true));
      m.scoring = RouterScoring::kSigmoid;
      break;
    }
    default:
      break;
  }
  ConfigChecker checker("model");
  c.validate(checker);
  c.moe.validate(checker);
  if (!checker.problems().empty()) {
    const auto& p = checker.problems().front();
    return absl::InvalidArgumentError(absl::StrCat(source, ": gives ", p.keys[0], ": ", p.message));
  }
  return c;
}

StatusOr<ModelConfig> load_hf_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  ASSIGN_OR_RETURN(std::string text, read_text(path));
  return model_config_from_hf_json(text, path);
}

namespace {

const char* hf_architecture(ModelArch arch) {
  switch (arch) {
    case ModelArch::kLlama: return "LlamaForCausalLM";
    case ModelArch::kQwen2: return "Qwen2ForCausalLM";
    case ModelArch::kQwen3: return "Qwen3ForCausalLM";
    case ModelArch::kMixtral: return "MixtralForCausalLM";
    case ModelArch::kQwen2Moe: return "Qwen2MoeForCausalLM";
    case ModelArch::kQwen3Moe: return "Qwen3MoeForCausalLM";
    case ModelArch::kGlm4Moe: return "Glm4MoeForCausalLM";
  }
  return "?";
}

}  // namespace

StatusOr<std::string> model_config_to_hf_json(const ModelConfig& c, const std::string& dtype, int64_t bos_id,
                                              int64_t eos_id) {
  const std::string type = hf_model_type(c.arch);
  auto cannot = [&](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("model.", field, ": ", why, "; ", type,
                                                   "'s config.json cannot express it"));
  };
  json j;
  j["architectures"] = {hf_architecture(c.arch)};
  j["model_type"] = type;
  j["dtype"] = dtype;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.resolved_head_dim();
  j["intermediate_size"] = c.ffn_hidden;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["initializer_range"] = c.init_std;
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  j["bos_token_id"] = bos_id >= 0 ? json(bos_id) : json(nullptr);
  j["eos_token_id"] = eos_id >= 0 ? json(eos_id) : json(nullptr);
  j["pad_token_id"] = nullptr;
  j["transformers_version"] = "5.23.0";
  json rope = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
  if (c.rope_scaling.type == RopeScalingType::kLlama3) {
    rope["rope_type"] = "llama3";
    rope["factor"] = c.rope_scaling.factor;
    rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  }
  // GLM-4 rotates half of each head unless told otherwise: say "all of it" explicitly.
  if (c.arch == ModelArch::kGlm4Moe) rope["partial_rotary_factor"] = 1.0;
  j["rope_parameters"] = rope;

  // Attention: q/k/v biases and q/k norms exist where the architecture has them, and only there.
  const bool qkv_bias_fixed = c.arch == ModelArch::kQwen2 || c.arch == ModelArch::kQwen2Moe;
  const bool qk_norm_fixed = c.arch == ModelArch::kQwen3 || c.arch == ModelArch::kQwen3Moe;
  if (c.arch != ModelArch::kGlm4Moe) {
    if (c.qkv_bias != qkv_bias_fixed) return cannot("qkv_bias", c.qkv_bias ? "q/k/v biases" : "no q/k/v biases");
    if (c.qk_norm != qk_norm_fixed) return cannot("qk_norm", c.qk_norm ? "q/k norms" : "no q/k norms");
    if (!qkv_bias_fixed) j["attention_bias"] = false;
  } else {
    j["attention_bias"] = c.qkv_bias;
    j["use_qk_norm"] = c.qk_norm;
    j["num_nextn_predict_layers"] = 0;
  }
  if (c.arch == ModelArch::kQwen2 || c.arch == ModelArch::kQwen3 || c.arch == ModelArch::kQwen2Moe ||
      c.arch == ModelArch::kQwen3Moe) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  }

  const MoeConfig& m = c.moe;
  if (!is_moe_arch(c.arch)) {
    if (c.is_moe()) return cannot("moe.n_experts", "experts on a dense architecture");
    return j.dump(2);
  }
  if (!c.is_moe()) return cannot("moe.n_experts", "0 experts on an MoE architecture");
  j["num_experts_per_tok"] = m.top_k;
  j["output_router_logits"] = m.aux_loss == AuxLoss::kSwitch;
  j["router_aux_loss_coef"] = m.aux_loss == AuxLoss::kSwitch ? m.aux_loss_coef : 0.001;
  const bool sigmoid = m.scoring == RouterScoring::kSigmoid;
  if (sigmoid != (c.arch == ModelArch::kGlm4Moe)) return cannot("moe.scoring", sigmoid ? "a sigmoid router" : "a softmax router");
  if (c.arch != ModelArch::kGlm4Moe && (m.n_group != 1 || m.topk_group != 1)) return cannot("moe.n_group", "group-limited routing");
  if (c.arch != ModelArch::kGlm4Moe && m.routed_scaling_factor != 1.0) {
    return cannot("moe.routed_scaling_factor", absl::StrCat(m.routed_scaling_factor));
  }
  const bool shared_fixed = c.arch == ModelArch::kQwen2Moe;
  switch (c.arch) {
    case ModelArch::kMixtral:
      if (m.expert_ffn_hidden != c.ffn_hidden) {
        return cannot("moe.expert_ffn_hidden", "an expert width other than ffn_hidden");
      }
      if (!m.norm_topk_prob) return cannot("moe.norm_topk_prob", "false");
      if (m.n_shared_experts > 0 || m.first_k_dense > 0) return cannot("moe.n_shared_experts", "shared experts or dense blocks");
      j["num_local_experts"] = m.n_experts;
      break;
    case ModelArch::kQwen2Moe:
    case ModelArch::kQwen3Moe: {
      // transformers 5 names qwen3_moe's expert count num_local_experts, qwen2_moe's num_experts.
      j[c.arch == ModelArch::kQwen3Moe ? "num_local_experts" : "num_experts"] = m.n_experts;
      j["moe_intermediate_size"] = m.expert_ffn_hidden;
      j["norm_topk_prob"] = m.norm_topk_prob;
      j["decoder_sparse_step"] = 1;
      json dense = json::array();
      for (int64_t l = 0; l < m.first_k_dense; ++l) dense.push_back(l);
      j["mlp_only_layers"] = dense;
      if (shared_fixed) {
        if (m.n_shared_experts != 1 || !m.shared_expert_gate) return cannot("moe.n_shared_experts", "other than one gated shared expert");
        j["shared_expert_intermediate_size"] = c.resolved_shared_ffn_hidden();
      } else if (m.n_shared_experts > 0) {
        return cannot("moe.n_shared_experts", "shared experts");
      }
      break;
    }
    case ModelArch::kGlm4Moe:
      if (m.shared_expert_gate) return cannot("moe.shared_expert_gate", "a gated shared expert");
      j["n_routed_experts"] = m.n_experts;
      j["moe_intermediate_size"] = m.expert_ffn_hidden;
      j["n_shared_experts"] = m.n_shared_experts;
      j["first_k_dense_replace"] = m.first_k_dense;
      j["n_group"] = m.n_group;
      j["topk_group"] = m.topk_group;
      j["routed_scaling_factor"] = m.routed_scaling_factor;
      j["norm_topk_prob"] = m.norm_topk_prob;
      break;
    default:
      break;
  }
  if (c.arch != ModelArch::kGlm4Moe && c.arch != ModelArch::kQwen2Moe && c.arch != ModelArch::kQwen3Moe &&
      m.first_k_dense > 0) {
    return cannot("moe.first_k_dense", "dense blocks before the MoE ones");
  }
  return j.dump(2);
}

std::vector<std::string> hf_tensor_names(const ModelConfig& config, const std::string& internal_name) {
  if (internal_name == "embed") return {"model.embed_tokens.weight"};
  if (internal_name == "final_norm") return {"model.norm.weight"};
  if (internal_name == "head") return {"lm_head.weight"};
  // layers.<l>.<rest>
  std::vector<std::string> parts = absl::StrSplit(internal_name, absl::MaxSplits('.', 2));
  if (parts.size() != 3 || parts[0] != "layers") return {};
  const std::string layer = "model.layers." + parts[1] + ".";
  const std::string& rest = parts[2];
  static const std::map<std::string, std::string> kFixed = {
      {"attn_norm", "input_layernorm.weight"},     {"mlp_norm", "post_attention_layernorm.weight"},
      {"attn.wq", "self_attn.q_proj.weight"},      {"attn.wk", "self_attn.k_proj.weight"},
      {"attn.wv", "self_attn.v_proj.weight"},      {"attn.wo", "self_attn.o_proj.weight"},
      {"attn.bq", "self_attn.q_proj.bias"},        {"attn.bk", "self_attn.k_proj.bias"},
      {"attn.bv", "self_attn.v_proj.bias"},        {"attn.q_norm", "self_attn.q_norm.weight"},
      {"attn.k_norm", "self_attn.k_norm.weight"},  {"mlp.w_gate", "mlp.gate_proj.weight"},
      {"mlp.w_up", "mlp.up_proj.weight"},          {"mlp.w_down", "mlp.down_proj.weight"},
  };
  auto it = kFixed.find(rest);
  if (it != kFixed.end()) return {layer + it->second};

  const bool mixtral = config.arch == ModelArch::kMixtral;
  const std::string moe = layer + (mixtral ? "block_sparse_moe." : "mlp.");
  if (rest == "moe.router") return {moe + "gate.weight"};
  if (rest == "moe.router_bias") return {moe + "gate.e_score_correction_bias"};
  if (rest == "moe.shared_gate") return {moe + "shared_expert_gate.weight"};
  const std::string shared = moe + (config.arch == ModelArch::kQwen2Moe ? "shared_expert." : "shared_experts.");
  if (rest == "moe.shared.w_gate") return {shared + "gate_proj.weight"};
  if (rest == "moe.shared.w_up") return {shared + "up_proj.weight"};
  if (rest == "moe.shared.w_down") return {shared + "down_proj.weight"};
  static const std::map<std::string, std::pair<const char*, const char*>> kExperts = {
      {"moe.experts.w_gate", {"gate_proj.weight", "w1.weight"}},
      {"moe.experts.w_up", {"up_proj.weight", "w3.weight"}},
      {"moe.experts.w_down", {"down_proj.weight", "w2.weight"}},
  };
  auto ex = kExperts.find(rest);
  if (ex == kExperts.end()) return {};
  std::vector<std::string> names;
  for (int64_t e = 0; e < config.moe.n_experts; ++e)
    names.push_back(absl::StrCat(moe, "experts.", e, ".", mixtral ? ex->second.second : ex->second.first));
  return names;
}

Status load_hf_weights(Transformer& model, const std::string& dir) {
  // Which file holds each tensor: the index of a sharded checkpoint, or the single file.
  std::map<std::string, std::string> file_of;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(index)) {
    ASSIGN_OR_RETURN(std::string text, read_text(index.string()));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": weight_map: missing or not an object"));
    }
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) return absl::InvalidArgumentError(absl::StrCat(index.string(), ": ", name, ": file is not a string"));
      file_of[name] = (fs::path(dir) / file.get<std::string>()).string();
    }
  } else {
    const std::string single = (fs::path(dir) / "model.safetensors").string();
    if (!fs::exists(single)) {
      return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json"));
    }
    ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(single));
    for (const auto& e : f.entries()) file_of[e.name] = single;
  }
  std::map<std::string, SafetensorsFile> open_files;
  auto file_for = [&](const std::string& path) -> StatusOr<SafetensorsFile*> {
    auto it = open_files.find(path);
    if (it == open_files.end()) {
      ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(path));
      it = open_files.emplace(path, std::move(f)).first;
    }
    return &it->second;
  };

  const ModelConfig& config = model.config();
  std::set<std::string> used;
  for (const ParamRef& p : model.params()) {
    std::vector<std::string> names = hf_tensor_names(config, p.name);
    if (names.empty()) return absl::InternalError(absl::StrCat("no Hugging Face name for parameter ", p.name));
    if (p.sharded() && names.size() > 1) {  // expert parallelism: this rank's experts only
      const int64_t held = p.param->value.shape()[0];
      names = std::vector<std::string>(names.begin() + p.row_begin, names.begin() + p.row_begin + held);
    }
    const int64_t per = p.param->value.numel() / static_cast<int64_t>(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string& name = names[i];
      auto where = file_of.find(name);
      if (where == file_of.end()) {
        return absl::NotFoundError(absl::StrCat(dir, ": tensor ", name, " (for ", p.name, ") is missing"));
      }
      ASSIGN_OR_RETURN(SafetensorsFile * f, file_for(where->second));
      const SafetensorsEntry* e = f->find(name);
      if (e == nullptr) return absl::NotFoundError(absl::StrCat(where->second, ": ", name, ": not in the file the index names"));
      int64_t n = 1;
      for (int64_t d : e->shape) n *= d;
      if (n != per) {
        return absl::InvalidArgumentError(absl::StrCat(where->second, ": ", name, ": has ", n, " elements, ", p.name,
                                                       " expects ", per, " (shape ", p.param->value.shape().to_string(),
                                                       names.size() > 1 ? " stacked over experts)" : ")"));
      }
      RETURN_IF_ERROR(f->read_f32_range(name, 0, n, p.param->v() + static_cast<int64_t>(i) * per));
      used.insert(name);
    }
  }
  // A tensor nobody asked for means the name map or the config is wrong: refuse rather than
  // silently train a different model. Stage-local and expert-sharded loads skip this (other
  // ranks own the rest).
  bool all_experts = true;
  for (const ParamRef& p : model.params()) all_experts = all_experts && !p.sharded();
  if (model.whole() && all_experts) {
    std::vector<std::string> unknown;
    for (const auto& [name, file] : file_of) {
      if (used.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
      // Multi-token-prediction layers (GLM-4.5, DeepSeek-V3) sit after the last block: not loaded.
      int64_t layer = -1;
      if (std::sscanf(name.c_str(), "model.layers.%ld.", &layer) == 1 && layer >= config.n_layers) continue;
      if (config.tie_embeddings && name == "lm_head.weight") continue;
      unknown.push_back(name);
    }
    if (!unknown.empty()) {
      if (unknown.size() > 5) unknown.resize(5);
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": tensors this model does not use: ", absl::StrJoin(unknown, ", ")));
    }
  }
  model.mark_weights_changed();
  return OkStatus();
}

}  // namespace strata
