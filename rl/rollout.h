// The rollout engine: GRPO's sampler, run by the training model itself (no separate inference
// engine, no weight synchronisation). For a list of prompts it samples G completions each with
// the KV-cache decoder of model/generate.h (temperature, top-k, top-p, max new tokens, EOS and
// stop strings) and returns them group by group, decoded to text.
//
// Layout-ready by construction: sampling randomness is keyed by (seed, step, global prompt
// index, sample index), never by rank or batch slot, so any split of the prompts over ranks
// samples the same completions; decode steps run in lockstep across ranks through
// RolloutLayout::any_active (the max over ranks of the steps each needs), so MoE all-to-alls and
// pipeline hops match up; a group's G samples always stay on one rank, in one batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "model/generate.h"
#include "model/transformer.h"

namespace strata {

struct RolloutSample {
  int64_t prompt_index = 0;       // global index of the prompt (the key of its randomness)
  int64_t sample_index = 0;       // 0..G-1 within the group
  std::vector<int32_t> prompt;    // prompt token ids
  std::vector<int32_t> completion;  // generated ids, cut after a stop string; EOS kept when sampled
  std::string text;               // the completion decoded (without EOS), cut at a stop string
  bool truncated = false;         // hit max_new_tokens without EOS or a stop string
};

struct RolloutLayout {
  AnyActiveFn any_active;      // null: one process
  Decoder* decoder = nullptr;  // null: the whole model in this process (pipelines pass theirs)
};

struct RolloutOptions {
  SamplingParams sampling;         // eos_id filled from the tokenizer when -1
  std::vector<std::string> stop;   // stop strings (besides EOS)
  int64_t group_size = 1;          // G
  int64_t batch_rows = 64;         // rows decoded together (a multiple of G is used)
};

struct RolloutResult {
  std::vector<RolloutSample> samples;  // group-major: prompt 0's G samples, then prompt 1's, ...
  int64_t new_tokens = 0;
  double seconds = 0;
  double tokens_per_s() const { return seconds > 0 ? new_tokens / seconds : 0.0; }
};

// prompts[i] has global index prompt_indices[i]. `step` keys this batch's randomness apart from
// other steps' (with dynamic sampling, each round passes its own).
RolloutResult rollout(Transformer& model, const Tokenizer& tokenizer, const std::vector<std::vector<int32_t>>& prompts,
                      const std::vector<int64_t>& prompt_indices, const RolloutOptions& options, uint64_t seed,
                      int64_t step, const RolloutLayout& layout = {});

// The RNG stream of one sample: (step, prompt index, sample index) hashed; the seed is separate.
uint64_t rollout_key(int64_t step, int64_t prompt_index, int64_t sample_index);

}  // namespace strata
