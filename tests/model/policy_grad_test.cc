// A loss defined on the model's log-probabilities (GRPO), through the whole Transformer:
//  - Activations::token_logp equals log softmax(logits * Batch::logit_scale)[target], computed here
//    independently in double from Transformer::logits, and 0 where the target is -1;
//  - backward with Activations::token_logp_grad = d loss / d token_logp (grpo_loss's dlogp) gives
//    the parameter gradients of that loss: checked against central finite differences of the same
//    loss (forward on perturbed parameters, grpo_loss on the new log-probs, fixed logp_old /
//    logp_ref / advantages) for a token-level and a sequence-level (GSPO) variant with the k3
//    penalty, with a temperature (logit_scale = 1 / 0.7) and masked targets;
//  - the plain cross-entropy path under the same logit_scale (no token_logp_grad) against finite
//    differences of the loss forward returns.
// Finite differences in fp32 forwards with steps of 5e-3: relative error < 1e-2 asserted (an element
// whose gradient is under 5% of its tensor's largest is judged against that 5%); measured worst
// 2.2e-3 (GRPO, GSPO) and 3.7e-3 (cross-entropy).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "model/transformer.h"
#include "rl/grpo.h"

namespace strata {
namespace {

constexpr float kTemperature = 0.7f;

ModelConfig tiny_llama() {
  ModelConfig c;
  c.arch = ModelArch::kLlama;
  c.vocab_size = 32;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 24;
  c.max_seq_len = 16;
  c.init_std = 0.3;
  return c;
}

// B rows of T tokens, one completion per row; about a quarter of the targets (and each row's last)
// masked with -1, row 1 with a masked target inside it.
Batch make_batch(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * T; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % V));
  for (int64_t i = 0; i < B * T; ++i) {
    const bool masked = i % T == T - 1 || i % T == 0 || (i / T == 1 && i % T == 3);
    b.targets.push_back(masked ? -1 : static_cast<int32_t>(rng() % V));
  }
  b.logit_scale = 1.0f / kTemperature;
  b.finalize(V);
  return b;
}

// The GRPO side of the test: rows are completions; logp_old / logp_ref / advantages are fixed
// once from the unperturbed model's log-probs.
struct PolicyLoss {
  GrpoConfig config;
  GrpoDenominators den;
  GrpoPiece piece;  // logp replaced by each evaluation

  PolicyLoss(const Batch& batch, const std::vector<float>& logp, GrpoLossType type, ImportanceLevel level,
             uint32_t seed) {
    config.loss_type = type;
    config.importance_sampling_level = level;
    config.beta = 0.04;
    config.epsilon_low = 0.2;
    config.epsilon_high = 0.28;
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    // log(new / old) per token: a per-row level (ratio ~1.65, ~0.61, ~1, ~1.65) plus +-0.03, so
    // that token and sequence ratios fall above, below and inside [0.8, 1.28], with advantages that
    // clip row 0 (A > 0 above) and row 1 (A < 0 below) but not rows 2 (inside) and 3 (A < 0 above).
    // Every log-ratio is >= 0.19 from log 0.8 and log 1.28 (boundary_gap() is asserted), far more
    // than a finite-difference step moves a log-prob, so no step crosses a kink of the loss.
    const float level_of_row[] = {0.5f, -0.5f, 0.0f, 0.5f};
    const double adv_of_row[] = {0.8, -0.6, 1.1, -0.5};
    CHECK_EQ(batch.B, 4) << "rows as above";
    piece.offsets = {0};
    for (int64_t r = 0; r < batch.B; ++r) {
      piece.offsets.push_back((r + 1) * batch.T);
      piece.advantage.push_back(adv_of_row[r]);
    }
    piece.logp = logp;
    for (int64_t i = 0; i < batch.B * batch.T; ++i) {
      const bool in = batch.targets[i] >= 0;
      piece.mask.push_back(in ? 1 : 0);
      const float shift = level_of_row[i / batch.T] + (i % 2 ? 0.03f : -0.03f);
      piece.logp_old.push_back(logp[i] - shift);
      piece.logp_ref.push_back(logp[i] + static_cast<float>(0.3 * normal(rng)));
    }
    den = {static_cast<double>(batch.B) + 2, static_cast<double>(batch.n_targets()) + 5, static_cast<double>(batch.T)};
  }
  GrpoLossResult operator()(const std::vector<float>& logp) const {
    GrpoPiece p = piece;
    p.logp = logp;
    return grpo_loss(p, config, den);
  }
  // Smallest distance of any log-ratio this loss clips to a clip boundary (in log space).
  double boundary_gap() const {
    double gap = 1e9;
    for (int64_t s = 0; s < piece.sequences(); ++s) {
      double sum = 0;
      int64_t n = 0;
      std::vector<double> log_ratios;
      for (int64_t t = piece.offsets[s]; t < piece.offsets[s + 1]; ++t) {
        if (!piece.mask[t]) continue;
        const double lr = static_cast<double>(piece.logp[t]) - piece.logp_old[t];
        sum += lr;
        ++n;
        log_ratios.push_back(lr);
      }
      if (config.importance_sampling_level == ImportanceLevel::kSequence)
        log_ratios.assign(1, sum / static_cast<double>(std::max<int64_t>(n, 1)));
      for (double lr : log_ratios) gap = std::min({gap, std::fabs(lr - std::log(0.8)), std::fabs(lr - std::log(1.28))});
    }
    return gap;
  }
};

TEST(PolicyGrad, TokenLogpIsLogSoftmaxOfScaledLogits) {
  const ModelConfig c = tiny_llama();
  Transformer model(c, PrecisionConfig{});
  model.init(7);
  const Batch batch = make_batch(3, 7, c.vocab_size, 21);
  Activations acts;
  model.forward(batch, acts, 1.0);
  Batch plain = batch;
  plain.logit_scale = 1.0f;
  // Transformer::logits returns forward's acts.logits, which hold the scaled logits when
  // logit_scale != 1: the unscaled ones come from a copy of the batch with scale 1.
  const Tensor logits = model.logits(plain);
  const int64_t N = batch.B * batch.T, V = c.vocab_size;
  ASSERT_EQ(static_cast<int64_t>(acts.token_logp.size()), N);
  int checked = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (batch.targets[i] < 0) {
      EXPECT_EQ(acts.token_logp[i], 0.0f) << i;
      continue;
    }
    const float* row = logits.f32() + i * V;
    double mx = -1e300;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]) / kTemperature);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) / kTemperature - mx);
    const double want = static_cast<double>(row[batch.targets[i]]) / kTemperature - mx - std::log(sum);
    EXPECT_NEAR(acts.token_logp[i], want, 2e-6 * (1 + std::fabs(want))) << i;
    ++checked;
  }
  EXPECT_GT(checked, 8);
  // The temperature matters: unscaled log-probs differ.
  Activations unscaled;
  model.forward(plain, unscaled, 1.0);
  double diff = 0;
  for (int64_t i = 0; i < N; ++i) diff += std::fabs(unscaled.token_logp[i] - acts.token_logp[i]);
  EXPECT_GT(diff, 0.1);
}

// Compares the gradients backward left in the parameters with central differences of loss(),
// a few elements of every tensor.
template <class Loss>
void compare_with_finite_differences(Transformer& model, Loss loss, uint32_t seed) {
  std::mt19937 rng(seed);
  int checked = 0;
  double worst = 0;
  std::string worst_at;
  for (const ParamRef& p : model.params()) {
    if (!p.param->grad.defined()) continue;
    const int64_t n = p.param->value.numel();
    // The tensor's gradient scale: elements with a tiny gradient are judged against it.
    double gmax = 0;
    for (int64_t i = 0; i < n; ++i) gmax = std::max(gmax, std::fabs(static_cast<double>(p.param->g()[i])));
    for (int s = 0; s < 4; ++s) {
      // The element with the largest gradient, then random ones.
      int64_t i = 0;
      if (s == 0) {
        for (int64_t j = 1; j < n; ++j)
          if (std::fabs(p.param->g()[j]) > std::fabs(p.param->g()[i])) i = j;
      } else {
        i = static_cast<int64_t>(rng() % static_cast<uint32_t>(n));
      }
      float* v = p.param->v() + i;
      const float orig = *v, eps = 5e-3f;  // smaller steps drown in fp32 forward noise
      *v = orig + eps;
      model.mark_weights_changed();
      const double lp = loss();
      *v = orig - eps;
      model.mark_weights_changed();
      const double lm = loss();
      *v = orig;
      model.mark_weights_changed();
      const double fd = (lp - lm) / (2.0 * eps);
      const double an = p.param->g()[i];
      const double err = std::fabs(an - fd) / std::max(std::fabs(fd), 0.05 * gmax + 1e-7);
      if (err > worst) {
        worst = err;
        worst_at = p.name + "[" + std::to_string(i) + "]";
      }
      EXPECT_LT(err, 1e-2) << p.name << "[" << i << "] analytic " << an << " fd " << fd;
      ++checked;
    }
  }
  EXPECT_GT(checked, 60);
  std::printf("  %d elements, worst relative error %.2e at %s\n", checked, worst, worst_at.c_str());
}

void check_policy_gradient(GrpoLossType type, ImportanceLevel level) {
  const ModelConfig c = tiny_llama();
  Transformer model(c, PrecisionConfig{});
  model.init(11);
  const Batch batch = make_batch(4, 7, c.vocab_size, 5);
  Activations acts;
  model.forward(batch, acts, 1.0);
  const PolicyLoss policy(batch, acts.token_logp, type, level, 3);
  ASSERT_GT(policy.boundary_gap(), 0.15);
  const GrpoLossResult r = policy(acts.token_logp);
  // The variant exercises both clipped and unclipped tokens (or sequences).
  EXPECT_GT(r.clipped_low + r.clipped_high, 0);
  EXPECT_LT(r.clipped_low + r.clipped_high, r.tokens);
  // Pieces are whole rows, so the piece's token index is the position index.
  acts.token_logp_grad = r.dlogp;
  zero_grads(model.params());
  model.backward(acts);
  compare_with_finite_differences(
      model,
      [&] {
        Activations a;
        model.forward(batch, a, 1.0);
        return policy(a.token_logp).loss;
      },
      17);
}

TEST(PolicyGrad, GrpoTokenLevelWithKlMatchesFiniteDifferences) {
  check_policy_gradient(GrpoLossType::kDapo, ImportanceLevel::kToken);
}

TEST(PolicyGrad, GspoSequenceLevelWithKlMatchesFiniteDifferences) {
  check_policy_gradient(GrpoLossType::kGrpo, ImportanceLevel::kSequence);
}

TEST(PolicyGrad, CrossEntropyUnderLogitScaleMatchesFiniteDifferences) {
  const ModelConfig c = tiny_llama();
  Transformer model(c, PrecisionConfig{});
  model.init(13);
  const Batch batch = make_batch(2, 7, c.vocab_size, 9);
  const double denom = static_cast<double>(batch.n_targets()) + 3;
  Activations acts;
  model.forward(batch, acts, denom);
  zero_grads(model.params());
  model.backward(acts);
  compare_with_finite_differences(
      model,
      [&] {
        Activations a;
        return model.forward(batch, a, denom);
      },
      19);
}

}  // namespace
}  // namespace strata
