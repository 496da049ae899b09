// The generation primitive: batched incremental decoding with a KV cache over left-padded
// prompts of different lengths, greedy or sampled (temperature, top-k, top-p), stopping on EOS or
// stop sequences. Evaluation and GRPO rollouts are built on it.
//
// Every row decodes in lockstep: a row that has finished keeps stepping (its tokens are ignored)
// so that, once layers exchange tokens across ranks, every rank calls each step the same number
// of times. Sampling randomness for row r at step t is RngStream(seed, row_keys[r]).uniform(t):
// keyed by what the row is (prompt and sample index), never by which rank or slot holds it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/transformer.h"

namespace strata {

struct SamplingParams {
  int64_t max_new_tokens = 64;
  float temperature = 1.0f;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // 0 = no top-k filter
  float top_p = 1.0f;        // 1 = no nucleus filter
  int32_t eos_id = -1;       // -1 = none
  std::vector<std::vector<int32_t>> stop_sequences;  // token-id sequences that end a completion
};

struct Generation {
  std::vector<std::vector<int32_t>> completions;  // per row, without the prompt; includes EOS / stop tokens
  std::vector<bool> truncated;                    // hit max_new_tokens without EOS or a stop sequence
  int64_t steps = 0;                              // decode steps run (lockstep, all rows)
  int64_t new_tokens = 0;                         // tokens generated over unfinished rows
};

// Across ranks: given whether this rank still has unfinished rows, whether any rank has (an
// all-reduce OR). Every rank then runs the same number of decode steps, the max over ranks.
// Null: this rank alone decides.
using AnyActiveFn = std::function<bool(bool local_active)>;

// prompts: one token list per row (each non-empty); row_keys: one RNG stream id per row.
Generation generate(Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                    const SamplingParams& params, const std::vector<uint64_t>& row_keys, uint64_t seed,
                    const AnyActiveFn& any_active = nullptr);

// Samples one token from logits (V,) with the given filters, using uniform u in [0, 1).
int32_t sample_token(const float* logits, int64_t V, const SamplingParams& params, float u);

}  // namespace strata
