// rl/grpo.h: GRPO advantages and the clipped-surrogate loss with its gradient d loss / d logp.
//  (a) Golden: advantages (scale_rewards group / batch / none; G = 2, 3, 4; all-equal groups) and
//      every loss variant (loss_type grpo / dapo / dr_grpo x importance_sampling_level token /
//      sequence x beta 0 / 0.04, eps 0.2 / 0.28, padding, a fully masked sequence, global
//      denominators larger than the piece) against an independent PyTorch autograd implementation
//      (scripts/make_golden_grpo.py -> tests/golden/grpo/grpo.safetensors, cross-checked there
//      against verl's core_algos). The expected values are float64 in the file, read exactly here:
//      advantages, losses and logging sums to 1e-12 relative (both sides in double from the same
//      float inputs), dlogp (float) to 2.5e-7 of the case's largest, clip counts exactly.
//  (b) Small cases worked out by hand: G = 2 advantages, all-equal groups giving exactly 0, ratio 1
//      (mu = 1) giving -mean A, each clip branch, the k3 penalty, a GSPO sequence ratio.
//  (c) The returned gradient against central finite differences of grpo_loss's own loss, per token,
//      for every variant.
//  (d) Splitting the batch into two pieces (at every sequence boundary) with the global
//      denominators: the pieces' losses sum to the whole batch's and the gradients are bit-identical.
#include "rl/grpo.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/safetensors.h"

namespace strata {
namespace {

const char* kGolden = STRATA_SOURCE_DIR "/tests/golden/grpo/grpo.safetensors";

// ---------------------------------------------------------------- reading the golden file

class Golden {
 public:
  Golden() {
    auto f = SafetensorsFile::open(kGolden);
    CHECK(f.ok()) << f.status();
    file_ = std::make_unique<SafetensorsFile>(*f);
  }
  const SafetensorsFile& file() const { return *file_; }
  nlohmann::json meta(const std::string& key) const {
    const auto it = file_->metadata().find(key);
    CHECK(it != file_->metadata().end()) << key;
    return nlohmann::json::parse(it->second);
  }
  // F64 tensors exactly (read_f32 would round them to float).
  std::vector<double> f64(const std::string& name) const {
    const SafetensorsEntry* e = file_->find(name);
    CHECK(e != nullptr && e->dtype == "F64") << name;
    std::ifstream in(kGolden, std::ios::binary);
    uint64_t header = 0;
    in.read(reinterpret_cast<char*>(&header), 8);
    std::vector<double> out((e->end - e->begin) / 8);
    in.seekg(static_cast<std::streamoff>(8 + header + e->begin));
    in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(e->end - e->begin));
    CHECK(in.good()) << name;
    return out;
  }
  std::vector<float> f32(const std::string& name) const {
    auto t = file_->read_f32(name);
    CHECK(t.ok()) << t.status();
    return std::vector<float>(t->f32(), t->f32() + t->numel());
  }
  template <class T>
  std::vector<T> ints(const std::string& name) const {
    auto t = file_->read(name);
    CHECK(t.ok()) << t.status();
    return std::vector<T>(t->data<T>(), t->data<T>() + t->numel());
  }

  GrpoPiece piece() const {
    GrpoPiece p;
    p.offsets = ints<int64_t>("loss.offsets");
    p.logp = f32("loss.logp");
    p.logp_old = f32("loss.logp_old");
    p.logp_ref = f32("loss.logp_ref");
    p.mask = ints<uint8_t>("loss.mask");
    for (float a : f32("loss.advantage")) p.advantage.push_back(a);
    return p;
  }
  GrpoDenominators denominators() const {
    const auto c = meta("loss.config");
    return {c.at("sequences").get<double>(), c.at("tokens").get<double>(), c.at("max_completion_length").get<double>()};
  }
  GrpoConfig config(const nlohmann::json& c) const {
    const auto base = meta("loss.config");
    GrpoConfig g;
    g.epsilon_low = base.at("epsilon_low");
    g.epsilon_high = base.at("epsilon_high");
    g.beta = c.at("beta");
    const std::string type = c.at("loss_type");
    g.loss_type = type == "grpo" ? GrpoLossType::kGrpo : type == "dapo" ? GrpoLossType::kDapo : GrpoLossType::kDrGrpo;
    CHECK(type == "grpo" || type == "dapo" || type == "dr_grpo") << type;
    g.importance_sampling_level =
        c.at("importance_sampling_level") == "token" ? ImportanceLevel::kToken : ImportanceLevel::kSequence;
    return g;
  }

 private:
  std::unique_ptr<SafetensorsFile> file_;
};

// Every (loss_type, level, beta) combination, the golden file's own list.
std::vector<GrpoConfig> all_variants(const Golden& g) {
  std::vector<GrpoConfig> out;
  for (const auto& c : g.meta("loss.cases")) out.push_back(g.config(c));
  return out;
}

std::string describe(const GrpoConfig& c) {
  const char* type[] = {"grpo", "dapo", "dr_grpo"};
  return std::string(type[static_cast<int>(c.loss_type)]) +
         (c.importance_sampling_level == ImportanceLevel::kToken ? ".token" : ".sequence") +
         ".beta=" + std::to_string(c.beta);
}

// ---------------------------------------------------------------- (a) golden

TEST(GrpoGolden, Advantages) {
  Golden g;
  const auto sets = g.meta("adv.sets");
  ASSERT_EQ(sets.size(), 3u);
  const std::pair<const char*, RewardScaling> scalings[] = {
      {"group", RewardScaling::kGroup}, {"batch", RewardScaling::kBatch}, {"none", RewardScaling::kNone}};
  int zeros = 0;
  for (const auto& item : sets.items()) {
    const std::string name = item.key();
    const int64_t G = item.value().get<int64_t>();
    std::vector<double> rewards;
    for (float r : g.f32("adv." + name + ".rewards")) rewards.push_back(r);
    for (const auto& [scaling, which] : scalings) {
      const std::vector<double> want = g.f64("adv." + name + "." + scaling);
      const std::vector<double> got = grpo_advantages(rewards, G, which);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        if (want[i] == 0.0) {
          EXPECT_EQ(got[i], 0.0) << name << "." << scaling << "[" << i << "]";
          ++zeros;
        } else {
          EXPECT_NEAR(got[i], want[i], 1e-12 * std::fabs(want[i])) << name << "." << scaling << "[" << i << "]";
        }
      }
    }
  }
  EXPECT_GE(zeros, 3 * (4 + 2 + 3));  // the all-equal groups, under every scaling
}

TEST(GrpoGolden, LossGradientAndStatsOfEveryVariant) {
  Golden g;
  const GrpoPiece piece = g.piece();
  const GrpoDenominators den = g.denominators();
  const auto cases = g.meta("loss.cases");
  ASSERT_EQ(cases.size(), 12u);
  const std::vector<uint8_t>& mask = piece.mask;
  for (const auto& c : cases) {
    const std::string name = c.at("name");
    const GrpoConfig config = g.config(c);
    SCOPED_TRACE(name);
    const GrpoLossResult r = grpo_loss(piece, config, den);
    const double want_loss = g.f64(name + ".loss").at(0);
    // Both in double from the same float inputs: only summation order and exp differ.
    EXPECT_NEAR(r.loss, want_loss, 1e-12 * std::fabs(want_loss));
    const std::vector<double> want = g.f64(name + ".dlogp");
    ASSERT_EQ(r.dlogp.size(), want.size());
    double scale = 0;
    for (double w : want) scale = std::max(scale, std::fabs(w));
    ASSERT_GT(scale, 0);
    for (size_t t = 0; t < want.size(); ++t) {
      if (!mask[t]) {
        EXPECT_EQ(r.dlogp[t], 0.0f) << "masked token " << t;
        continue;
      }
      // dlogp is float: one or two roundings (GSPO adds two float terms), ~6e-8 relative each.
      EXPECT_NEAR(r.dlogp[t], want[t], 2.5e-7 * scale) << "token " << t;
    }
    const std::vector<double> stats = g.f64(name + ".stats");
    EXPECT_NEAR(r.kl_sum, stats[0], 1e-12 * std::fabs(stats[0]) + 1e-300);
    EXPECT_NEAR(r.ratio_sum, stats[1], 1e-12 * stats[1]);
    EXPECT_EQ(r.clipped_low, static_cast<int64_t>(stats[2]));
    EXPECT_EQ(r.clipped_high, static_cast<int64_t>(stats[3]));
    EXPECT_EQ(r.tokens, static_cast<int64_t>(stats[4]));
    EXPECT_GT(r.clipped_low + r.clipped_high, 0);
  }
}

// ---------------------------------------------------------------- (b) by hand

TEST(GrpoAdvantages, TwoCompletionsByHand) {
  // {1, 0}: mean 0.5, unbiased std sqrt(0.5^2 * 2 / 1) = 1/sqrt(2).
  const double s = std::sqrt(0.5);
  auto a = grpo_advantages({1, 0}, 2, RewardScaling::kGroup);
  EXPECT_NEAR(a[0], 0.5 / (s + 1e-4), 1e-15);
  EXPECT_NEAR(a[1], -0.5 / (s + 1e-4), 1e-15);
  EXPECT_NEAR(a[0], 0.70700, 1e-5);  // 0.7071 shrunk by the 1e-4
  a = grpo_advantages({1, 0}, 2, RewardScaling::kNone);
  EXPECT_EQ(a[0], 0.5);
  EXPECT_EQ(a[1], -0.5);
  // Batch: group means 0.5 and 0, std of {1, 0, 0, 0} = sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5.
  a = grpo_advantages({1, 0, 0, 0}, 2, RewardScaling::kBatch);
  EXPECT_NEAR(a[0], 0.5 / (0.5 + 1e-4), 1e-15);
  EXPECT_NEAR(a[1], -0.5 / (0.5 + 1e-4), 1e-15);
  EXPECT_EQ(a[2], 0.0);
  EXPECT_EQ(a[3], 0.0);
  // A custom eps is used.
  a = grpo_advantages({1, 0}, 2, RewardScaling::kGroup, 0.0);
  EXPECT_NEAR(a[0], 0.5 / s, 1e-15);
}

TEST(GrpoAdvantages, EqualRewardsGiveExactlyZero) {
  // (0.1 + 0.1 + 0.1) / 3 != 0.1 in double: without the rule r - mean is ~1e-17 and, divided by a
  // std of the same size plus 1e-4, still not 0.
  ASSERT_NE((0.1 + 0.1 + 0.1) / 3, 0.1);
  const std::vector<double> r = {0.1, 0.1, 0.1, 1.0, 0.0, 0.5};
  for (RewardScaling s : {RewardScaling::kGroup, RewardScaling::kBatch, RewardScaling::kNone}) {
    const auto a = grpo_advantages(r, 3, s);
    EXPECT_EQ(a[0], 0.0);
    EXPECT_EQ(a[1], 0.0);
    EXPECT_EQ(a[2], 0.0);
    EXPECT_GT(a[3], 0.0);
    EXPECT_LT(a[4], 0.0);
    EXPECT_NEAR(a[3] + a[4] + a[5], 0.0, 1e-12);  // centred
  }
  // Group scaling gives unit (unbiased) std up to the eps.
  const auto a = grpo_advantages(r, 3, RewardScaling::kGroup);
  const double var = (a[3] * a[3] + a[4] * a[4] + a[5] * a[5]) / 2;
  EXPECT_NEAR(std::sqrt(var), 0.5 / (0.5 + 1e-4), 1e-12);  // std of {1, 0, 0.5} is 0.5
}

// One piece of sequences with the given lengths, all tokens in, logp = logp_old = logp_ref.
GrpoPiece uniform_piece(const std::vector<int64_t>& lengths, const std::vector<double>& adv) {
  GrpoPiece p;
  p.offsets = {0};
  for (int64_t L : lengths) p.offsets.push_back(p.offsets.back() + L);
  const int64_t n = p.offsets.back();
  for (int64_t t = 0; t < n; ++t) p.logp.push_back(-0.25f - 0.1f * static_cast<float>(t % 7));
  p.logp_old = p.logp;
  p.logp_ref = p.logp;
  p.mask.assign(static_cast<size_t>(n), 1);
  p.advantage = adv;
  return p;
}

GrpoConfig make_config(GrpoLossType type, ImportanceLevel level, double beta = 0.0) {
  GrpoConfig c;
  c.loss_type = type;
  c.importance_sampling_level = level;
  c.beta = beta;
  c.epsilon_low = 0.2;
  c.epsilon_high = 0.28;
  return c;
}

TEST(GrpoLoss, RatioOneGivesMinusMeanAdvantage) {
  // mu = 1: logp == logp_old, every ratio 1, nothing clipped; with beta > 0 and logp_ref == logp
  // the k3 penalty and its gradient are 0 too.
  const std::vector<int64_t> len = {3, 1, 4};
  const std::vector<double> adv = {0.5, -1.0, 2.0};
  const GrpoPiece p = uniform_piece(len, adv);
  const double S = 3, N = 8, Lmax = 5;
  const GrpoDenominators den{S, N, Lmax};
  for (ImportanceLevel level : {ImportanceLevel::kToken, ImportanceLevel::kSequence}) {
    for (double beta : {0.0, 0.04}) {
      // grpo: -mean_i A_i; dapo: -sum_i n_i A_i / N; dr_grpo: -sum_i n_i A_i / (S Lmax).
      const double sum_nA = 3 * 0.5 + 1 * -1.0 + 4 * 2.0;
      const std::pair<GrpoLossType, double> expect[] = {{GrpoLossType::kGrpo, -(0.5 - 1.0 + 2.0) / S},
                                                        {GrpoLossType::kDapo, -sum_nA / N},
                                                        {GrpoLossType::kDrGrpo, -sum_nA / (S * Lmax)}};
      for (const auto& [type, loss] : expect) {
        const GrpoConfig c = make_config(type, level, beta);
        SCOPED_TRACE(describe(c));
        const GrpoLossResult r = grpo_loss(p, c, den);
        EXPECT_NEAR(r.loss, loss, 1e-15);
        // d/dlogp of -w rho A at rho = 1 is -w A, for token and sequence ratios alike.
        for (size_t i = 0; i < len.size(); ++i) {
          const double w = type == GrpoLossType::kGrpo   ? 1.0 / (len[i] * S)
                           : type == GrpoLossType::kDapo ? 1.0 / N
                                                         : 1.0 / (S * Lmax);
          for (int64_t t = p.offsets[i]; t < p.offsets[i + 1]; ++t)
            EXPECT_NEAR(r.dlogp[t], -w * adv[i], 1e-7 * std::fabs(w * adv[i])) << "token " << t;
        }
        EXPECT_EQ(r.clipped_low + r.clipped_high, 0);
        EXPECT_EQ(r.tokens, 8);
        EXPECT_NEAR(r.ratio_sum, 8.0, 1e-15);
        EXPECT_EQ(r.kl_sum, 0.0);
      }
    }
  }
}

// A one-token piece: logp - logp_old = log(ratio), advantage A, dapo over one token (w = 1).
GrpoLossResult one_token(double ratio, double A, double beta = 0.0, float logp_ref = -1.0f) {
  GrpoPiece p;
  p.offsets = {0, 1};
  p.logp = {-1.0f};
  p.logp_old = {static_cast<float>(-1.0 - std::log(ratio))};
  p.logp_ref = {logp_ref};
  p.mask = {1};
  p.advantage = {A};
  return grpo_loss(p, make_config(GrpoLossType::kDapo, ImportanceLevel::kToken, beta), GrpoDenominators{1, 1, 1});
}

TEST(GrpoLoss, EachClipBranchByHand) {
  // The float logp_old moves the ratio by ~1e-7 relative: tolerances 1e-6.
  // A > 0, ratio 1.5 > 1.28: clipped, j = 1.28 A, no gradient.
  GrpoLossResult r = one_token(1.5, 1.0);
  EXPECT_NEAR(r.loss, -1.28, 1e-6);
  EXPECT_EQ(r.dlogp[0], 0.0f);
  EXPECT_EQ(r.clipped_high, 1);
  EXPECT_EQ(r.clipped_low, 0);
  // A < 0, ratio 1.5: min picks the unclipped -1.5 (pessimistic), gradient -A rho = 1.5.
  r = one_token(1.5, -1.0);
  EXPECT_NEAR(r.loss, 1.5, 1e-6);
  EXPECT_NEAR(r.dlogp[0], 1.5, 1e-6);
  EXPECT_EQ(r.clipped_low + r.clipped_high, 0);
  // A < 0, ratio 0.5 < 0.8: clipped, j = 0.8 A, no gradient.
  r = one_token(0.5, -1.0);
  EXPECT_NEAR(r.loss, 0.8, 1e-6);
  EXPECT_EQ(r.dlogp[0], 0.0f);
  EXPECT_EQ(r.clipped_low, 1);
  EXPECT_EQ(r.clipped_high, 0);
  // A > 0, ratio 0.5: unclipped, j = 0.5 A, gradient -A rho.
  r = one_token(0.5, 2.0);
  EXPECT_NEAR(r.loss, -1.0, 1e-6);
  EXPECT_NEAR(r.dlogp[0], -1.0, 1e-6);
  // Inside the range: j = rho A.
  r = one_token(1.1, 2.0);
  EXPECT_NEAR(r.loss, -2.2, 1e-6);
  EXPECT_NEAR(r.dlogp[0], -2.2, 1e-6);
  EXPECT_NEAR(r.ratio_sum, 1.1, 1e-6);
  // A = 0: no loss and no gradient, clipped or not.
  r = one_token(1.5, 0.0);
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.dlogp[0], 0.0f);
}

TEST(GrpoLoss, K3PenaltyByHand) {
  // A = 0, ratio 1: only the penalty. d = logp_ref - logp; k3 = e^d - d - 1; L = beta k3,
  // dL/dlogp = beta (1 - e^d).
  for (float ref : {-1.7f, -1.1f, -0.7f, 0.2f}) {
    const double beta = 0.04;
    const GrpoLossResult r = one_token(1.0, 0.0, beta, ref);
    const double d = static_cast<double>(ref) + 1.0;  // logp = -1
    const double k3 = std::exp(d) - d - 1;
    EXPECT_NEAR(r.loss, beta * k3, 1e-15) << d;
    const double want = beta * (1 - std::exp(d));
    EXPECT_NEAR(r.dlogp[0], want, 1e-7 * std::fabs(want)) << d;  // a float
    EXPECT_NEAR(r.kl_sum, k3, 1e-14) << d;
    EXPECT_GT(r.kl_sum, 0);
  }
  // beta = 0: logp_ref may be empty, and no KL is reported.
  GrpoPiece p = uniform_piece({2}, {1.0});
  p.logp_ref.clear();
  const GrpoLossResult r = grpo_loss(p, make_config(GrpoLossType::kGrpo, ImportanceLevel::kToken), {1, 2, 2});
  EXPECT_NEAR(r.loss, -1.0, 1e-15);
  EXPECT_EQ(r.kl_sum, 0.0);
}

TEST(GrpoLoss, SequenceRatioByHand) {
  // GSPO: log-ratios 0.1 and 0.3 (a third token masked out, log-ratio 5): s = exp(0.2) = 1.2214,
  // inside [0.8, 1.28]; A = 1; grpo with one sequence: L = -(s + s) / 2 = -s; each token's
  // gradient -s / 2 (the sequence mean spreads d s / d logp_t = s / 2 over the two tokens).
  GrpoPiece p;
  p.offsets = {0, 3};
  p.logp = {-1.0f, -2.0f, -0.5f};
  p.logp_old = {-1.1f, -2.3f, -5.5f};
  p.mask = {1, 1, 0};
  p.advantage = {1.0};
  const GrpoConfig c = make_config(GrpoLossType::kGrpo, ImportanceLevel::kSequence);
  const double lr0 = static_cast<double>(p.logp[0]) - p.logp_old[0],
               lr1 = static_cast<double>(p.logp[1]) - p.logp_old[1];
  const double s = std::exp((lr0 + lr1) / 2);
  EXPECT_NEAR(s, std::exp(0.2), 1e-6);
  GrpoLossResult r = grpo_loss(p, c, {1, 2, 3});
  EXPECT_NEAR(r.loss, -s, 1e-12);
  EXPECT_NEAR(r.dlogp[0], -s / 2, 1e-7);
  EXPECT_NEAR(r.dlogp[1], -s / 2, 1e-7);
  EXPECT_EQ(r.dlogp[2], 0.0f);
  EXPECT_NEAR(r.ratio_sum, 2 * s, 1e-12);
  // The second token's own ratio exp(0.3) = 1.35 is above 1.28, but only s is clipped.
  EXPECT_EQ(r.clipped_high, 0);
  // GSPO's tiny range (3e-4 / 4e-4) clips s: L = -(1 + 4e-4), no gradient, both tokens counted.
  GrpoConfig tiny = c;
  tiny.epsilon_low = 3e-4;
  tiny.epsilon_high = 4e-4;
  r = grpo_loss(p, tiny, {1, 2, 3});
  EXPECT_NEAR(r.loss, -(1 + 4e-4), 1e-12);
  EXPECT_EQ(r.dlogp[0], 0.0f);
  EXPECT_EQ(r.dlogp[1], 0.0f);
  EXPECT_EQ(r.clipped_high, 2);
  // A fully masked sequence contributes nothing but counts in the grpo denominator.
  p.mask = {0, 0, 0};
  r = grpo_loss(p, c, {1, 2, 3});
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.tokens, 0);
  for (float d : r.dlogp) EXPECT_EQ(d, 0.0f);
}

// ---------------------------------------------------------------- (c) finite differences

TEST(GrpoLoss, GradientMatchesFiniteDifferencesForEveryVariant) {
  Golden g;
  const GrpoPiece base = g.piece();
  const GrpoDenominators den = g.denominators();
  for (const GrpoConfig& c : all_variants(g)) {
    SCOPED_TRACE(describe(c));
    const GrpoLossResult r = grpo_loss(base, c, den);
    double scale = 0;
    for (float d : r.dlogp) scale = std::max(scale, std::fabs(static_cast<double>(d)));
    int nonzero = 0;
    for (size_t t = 0; t < base.logp.size(); ++t) {
      // Golden ratios stay >= 1e-3 (relative) away from the clip boundaries: h = 1e-4 never
      // crosses one, so the loss is smooth over [x - h, x + h].
      GrpoPiece p = base;
      const float x = base.logp[t];
      p.logp[t] = x + 1e-4f;
      const float up = p.logp[t];
      const double lp = grpo_loss(p, c, den).loss;
      p.logp[t] = x - 1e-4f;
      const float down = p.logp[t];
      const double lm = grpo_loss(p, c, den).loss;
      const double fd = (lp - lm) / (static_cast<double>(up) - down);
      if (!base.mask[t]) {
        EXPECT_EQ(lp, lm) << "masked token " << t << " moved the loss";
        EXPECT_EQ(r.dlogp[t], 0.0f);
        continue;
      }
      nonzero += fd != 0;
      EXPECT_NEAR(r.dlogp[t], fd, 1e-6 * scale + 1e-5 * std::fabs(fd)) << "token " << t;
    }
    EXPECT_GT(nonzero, 5);
  }
}

// ---------------------------------------------------------------- (d) pieces

// Sequences [s0, s1) of p as a piece of their own.
GrpoPiece slice(const GrpoPiece& p, int64_t s0, int64_t s1) {
  GrpoPiece q;
  const int64_t t0 = p.offsets[s0], t1 = p.offsets[s1];
  for (int64_t i = s0; i <= s1; ++i) q.offsets.push_back(p.offsets[i] - t0);
  q.logp.assign(p.logp.begin() + t0, p.logp.begin() + t1);
  q.logp_old.assign(p.logp_old.begin() + t0, p.logp_old.begin() + t1);
  q.logp_ref.assign(p.logp_ref.begin() + t0, p.logp_ref.begin() + t1);
  q.mask.assign(p.mask.begin() + t0, p.mask.begin() + t1);
  q.advantage.assign(p.advantage.begin() + s0, p.advantage.begin() + s1);
  return q;
}

TEST(GrpoLoss, PiecesWithGlobalDenominatorsSumToTheWhole) {
  Golden g;
  const GrpoPiece whole = g.piece();
  const GrpoDenominators den = g.denominators();
  const int64_t S = whole.sequences();
  for (const GrpoConfig& c : all_variants(g)) {
    SCOPED_TRACE(describe(c));
    const GrpoLossResult ref = grpo_loss(whole, c, den);
    for (int64_t split = 1; split < S; ++split) {
      const GrpoLossResult a = grpo_loss(slice(whole, 0, split), c, den);
      const GrpoLossResult b = grpo_loss(slice(whole, split, S), c, den);
      EXPECT_NEAR(a.loss + b.loss, ref.loss, 1e-14 * std::fabs(ref.loss)) << "split at " << split;
      std::vector<float> d = a.dlogp;
      d.insert(d.end(), b.dlogp.begin(), b.dlogp.end());
      EXPECT_EQ(d, ref.dlogp) << "split at " << split;  // per-token terms: bit for bit
      EXPECT_EQ(a.tokens + b.tokens, ref.tokens);
      EXPECT_EQ(a.clipped_low + b.clipped_low, ref.clipped_low);
      EXPECT_EQ(a.clipped_high + b.clipped_high, ref.clipped_high);
      EXPECT_NEAR(a.kl_sum + b.kl_sum, ref.kl_sum, 1e-14 * ref.kl_sum);
      EXPECT_NEAR(a.ratio_sum + b.ratio_sum, ref.ratio_sum, 1e-14 * ref.ratio_sum);
    }
  }
}

TEST(GrpoLoss, LocalDenominatorsOfTheWholeBatchAreTheMeans) {
  // With the piece's own counts as the global ones the aggregation is the plain mean: dapo's loss
  // times the token count equals dr_grpo's times S * Lmax (both are the token sum).
  Golden g;
  const GrpoPiece p = g.piece();
  int64_t tokens = 0;
  for (uint8_t m : p.mask) tokens += m;
  const GrpoDenominators den{static_cast<double>(p.sequences()), static_cast<double>(tokens), 10.0};
  const double dapo = grpo_loss(p, make_config(GrpoLossType::kDapo, ImportanceLevel::kToken), den).loss;
  const double dr = grpo_loss(p, make_config(GrpoLossType::kDrGrpo, ImportanceLevel::kToken), den).loss;
  EXPECT_NEAR(dapo * static_cast<double>(tokens), dr * p.sequences() * 10.0, 1e-12 * std::fabs(dapo * tokens));
}

}  // namespace
}  // namespace strata
