// GRPO's rollout side (trainer/grpo_train.cc runs the loop): the step's prompts as Problems,
// sampling G completions per prompt with the training model and scoring them with the reward
// spec, and the held-out evaluation (greedy accuracy, pass@1, pass@k, mean reward) over every rank.
//
// Under pipeline parallelism every stage of a pipeline decodes the same tokens (the last stage
// samples and shares them); only the last stage scores (a `command` reward runs once) and sends
// the scores to the others, so all stages hold the same Scored samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader.h"
#include "data/tasks.h"
#include "model/transformer.h"
#include "parallel/communicator.h"
#include "rl/rewards.h"
#include "rl/rollout.h"
#include "trainer/experiment_config.h"
#include "trainer/run_common.h"

namespace strata {

// One prompt of the step with everything scoring needs.
struct Problem {
  int64_t index = 0;  // position in the global prompt stream (keys its sampling randomness)
  Example example;
  TaskAnswer answer;
  std::string prompt_text;  // after the R1 template when data.r1_template
  std::vector<int32_t> prompt_ids;
};

// A scored completion.
struct Scored {
  const Problem* problem = nullptr;
  RolloutSample sample;
  RewardResult reward;
  bool correct = false;  // the task's answer is right (lenient: the answer alone)
  double advantage = 0;
};

struct EvalStats {
  double greedy_accuracy = 0, pass_at_1 = 0, pass_at_k = 0, mean_reward = 0, seconds = 0;
};

// Example `sample_id` of `loader` as the prompt at global position `index`; r1: apply the R1
// template. Errors name the example.
StatusOr<Problem> make_problem(const DataLoader& loader, int64_t sample_id, int64_t index, const Tokenizer& tok,
                               bool r1);
RolloutOptions rollout_options(const GrpoConfig& g, const Tokenizer& tok);

// Samples G completions for each problem (randomness keyed by key_step and the problems' global
// indices) and scores them; adds to *stats. pp: the pipeline group, whose last stage scores for all.
StatusOr<std::vector<Scored>> sample_and_score(Transformer& model, const Tokenizer& tok,
                                               const std::vector<Problem>& problems, const RolloutOptions& options,
                                               const RewardSpec& rewards, uint64_t seed, int64_t key_step,
                                               RolloutResult* stats, const RolloutLayout& layout,
                                               Communicator* pp = nullptr);

// `padded_problems`: this rank's share of the held-out set, padded (expert parallelism) to the
// busiest rank's count with copies; the first `real` count, `total` over all ranks.
StatusOr<EvalStats> evaluate(Transformer& model, const Tokenizer& tok, const std::vector<Problem>& padded_problems,
                             int64_t real, int64_t total, const GrpoConfig& g, const RewardSpec& rewards,
                             uint64_t seed, const DataParallel& dp, const RolloutLayout& layout);

}  // namespace strata
