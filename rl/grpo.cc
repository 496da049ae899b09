#include "rl/grpo.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace strata {

std::vector<double> grpo_advantages(const std::vector<double>& rewards, int64_t G, RewardScaling scaling,
                                    double eps) {
  const int64_t S = static_cast<int64_t>(rewards.size());
  CHECK(G >= 1 && S % G == 0) << S << " rewards do not split into groups of " << G;
  auto mean_std = [](const double* r, int64_t n, double* mean, double* std) {
    double m = 0;
    for (int64_t i = 0; i < n; ++i) m += r[i];
    m /= static_cast<double>(n);
    double v = 0;
    for (int64_t i = 0; i < n; ++i) v += (r[i] - m) * (r[i] - m);
    *mean = m;
    *std = n > 1 ? std::sqrt(v / static_cast<double>(n - 1)) : 0.0;
  };
  double batch_mean = 0, batch_std = 0;
  if (S > 0) mean_std(rewards.data(), S, &batch_mean, &batch_std);
  std::vector<double> adv(static_cast<size_t>(S));
  for (int64_t g = 0; g < S / G; ++g) {
    const double* r = rewards.data() + g * G;
    double mean = 0, std = 0;
    mean_std(r, G, &mean, &std);
    const bool equal = std::all_of(r, r + G, [&](double x) { return x == r[0]; });
    for (int64_t i = 0; i < G; ++i) {
      double a = equal ? 0.0 : r[i] - mean;
      if (scaling == RewardScaling::kGroup) a /= std + eps;
      if (scaling == RewardScaling::kBatch) a /= batch_std + eps;
      adv[g * G + i] = a;
    }
  }
  return adv;
}

GrpoLossResult grpo_loss(const GrpoPiece& p, const GrpoConfig& config, const GrpoDenominators& den) {
  const int64_t S = p.sequences();
  CHECK_EQ(static_cast<int64_t>(p.offsets.size()), S + 1) << "grpo_loss: offsets";
  const int64_t n = p.offsets.back();
  CHECK(static_cast<int64_t>(p.logp.size()) == n && static_cast<int64_t>(p.logp_old.size()) == n &&
        static_cast<int64_t>(p.mask.size()) == n)
      << "grpo_loss: token arrays";
  const bool kl = config.beta > 0;
  CHECK(!kl || static_cast<int64_t>(p.logp_ref.size()) == n) << "grpo_loss: beta > 0 needs logp_ref";
  const double lo = 1.0 - config.epsilon_low, hi = 1.0 + config.epsilon_high;
  const bool per_sequence = config.importance_sampling_level == ImportanceLevel::kSequence;

  GrpoLossResult out;
  out.dlogp.assign(static_cast<size_t>(n), 0.0f);
  for (int64_t i = 0; i < S; ++i) {
    const int64_t t0 = p.offsets[i], t1 = p.offsets[i + 1];
    int64_t len = 0;
    double log_ratio_sum = 0;
    for (int64_t t = t0; t < t1; ++t) {
      if (!p.mask[t]) continue;
      ++len;
      log_ratio_sum += static_cast<double>(p.logp[t]) - p.logp_old[t];
    }
    // Weight of each of this sequence's token terms in the loss: L = -sum_t w j_t.
    double w = 0;
    switch (config.loss_type) {
      case GrpoLossType::kGrpo: w = 1.0 / (std::max<int64_t>(len, 1) * den.sequences); break;
      case GrpoLossType::kDapo: w = 1.0 / den.tokens; break;
      case GrpoLossType::kDrGrpo: w = 1.0 / (den.sequences * den.max_completion_length); break;
    }
    const double A = p.advantage[i];
    // f(r) = min(r A, clip(r) A); f'(r) = A on the unclipped branch, 0 where the clip binds.
    auto surrogate = [&](double r, double* slope, bool* clip_low, bool* clip_high) {
      const double clipped = std::clamp(r, lo, hi);
      const double a = r * A, b = clipped * A;
      *clip_low = A < 0 && r < lo;
      *clip_high = A > 0 && r > hi;
      *slope = (a <= b || clipped == r) ? A : 0.0;
      return std::min(a, b);
    };
    const double s = per_sequence && len > 0 ? std::exp(log_ratio_sum / static_cast<double>(len)) : 1.0;
    double seq_slope = 0;  // GSPO: d f(s)/d s, shared by every token of the sequence
    double seq_value = 0;
    bool seq_low = false, seq_high = false;
    if (per_sequence) seq_value = surrogate(s, &seq_slope, &seq_low, &seq_high);
    for (int64_t t = t0; t < t1; ++t) {
      if (!p.mask[t]) continue;
      double j = 0, dj = 0;  // objective term and d j / d logp_t (own token)
      bool low = false, high = false;
      if (per_sequence) {
        j = seq_value;
        low = seq_low;
        high = seq_high;
      } else {
        const double r = std::exp(static_cast<double>(p.logp[t]) - p.logp_old[t]);
        double slope = 0;
        j = surrogate(r, &slope, &low, &high);
        dj = slope * r;
        out.ratio_sum += r;
      }
      if (kl) {
        const double d = static_cast<double>(p.logp_ref[t]) - p.logp[t];
        const double k3 = std::exp(d) - d - 1.0;
        j -= config.beta * k3;
        dj -= config.beta * (1.0 - std::exp(d));  // d k3 / d logp = -exp(d) + 1
        out.kl_sum += k3;
      }
      out.loss -= w * j;
      out.dlogp[t] = static_cast<float>(-w * dj);
      out.clipped_low += low;
      out.clipped_high += high;
      ++out.tokens;
    }
    if (per_sequence && len > 0) {
      // Every token term holds f(s): d/d logp_u sum_t w f(s) = len * w * f'(s) * s / len.
      const double g = -w * seq_slope * s;
      for (int64_t t = t0; t < t1; ++t)
        if (p.mask[t]) out.dlogp[t] += static_cast<float>(g);
      out.ratio_sum += s * static_cast<double>(len);
    }
  }
  return out;
}

}  // namespace strata
