// Model FLOPs per trained token, as REFERENCE.md section 4 defines them for MFU:
// 6 * N_active + 12 * L * H * Dh * S (attention over context S, halved for causal masks).
#pragma once

#include "model/config.h"

namespace strata {

// Matmul parameters one token uses: attention, dense MLP, its k routed experts, shared experts,
// router and the output head (once, even when tied); the embedding lookup does not count.
double active_matmul_params(const ModelConfig& c);

// The part of it one block holds (layer: its index).
double block_active_matmul_params(const ModelConfig& c, int64_t layer);
// Training FLOPs per token of one block, and of the output head (pipeline stage balancing).
double block_train_flops_per_token(const ModelConfig& c, int64_t layer, int64_t S);
double head_train_flops_per_token(const ModelConfig& c);

// Training FLOPs per token for sequences of length S with a causal mask.
double train_flops_per_token(const ModelConfig& c, int64_t S);

// Forward-only FLOPs per token (generation, reference log-probs): 2 * N_active + attention.
double forward_flops_per_token(const ModelConfig& c, int64_t S);

}  // namespace strata
