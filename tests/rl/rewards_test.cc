// Tests of reward composition (rl/rewards.h): a spec built from GrpoConfig.rewards sums weighted
// components in name order; the builder refuses "command" without its program, unknown names, empty maps and a bad
// overlong window; a reward given the wrong kind of gold answer is an error naming both.
#include "rl/rewards.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace strata {
namespace {

RewardInput input(const std::string& completion, const TaskAnswer& answer, int64_t tokens = 10) {
  return RewardInput{"prompt", completion, answer, tokens, false};
}

TEST(RewardSpec, DefaultConfigIsCountdownOnly) {
  auto spec = make_reward_spec(GrpoConfig{});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->names(), (std::vector<std::string>{"countdown"}));
  const TaskAnswer gold = TaskAnswer::countdown({3, 4}, 7);
  auto r = spec->score(input("<think>x</think><answer>3+4</answer>", gold));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->total, 1.0);
}

TEST(RewardSpec, WeightedSumWithComponentsInNameOrder) {
  GrpoConfig cfg;
  cfg.rewards = {{"countdown", 1.0}, {"format", 0.5}, {"tag_count", 0.2}, {"overlong", 2.0}};
  cfg.max_new_tokens = 100;
  cfg.overlong_buffer = 20;
  auto spec = make_reward_spec(cfg);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->names(), (std::vector<std::string>{"countdown", "format", "overlong", "tag_count"}));

  const TaskAnswer gold = TaskAnswer::countdown({3, 4}, 7);
  // Right answer, good format, 90 tokens (overlong -0.5).
  auto r = spec->score(input("<think>x</think>\n<answer>3+4</answer>", gold, 90));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->components.size(), 4u);
  EXPECT_EQ(r->components[0].name, "countdown");
  EXPECT_EQ(r->components[0].value, 1.0);
  EXPECT_EQ(r->components[1].value, 1.0);
  EXPECT_EQ(r->components[2].name, "overlong");
  EXPECT_DOUBLE_EQ(r->components[2].value, -0.5);
  EXPECT_EQ(r->components[2].weight, 2.0);
  EXPECT_EQ(r->components[3].value, 1.0);
  EXPECT_DOUBLE_EQ(r->total, 1.0 * 1.0 + 0.5 * 1.0 + 2.0 * -0.5 + 0.2 * 1.0);

  // Wrong answer, no format, short.
  auto w = spec->score(input("<answer>3*4</answer>", gold, 5));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_DOUBLE_EQ(w->total, 1.0 * 0.1 + 0.5 * 0.0 + 2.0 * 0.0 + 0.2 * 0.5);
}

TEST(RewardSpec, EveryBuiltinScoresItsKind) {
  GrpoConfig cfg;
  cfg.rewards = {{"arithmetic", 1.0}};
  auto arith = make_reward_spec(cfg);
  ASSERT_TRUE(arith.ok());
  EXPECT_EQ(arith->score(input("<answer>-12</answer>", TaskAnswer::arithmetic(-12)))->total, 1.0);
  EXPECT_EQ(arith->score(input("<answer>12</answer>", TaskAnswer::arithmetic(-12)))->total, 0.1);

  cfg.rewards = {{"gsm8k", 1.0}};
  auto gsm = make_reward_spec(cfg);
  ASSERT_TRUE(gsm.ok());
  EXPECT_EQ(gsm->score(input("#### 1,234", TaskAnswer::gsm8k("#### 1234")))->total, 1.0);
  EXPECT_EQ(gsm->score(input("#### 12", TaskAnswer::arithmetic(12)))->total, 1.0);  // integer gold works too

  cfg.rewards = {{"boxed", 1.0}};
  auto boxed = make_reward_spec(cfg);
  ASSERT_TRUE(boxed.ok());
  EXPECT_EQ(boxed->score(input("\\boxed{\\frac{1}{2}}", TaskAnswer::boxed("\\frac{1}{2}")))->total, 1.0);

  cfg.rewards = {{"format", 1.0}, {"tag_count", 1.0}};
  auto fmt = make_reward_spec(cfg);
  ASSERT_TRUE(fmt.ok());
  const TaskAnswer none = TaskAnswer::none();  // answer-free rewards need no gold
  EXPECT_EQ(fmt->score(input("<think>a</think><answer>b</answer>", none))->total, 2.0);
}

TEST(RewardSpec, ZeroAndNegativeWeights) {
  GrpoConfig cfg;
  cfg.rewards = {{"format", 0.0}, {"tag_count", -1.0}};
  auto spec = make_reward_spec(cfg);
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto r = spec->score(input("<think>a</think><answer>b</answer>", TaskAnswer::none()));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->total, -1.0);
  EXPECT_EQ(r->components[0].value, 1.0);  // logged unweighted even at weight 0
}

TEST(RewardSpec, CommandRewardNeedsItsProgram) {
  GrpoConfig cfg;
  cfg.rewards = {{"command", 1.0}};
  auto spec = make_reward_spec(cfg);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("needs grpo.reward_command"), std::string::npos) << spec.status();
  EXPECT_NE(spec.status().message().find("grpo.rewards.command"), std::string::npos);
}

TEST(RewardSpec, BuilderErrors) {
  GrpoConfig cfg;
  cfg.rewards = {};
  EXPECT_FALSE(make_reward_spec(cfg).ok());

  cfg.rewards = {{"countdwn", 1.0}};
  auto unknown = make_reward_spec(cfg);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown reward \"countdwn\""), std::string::npos) << unknown.status();

  cfg.rewards = {{"countdown", std::nan("")}};
  auto nan = make_reward_spec(cfg);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("not finite"), std::string::npos) << nan.status();

  cfg.rewards = {{"overlong", 1.0}};
  cfg.overlong_buffer = 0;
  auto off = make_reward_spec(cfg);
  ASSERT_FALSE(off.ok());
  EXPECT_NE(off.status().message().find("overlong_buffer"), std::string::npos) << off.status();
  cfg.max_new_tokens = 10;
  cfg.overlong_buffer = 10;
  EXPECT_FALSE(make_reward_spec(cfg).ok());
  cfg.overlong_buffer = 9;
  EXPECT_TRUE(make_reward_spec(cfg).ok());
}

TEST(RewardSpec, WrongAnswerKindIsAnError) {
  GrpoConfig cfg;
  cfg.rewards = {{"countdown", 1.0}};
  auto spec = make_reward_spec(cfg);
  ASSERT_TRUE(spec.ok());
  auto r = spec->score(input("<answer>3+4</answer>", TaskAnswer::arithmetic(7)));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("reward countdown"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("arithmetic"), std::string::npos) << r.status();

  cfg.rewards = {{"boxed", 1.0}};
  auto boxed = make_reward_spec(cfg);
  ASSERT_TRUE(boxed.ok());
  EXPECT_FALSE(boxed->score(input("\\boxed{7}", TaskAnswer::countdown({7}, 7))).ok());
  EXPECT_FALSE(boxed->score(input("\\boxed{7}", TaskAnswer::none())).ok());
}

TEST(RewardSpec, AddCustomTerm) {
  RewardSpec spec;
  ASSERT_TRUE(spec.add("len", 0.5, [](const RewardInput& in) -> StatusOr<double> {
                    return static_cast<double>(in.completion.size());
                  }).ok());
  EXPECT_FALSE(spec.add("len", 1.0, [](const RewardInput&) -> StatusOr<double> { return 0.0; }).ok());
  const TaskAnswer none;
  EXPECT_EQ(spec.score(input("abcd", none))->total, 2.0);
}

}  // namespace
}  // namespace strata
