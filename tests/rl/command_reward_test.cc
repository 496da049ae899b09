// The `command` reward (rl/command_reward.h) against small shell programs: one that answers,
// one that echoes what it was sent (the JSON line must carry prompt, completion and answer, with
// quotes, newlines, control characters and UTF-8 intact), one that crashes, one that hangs, one
// that prints garbage or a non-finite reward, one that crashes only on some inputs (the process
// is restarted for the next line); both failure policies; and the reward spec wiring.
#include <chrono>

#include <gtest/gtest.h>

#include "rl/command_reward.h"
#include "rl/rewards.h"

namespace strata {
namespace {

TEST(CommandReward, ScoresEveryLineInOrder) {
  CommandReward cmd(R"(i=0; while read -r l; do i=$((i+1)); echo "{\"reward\": $i}"; done)", 5, RewardFailure::kStop);
  for (int i = 1; i <= 3; ++i) {
    auto r = cmd.score("p", "c", R"({"result":1})");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, i);
  }
  EXPECT_EQ(cmd.failures(), 0);
}

TEST(CommandReward, SendsOneJsonLinePerCompletion) {
  // Scores 1 when the line it read is exactly the expected JSON, else 0.
  CommandReward cmd(
      R"(while IFS= read -r l; do if [ "$l" = '{"prompt":"say \"hi\"\n","completion":"café \u0001 \t","answer":{"result":42}}' ]; then echo '{"reward": 1}'; else echo '{"reward": 0}'; fi; done)",
      5, RewardFailure::kStop);
  auto r = cmd.score("say \"hi\"\n", "caf\xc3\xa9 \x01 \t", R"({"result":42})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 1.0);
}

TEST(CommandReward, CrashScoresZeroAndRestarts) {
  CommandReward cmd(R"(while read -r l; do case "$l" in *boom*) exit 3;; esac; echo '{"reward": 1}'; done)", 5,
                    RewardFailure::kZero);
  auto a = cmd.score("p", "fine", "");
  auto b = cmd.score("p", "boom", "");
  auto c = cmd.score("p", "fine again", "");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, 1.0);
  EXPECT_EQ(*b, 0.0);
  EXPECT_EQ(*c, 1.0);  // a fresh process answered
  EXPECT_EQ(cmd.failures(), 1);
  EXPECT_NE(cmd.last_failure().find("exited with status 3"), std::string::npos) << cmd.last_failure();
  EXPECT_NE(cmd.last_failure().find("line 2"), std::string::npos) << cmd.last_failure();
}

TEST(CommandReward, HangIsCutByTheTimeout) {
  CommandReward cmd("sleep 30", 0.2, RewardFailure::kZero);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = cmd.score("p", "c", "");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0.0);
  EXPECT_LT(secs, 2.0);
  EXPECT_NE(cmd.last_failure().find("gave no answer within 0.2s"), std::string::npos) << cmd.last_failure();
}

TEST(CommandReward, GarbageIsReported) {
  for (const char* program : {"while read -r l; do echo hello; done", R"(while read -r l; do echo '{"reward": nan}'; done)",
                              R"(while read -r l; do echo '{"score": 1}'; done)", R"(while read -r l; do echo '{"reward": 1x}'; done)"}) {
    CommandReward cmd(program, 5, RewardFailure::kZero);
    auto r = cmd.score("p", "c", "");
    ASSERT_TRUE(r.ok()) << program;
    EXPECT_EQ(*r, 0.0) << program;
    EXPECT_EQ(cmd.failures(), 1) << program;
    EXPECT_NE(cmd.last_failure().find("not {\"reward\": <finite number>}"), std::string::npos) << cmd.last_failure();
  }
}

TEST(CommandReward, StopPolicyEndsTheRunWithTheMessage) {
  CommandReward cmd("exit 1", 5, RewardFailure::kStop);
  auto r = cmd.score("p", "c", "");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("reward command `exit 1`"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("grpo.reward_command_on_failure: stop"), std::string::npos) << r.status();
}

TEST(CommandReward, JsonQuoteEscapes) {
  EXPECT_EQ(json_quote("a\"b\\c\n\x01"), R"("a\"b\\c\n\u0001")");
  EXPECT_EQ(json_quote("\xc3\xa9"), "\"\xc3\xa9\"");  // valid UTF-8 passes through
  EXPECT_EQ(json_quote("\xff"), R"("\ufffd")");       // a stray byte does not
  EXPECT_EQ(json_quote("\xc3"), R"("\ufffd")");       // nor a cut sequence
}

TEST(CommandReward, ReachableFromTheRewardSpec) {
  GrpoConfig cfg;
  cfg.rewards = {{"command", 2.0}};
  cfg.reward_command = R"(while read -r l; do echo '{"reward": 0.25}'; done)";
  auto spec = make_reward_spec(cfg);
  ASSERT_TRUE(spec.ok()) << spec.status();
  TaskAnswer none;
  auto r = spec->score(RewardInput{"p", "c", none, 1, false, "{}"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->total, 0.5);
}

}  // namespace
}  // namespace strata
