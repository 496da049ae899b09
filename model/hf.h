// Hugging Face interop for the supported architectures: config.json <-> ModelConfig, and the
// map between Strata's parameter names and the on-disk tensor names of published checkpoints
// (per-expert weights: "model.layers.3.mlp.experts.7.gate_proj.weight"; Mixtral's
// "block_sparse_moe.experts.7.w1.weight"). Strata stacks a layer's experts into one tensor, so
// one internal parameter may map to E on-disk tensors, one per expert, in expert order.
//
// Architectures: llama, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe and glm4_moe (DeepSeek-V3's
// MoE: sigmoid routing, balancing bias, groups, shared experts, on standard GQA attention).
// Checked against transformers 5.23 by tests/golden/models (scripts/make_golden_models.py).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "model/config.h"
#include "model/transformer.h"

namespace strata {

// The transformers model_type of an architecture ("llama", ..., "glm4_moe").
const char* hf_model_type(ModelArch arch);

// Parses config.json text (either transformers 5's rope_parameters or the older top-level
// rope_theta / rope_scaling). Fields Strata cannot represent are errors naming the field, not
// silent approximations. `source` names the file in messages.
StatusOr<ModelConfig> model_config_from_hf_json(const std::string& json_text, const std::string& source);
// Reads DIR/config.json.
StatusOr<ModelConfig> load_hf_config(const std::string& dir);

// The config.json of `c` in its architecture's transformers format (the fields
// model_config_from_hf_json reads, plus architectures, dtype and the token ids), such that
// model_config_from_hf_json gives `c` back. What the architecture's config cannot express (a
// sigmoid router on qwen3_moe, say) is an error naming the ModelConfig field. dtype:
// "float32" or "bfloat16"; token ids < 0 are written as null.
StatusOr<std::string> model_config_to_hf_json(const ModelConfig& c, const std::string& dtype, int64_t bos_id,
                                              int64_t eos_id);

// On-disk names for one internal parameter: one name, or n_experts names for stacked experts.
std::vector<std::string> hf_tensor_names(const ModelConfig& config, const std::string& internal_name);

// Loads every parameter `model` holds (only its stage's, and under expert parallelism only its
// experts: each rank reads just the tensors it owns) from the safetensors files of DIR
// (model.safetensors, or the shards listed in model.safetensors.index.json), converting to fp32.
// Missing tensors, shape mismatches and unexpected tensors are errors naming them.
Status load_hf_weights(Transformer& model, const std::string& dir);

}  // namespace strata
