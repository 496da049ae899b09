// GrpoConfig: GRPO and its variants (DAPO, Dr. GRPO, GSPO) on verifiable rewards, and the
// rollout sampler that feeds them (REFERENCE.md sections 5 and 6); the loop is trainer/grpo_train.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config_schema.h"

namespace strata {

enum class GrpoLossType { kGrpo, kDapo, kDrGrpo };
enum class RewardScaling { kGroup, kBatch, kNone };
enum class ImportanceLevel { kToken, kSequence };
enum class RewardFailure { kZero, kStop };

// Reward functions a config may name in grpo.rewards.
inline const std::vector<std::string>& reward_names() {
  static const std::vector<std::string> names = {"countdown", "arithmetic", "gsm8k",  "boxed",
                                                 "format",    "tag_count",  "overlong", "command"};
  return names;
}

struct GrpoConfig {
  int64_t group_size = 8;
  int64_t prompts_per_step = 8;
  int64_t max_new_tokens = 128;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  std::vector<std::string> stop;
  double beta = 0.0;
  double epsilon_low = 0.2;
  double epsilon_high = 0.2;
  GrpoLossType loss_type = GrpoLossType::kGrpo;
  RewardScaling scale_rewards = RewardScaling::kGroup;
  ImportanceLevel importance_sampling_level = ImportanceLevel::kToken;
  int64_t num_iterations = 1;
  int64_t ref_refresh_steps = 0;
  std::map<std::string, double> rewards = {{"countdown", 1.0}};
  bool dynamic_sampling = false;
  int64_t max_sampling_rounds = 3;
  bool overlong_filter = false;
  int64_t overlong_buffer = 0;
  std::string reward_command;
  double reward_command_timeout_s = 10.0;
  RewardFailure reward_command_on_failure = RewardFailure::kZero;
  int64_t rollout_batch = 64;
  int64_t eval_problems = 64;
  int64_t eval_samples = 4;
  int64_t samples_every = 10;
  int64_t samples_groups = 2;

  template <class V>
  void visit(V& v) {
    v.field("group_size", group_size, "completions sampled per prompt (G)", Range::at_least(2));
    v.field("prompts_per_step", prompts_per_step, "prompts per optimizer step over all ranks", Range::at_least(1));
    v.field("max_new_tokens", max_new_tokens, "longest completion; longer ones are truncated", Range::at_least(1));
    v.field("temperature", temperature, "sampling temperature (log-probs use the same)", Range::above(0));
    v.field("top_k", top_k, "sample from the k most likely tokens; 0 = all", Range::at_least(0));
    v.field("top_p", top_p, "nucleus sampling mass", Range{0.0, 1.0, true});
    v.field("stop", stop, "strings that end a completion (besides EOS)");
    v.field("beta", beta, "weight of the k3 KL penalty to the reference policy; 0 = no reference model",
            Range::at_least(0));
    v.field("epsilon_low", epsilon_low, "lower clip range of the ratio", Range::between(0, 1));
    v.field("epsilon_high", epsilon_high, "upper clip range (DAPO clip-higher: 0.28)", Range::at_least(0));
    v.choice("loss_type", loss_type, "aggregation: grpo (per-sequence mean), dapo (token mean), dr_grpo (fixed length)",
             Choices<GrpoLossType>{{"grpo", GrpoLossType::kGrpo}, {"dapo", GrpoLossType::kDapo},
                                   {"dr_grpo", GrpoLossType::kDrGrpo}});
    v.choice("scale_rewards", scale_rewards, "advantage scaling: group std, batch std, or none (Dr. GRPO)",
             Choices<RewardScaling>{{"group", RewardScaling::kGroup}, {"batch", RewardScaling::kBatch},
                                    {"none", RewardScaling::kNone}});
    v.choice("importance_sampling_level", importance_sampling_level, "ratio per token (GRPO) or per sequence (GSPO)",
             Choices<ImportanceLevel>{{"token", ImportanceLevel::kToken}, {"sequence", ImportanceLevel::kSequence}});
    v.field("num_iterations", num_iterations, "policy updates per batch of rollouts (mu)", Range::at_least(1));
    v.field("ref_refresh_steps", ref_refresh_steps, "copy the policy into the reference every N steps; 0 = never",
            Range::at_least(0));
    v.field("rewards", rewards, "reward functions and their weights, e.g. {countdown: 1.0, format: 0.1}");
    v.field("dynamic_sampling", dynamic_sampling, "DAPO: drop groups with equal rewards and sample more");
    v.field("max_sampling_rounds", max_sampling_rounds, "DAPO: most sampling rounds per step", Range::at_least(1));
    v.field("overlong_filter", overlong_filter, "DAPO: mask truncated completions out of the loss");
    v.field("overlong_buffer", overlong_buffer, "DAPO soft overlong punishment window Lc; 0 = off", Range::at_least(0));
    v.field("reward_command", reward_command, "program for the `command` reward (JSON lines on stdin/stdout)");
    v.field("reward_command_timeout_s", reward_command_timeout_s, "seconds per line before the command counts as failed",
            Range::above(0));
    v.choice("reward_command_on_failure", reward_command_on_failure, "on a crash/hang/garbage: score 0 or stop the run",
             Choices<RewardFailure>{{"zero", RewardFailure::kZero}, {"stop", RewardFailure::kStop}});
    v.field("rollout_batch", rollout_batch, "completions decoded together (whole groups)", Range::at_least(1));
    v.field("eval_problems", eval_problems, "held-out problems per evaluation (train.eval_every)", Range::at_least(1));
    v.field("eval_samples", eval_samples, "samples per held-out problem for pass@k (k = this)", Range::at_least(1));
    v.field("samples_every", samples_every, "write grpo.samples_groups groups' prompts, completions and rewards to samples.jsonl every N steps; 0 = never",
            Range::at_least(0));
    v.field("samples_groups", samples_groups, "groups of the step's batch written each time (the first ones, as one process orders them); 0 = all",
            Range::at_least(0));
  }
  void validate(ConfigChecker& c) const;
};

}  // namespace strata
