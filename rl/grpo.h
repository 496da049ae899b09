// GRPO and its variants as pure functions of log-probabilities (REFERENCE.md section 5): group
// advantages, then the clipped surrogate with a k3 KL penalty, aggregated as grpo / dapo /
// dr_grpo, per token or per sequence (GSPO). The loss's gradient comes back as
// d(loss)/d(logp_theta) per token, which the model turns into logit gradients
// (Activations::token_logp_grad); no autograd is involved, and tests check it against finite
// differences and a PyTorch golden file.
//
// Everything that divides is told the global counts (all ranks, all micro-batches of the step),
// so evaluating the loss in pieces and summing gives the whole-batch loss and gradient.
#pragma once

#include <cstdint>
#include <vector>

#include "rl/config.h"

namespace strata {

// Advantages of S = n_groups * G completions in group-major order (REFERENCE.md section 5):
// group: (r - mean_g) / (std_g + eps), batch: (r - mean_g) / (std over all + eps), none:
// r - mean_g; std is the unbiased (n - 1) one; eps = 1e-4. A group with equal rewards gets 0.
std::vector<double> grpo_advantages(const std::vector<double>& rewards, int64_t group_size, RewardScaling scaling,
                                    double eps = 1e-4);

// The completions of one piece of the batch (e.g. a micro-batch), as flat token arrays.
struct GrpoPiece {
  std::vector<int64_t> offsets;   // (S + 1,) token range of each sequence in the arrays below
  std::vector<float> logp;        // (n,) log p_theta of each completion token (temperature applied)
  std::vector<float> logp_old;    // (n,) log p_old (rollout weights)
  std::vector<float> logp_ref;    // (n,) log p_ref; empty when beta = 0
  std::vector<uint8_t> mask;      // (n,) 1 = the token counts (0: padding, overlong-filtered)
  std::vector<double> advantage;  // (S,)
  int64_t sequences() const { return static_cast<int64_t>(advantage.size()); }
};

// Global counts the aggregation divides by.
struct GrpoDenominators {
  double sequences = 1;              // completions in the global batch
  double tokens = 1;                 // masked-in completion tokens in the global batch
  double max_completion_length = 1;  // dr_grpo's fixed length (max_new_tokens)
};

struct GrpoLossResult {
  double loss = 0;                 // this piece's share of the global loss
  std::vector<float> dlogp;        // (n,) d loss / d logp
  // Sums over the piece's masked-in tokens, for logging (divide by global token counts).
  double kl_sum = 0, ratio_sum = 0;
  int64_t clipped_low = 0, clipped_high = 0, tokens = 0;
};

GrpoLossResult grpo_loss(const GrpoPiece& piece, const GrpoConfig& config, const GrpoDenominators& denominators);

}  // namespace strata
