// `strata eval` and `strata generate` on trained models: load a checkpoint (or hf:DIR), decode
// held-out task problems with the KV cache (greedy, or k samples each), score every completion
// with the task's verifier from rl/ (the same one GRPO rewards with), and report accuracy and
// unbiased pass@k. A completion counts as correct when its answer alone is right
// (task_answer_correct: lenient about the format); the mean reward is the strict verifier's.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace strata {

struct EvalArgs {
  std::string checkpoint;       // step dir, checkpoint root, run dir, or hf:DIR
  std::string task = "countdown";
  int64_t n = 500;              // problems (held-out split)
  int64_t samples = 1;          // completions per problem; pass@k for k = 1 and k = samples
  double temperature = 0.0;     // 0 = greedy (only with samples = 1)
  int64_t max_new_tokens = 0;   // 0 = from the run's config (grpo.max_new_tokens or seq_len)
  int64_t batch = 64;           // problems decoded together
  std::string tokenizer;        // override (needed for hf:DIR without tokenizer.json)
  std::string out;              // optional JSONL of every completion with its reward
  int64_t seed = 1234;
};

struct EvalResult {
  int64_t problems = 0;
  double accuracy = 0.0;        // mean over problems of the fraction of correct samples
  double pass_at_1 = 0.0, pass_at_k = 0.0;
  double mean_reward = 0.0;
  double seconds = 0.0;
  int64_t generated_tokens = 0;
};

StatusOr<EvalResult> run_eval(const EvalArgs& args);
// Prints the result; returns the process exit code.
int run_eval_command(const EvalArgs& args);

}  // namespace strata
