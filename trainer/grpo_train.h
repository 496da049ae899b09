// The GRPO loop (train.mode: grpo; REFERENCE.md section 5), DeepSeek-R1's recipe in one process
// that samples its own rollouts:
//
//   per step: prompts (train split, R1 template optional) -> G completions each from the policy
//   (rl/rollout.h) -> rewards (rl/rewards.h) -> [DAPO dynamic sampling: drop groups with equal
//   rewards, sample more, at most max_sampling_rounds] -> group advantages -> num_iterations
//   updates, each: per micro-batch forward at the sampling temperature, grpo_loss on the
//   completion tokens' log-probs (old: the rollout weights' own forward; ref: the frozen
//   reference, when beta > 0), backward, then clipping and AdamW over the whole batch.
//
// Every denominator is the step's global count. Sampling randomness is keyed by (seed, step or
// round, prompt index, sample index), so a run is reproducible and a resumed run continues
// exactly: checkpoints hold parameters, optimizer state, FP8 histories, the reference policy
// (when beta > 0) and the prompt cursor. Held-out evaluation (greedy accuracy, pass@1 and
// pass@k, answers scored leniently) runs every train.eval_every steps and at the end.
#pragma once

#include "core/status.h"
#include "trainer/experiment_config.h"
#include "trainer/train.h"

namespace strata {

Status run_grpo(const ExperimentConfig& config, const TrainOptions& options);

}  // namespace strata
