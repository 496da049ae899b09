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

// What generate() decodes with: the whole model in this process (WholeModelDecoder), or a
// pipeline of stages (trainer/pipeline_stage.h), where only the last stage sees logits and the
// tokens it samples are shared with the others, so every stage keeps the same completions.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual const ModelConfig& config() const = 0;
  // Fresh KV caches for B rows of `capacity` positions.
  virtual void start(int64_t B, int64_t capacity) = 0;
  // tokens/positions (B*T_new), key_start (B): the last position's logits of each row (B, V) on
  // the rank that samples; an undefined Tensor on the others.
  virtual Tensor step(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                      const std::vector<int32_t>& key_start, int64_t B, int64_t T_new) = 0;
  // The tokens the sampling rank chose (B,) to every rank decoding together; nothing alone.
  virtual void share(std::vector<int32_t>& tokens) { (void)tokens; }
};

class WholeModelDecoder : public Decoder {
 public:
  explicit WholeModelDecoder(Transformer& model) : model_(model) {}
  const ModelConfig& config() const override { return model_.config(); }
  void start(int64_t B, int64_t capacity) override { caches_ = model_.make_kv_caches(B, capacity); }
  Tensor step(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
              const std::vector<int32_t>& key_start, int64_t B, int64_t T_new) override {
    return model_.decode(caches_, tokens, positions, key_start, B, T_new, /*last_only=*/true);
  }

 private:
  Transformer& model_;
  std::vector<KVCache> caches_;
};

// prompts: one token list per row (each non-empty); row_keys: one RNG stream id per row.
Generation generate(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts, const SamplingParams& params,
                    const std::vector<uint64_t>& row_keys, uint64_t seed, const AnyActiveFn& any_active = nullptr);
inline Generation generate(Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
                           const SamplingParams& params, const std::vector<uint64_t>& row_keys, uint64_t seed,
                           const AnyActiveFn& any_active = nullptr) {
  WholeModelDecoder decoder(model);
  return generate(decoder, prompts, params, row_keys, seed, any_active);
}

// Samples one token from logits (V,) with the given filters, using uniform u in [0, 1).
int32_t sample_token(const float* logits, int64_t V, const SamplingParams& params, float u);

}  // namespace strata
