// The imperfect teacher of data.teacher_error_rate (data/tasks.h): its traces forget every carry
// and borrow in a self-consistent way, it is chosen for the configured share of examples, and it
// never changes the problems or their gold answers (rewards and evaluation stay exact).
#include <cstdio>

#include <gtest/gtest.h>

#include "data/tasks.h"

namespace strata {
namespace {

TEST(ForgetfulTeacher, DropsCarriesAndBorrows) {
  EXPECT_EQ(arithmetic_completion_forgetful(347, '+', 589),
            "<think>7+9=16 c1, 4+8+0=12 c1, 3+5+0=8 c0, so 826</think> <answer>826</answer>");
  EXPECT_EQ(arithmetic_completion_forgetful(512, '-', 347),
            "<think>512>=347, 12-7-0=5 b1, 11-4-0=7 b1, 5-3-0=2 b0, so 275</think> <answer>275</answer>");
  EXPECT_EQ(arithmetic_completion_forgetful(347, '-', 589),
            "<think>347<589 so -(589-347), 9-7-0=2 b0, 8-4-0=4 b0, 5-3-0=2 b0, so -242</think> <answer>-242</answer>");
  // The top column's carry still leads the number.
  EXPECT_EQ(arithmetic_completion_forgetful(951, '+', 862),
            "<think>1+2=3 c0, 5+6+0=11 c1, 9+8+0=17 c1, so 1713</think> <answer>1713</answer>");
  // Without carries or borrows the teacher is right and writes the exact trace.
  EXPECT_EQ(arithmetic_completion_forgetful(123, '+', 456), arithmetic_completion(123, '+', 456));
  EXPECT_EQ(arithmetic_completion_forgetful(987, '-', 654), arithmetic_completion(987, '-', 654));
}

TEST(ForgetfulTeacher, ChosenForTheConfiguredShareOnly) {
  int differ = 0, forgetful = 0;
  for (int64_t i = 0; i < 3000; ++i) {
    const Example exact = make_task_example(TaskKind::kArithmetic, 7, i, Split::kTrain);
    const Example noisy = make_arithmetic_example(7, i, Split::kTrain, 0.6);
    ASSERT_EQ(noisy.prompt, exact.prompt);
    ASSERT_EQ(noisy.answer, exact.answer);
    int a = 0, b = 0;
    char op = 0;
    ASSERT_EQ(std::sscanf(exact.prompt.c_str(), "Compute %d%c%d", &a, &op, &b), 3);
    const std::string wrong = arithmetic_completion_forgetful(a, op, b);
    if (wrong == exact.completion) continue;  // nothing to forget in this problem
    ++differ;
    if (noisy.completion == wrong) {
      ++forgetful;
    } else {
      ASSERT_EQ(noisy.completion, exact.completion);
    }
    EXPECT_EQ(make_arithmetic_example(7, i, Split::kTrain, 0.0).completion, exact.completion);
  }
  ASSERT_GT(differ, 1500);
  EXPECT_NEAR(static_cast<double>(forgetful) / differ, 0.6, 0.04);
}

}  // namespace
}  // namespace strata
