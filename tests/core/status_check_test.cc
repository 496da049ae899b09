// Status plumbing (RETURN_IF_ERROR / ASSIGN_OR_RETURN), CHECK messages with rank and file:line,
// the fatal handler hook, and rank-aware logging to a file.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "core/check.h"
#include "core/log.h"
#include "core/status.h"
#include "core/timer.h"

namespace strata {
namespace {

StatusOr<int> parse_positive(int x) {
  if (x <= 0) return absl::InvalidArgumentError("not positive");
  return x;
}

Status use_it(int x, int* out) {
  ASSIGN_OR_RETURN(int v, parse_positive(x));
  RETURN_IF_ERROR(v > 100 ? absl::OutOfRangeError("too big") : OkStatus());
  *out = v * 2;
  return OkStatus();
}

TEST(Status, MacrosPropagateAndAssign) {
  int out = 0;
  EXPECT_TRUE(use_it(21, &out).ok());
  EXPECT_EQ(out, 42);
  EXPECT_EQ(use_it(-1, &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(use_it(500, &out).message(), "too big");
  EXPECT_EQ(annotate(absl::NotFoundError("x"), "loading ckpt").message(), "loading ckpt: x");
}

TEST(CheckDeathTest, MessageNamesRankFileLineAndHint) {
  EXPECT_DEATH(
      {
        set_log_rank(3);
        int a = 1;
        int b = 2;
        CHECK_EQ(a, b) << "hint " << 7;
      },
      "\\[rank 3\\] .*status_check_test.cc:[0-9]+: CHECK failed: a == b \\(1 vs 2\\): hint 7");
  EXPECT_DEATH(CHECK(false), "CHECK failed: false");
}

void fatal_marker() {
  std::fprintf(stderr, "fatal handler ran\n");
  std::fflush(stderr);
  std::_Exit(9);
}

TEST(CheckDeathTest, FatalHandlerRunsBeforeAbort) {
  EXPECT_EXIT(
      {
        set_fatal_handler(fatal_marker);
        CHECK_LT(5, 3);
      },
      ::testing::ExitedWithCode(9), "fatal handler ran");
}

TEST(Log, RankFileGetsEveryLine) {
  auto path = std::filesystem::temp_directory_path() / "strata_log_test.log";
  std::filesystem::remove(path);
  set_log_rank(2);
  ASSERT_TRUE(set_log_file(path.string()));
  LOG(INFO) << "hello " << 5;
  LOG(DEBUG) << "hidden";
  set_log_file("");
  set_log_rank(0);
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_NE(s.str().find("[rank 2] hello 5"), std::string::npos);
  EXPECT_EQ(s.str().find("hidden"), std::string::npos);
  LogLevel l;
  EXPECT_TRUE(parse_log_level("warn", &l));
  EXPECT_EQ(l, LogLevel::kWarn);
  EXPECT_FALSE(parse_log_level("loud", &l));
}

TEST(Timer, SetAccumulatesScopes) {
  TimerSet timers;
  { auto s = timers.scope("comm"); }
  timers.add("comm", 0.5);
  EXPECT_GE(timers.get("comm"), 0.5);
  EXPECT_EQ(timers.get("compute"), 0.0);
}

}  // namespace
}  // namespace strata
