// Tests of the verifiable rewards (rl/verifiers.h, REFERENCE.md section 6), one group per reward:
//   - countdown: TinyZero's cases (numbers reused, missing, extra; '**'; division by zero; nested
//     parentheses; U+2212; several <answer> tags, the last counts; an answer inside <think>);
//   - arithmetic: signs, leading zeros, spaces, non-integers, huge numbers;
//   - gsm8k: "#### 1,234", "$5", gold as a full solution; boxed: nested braces, numbers vs text;
//   - format against std::regex on random tag soup; tag_count; overlong at its boundaries.
#include "rl/verifiers.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

namespace strata {
namespace {

std::string answer(std::string_view body) { return "<think>work</think> <answer>" + std::string(body) + "</answer>"; }

// ---- last <answer> ------------------------------------------------------------------------------

TEST(LastAnswerTag, TakesTheLastClosedPairTrimmed) {
  EXPECT_EQ(last_answer_tag("<answer> 1 </answer><answer>\n2\n</answer>"), "2");
  EXPECT_EQ(last_answer_tag("<answer>1</answer> <answer>2"), "1");  // the unclosed one is not an answer
  EXPECT_EQ(last_answer_tag("<answer>a<answer>b</answer>"), "b");
  EXPECT_EQ(last_answer_tag("<answer></answer>"), "");
  EXPECT_EQ(last_answer_tag("no tags"), std::nullopt);
  EXPECT_EQ(last_answer_tag("</answer><answer>"), std::nullopt);
  EXPECT_EQ(last_answer_tag("<answer>5"), std::nullopt);
  EXPECT_EQ(last_answer_tag("5</answer>"), std::nullopt);
}

// ---- countdown ----------------------------------------------------------------------------------

const std::vector<int64_t> kNums = {44, 19, 35};
constexpr int64_t kTarget = 98;  // 44 + 19 + 35

TEST(RewardCountdown, CorrectScoresOne) {
  EXPECT_EQ(reward_countdown(answer("44 + 19 + 35"), kNums, kTarget), 1.0);
  EXPECT_EQ(reward_countdown(answer("35 + 19 + 44"), kNums, kTarget), 1.0);
  EXPECT_EQ(reward_countdown(answer("(44 + (19 + (35)))"), kNums, kTarget), 1.0);  // nested parens
  EXPECT_EQ(reward_countdown(answer(" \n44+19+35\t"), kNums, kTarget), 1.0);
  EXPECT_EQ(reward_countdown("<answer>44+19+35</answer>", kNums, kTarget), 1.0);  // format is not checked here
  // Real division reaching an integer target, and a target reached only within tolerance.
  EXPECT_EQ(reward_countdown(answer("(6 / 4) * 2"), {6, 4, 2}, 3), 1.0);
  EXPECT_EQ(reward_countdown(answer("(1 / 3) * 3"), {1, 3, 3}, 1), 1.0);
  EXPECT_EQ(reward_countdown(answer("3 - 5"), {3, 5}, -2), 1.0);  // negative targets work too
  // Duplicate numbers in the task: each copy used once.
  EXPECT_EQ(reward_countdown(answer("7 * 7 + 1"), {7, 1, 7}, 50), 1.0);
}

TEST(RewardCountdown, NoAnswerTagScoresZero) {
  EXPECT_EQ(reward_countdown("<think>44+19+35</think>", kNums, kTarget), 0.0);
  EXPECT_EQ(reward_countdown("44 + 19 + 35 = 98", kNums, kTarget), 0.0);
  EXPECT_EQ(reward_countdown("<answer>44 + 19 + 35", kNums, kTarget), 0.0);
  EXPECT_EQ(reward_countdown("", kNums, kTarget), 0.0);
}

TEST(RewardCountdown, EveryWrongAnswerScoresFormatOnly) {
  const struct {
    const char* body;
    const char* why;
  } cases[] = {
      {"44 + 19 + 34", "wrong value"},
      {"44 + 44 + 10", "number used twice / others missing"},
      {"44 + 19 + 35 + 0", "extra number"},
      {"44 + 54", "missing number (54 not given)"},
      {"44 + 19", "missing number, wrong value"},
      {"44 * 2 + 10", "other numbers"},
      {"44 + 19 + 35 = 98", "'=' is a bad character"},
      {"44 + 19 + 35.0", "'.' is a bad character"},
      {"44 ** 1 + 19 + 35 - 1", "'**' is not an operator"},
      {"44 + 19 + 35 / 0", "division by zero"},
      {"44 + 19 + 35 / (19 - 19)", "division by zero"},
      {"(44 + 19 + 35", "unbalanced parenthesis"},
      {"44 + 19 + 35)", "unbalanced parenthesis"},
      {"44 \xe2\x88\x92 19 + 35", "U+2212 minus sign"},
      {"", "empty answer"},
      {"ninety-eight", "not an expression"},
      {"98", "the target itself"},
  };
  for (const auto& c : cases) EXPECT_EQ(reward_countdown(answer(c.body), kNums, kTarget), 0.1) << c.why;
}

TEST(RewardCountdown, TheLastAnswerCounts) {
  EXPECT_EQ(reward_countdown("<answer>1+1</answer> then <answer>44+19+35</answer>", kNums, kTarget), 1.0);
  EXPECT_EQ(reward_countdown("<answer>44+19+35</answer> then <answer>1+1</answer>", kNums, kTarget), 0.1);
  // An answer inside <think> counts like any other when it is the last one.
  EXPECT_EQ(reward_countdown("<think><answer>44+19+35</answer></think>", kNums, kTarget), 1.0);
  EXPECT_EQ(reward_countdown("<think><answer>44+19+35</answer></think><answer>9</answer>", kNums, kTarget), 0.1);
}

TEST(RewardCountdown, Tolerance) {
  // 1e-5: 1/3 reaches 0 only within a third; 100000/100001 is within 1e-5 of 1.
  EXPECT_EQ(reward_countdown(answer("1 / 3"), {1, 3}, 0), 0.1);
  EXPECT_EQ(reward_countdown(answer("100000 / 100001"), {100000, 100001}, 1), 1.0);
  EXPECT_EQ(reward_countdown(answer("10000 / 10001"), {10000, 10001}, 1), 0.1);  // ~1e-4 away
}

TEST(RewardCountdown, HostileAnswerIsJustWrong) {
  const std::string deep = std::string(50000, '(') + "44+19+35" + std::string(50000, ')');
  EXPECT_EQ(reward_countdown(answer(deep), kNums, kTarget), 0.1);
  EXPECT_EQ(reward_countdown(answer(std::string(300, '(') + "44+19+35" + std::string(300, ')')), kNums, kTarget), 0.1);
}

// ---- arithmetic ---------------------------------------------------------------------------------

TEST(RewardArithmetic, ExactIntegerScoresOne) {
  EXPECT_EQ(reward_arithmetic(answer("42"), 42), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("-17"), -17), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("+5"), 5), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("  12 \n"), 12), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("007"), 7), 1.0);  // leading zeros: decimal 7
  EXPECT_EQ(reward_arithmetic(answer("-0"), 0), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("000"), 0), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("-9223372036854775808"), INT64_MIN), 1.0);
  EXPECT_EQ(reward_arithmetic(answer("9223372036854775807"), INT64_MAX), 1.0);
  EXPECT_EQ(reward_arithmetic("<answer>3</answer><answer>4</answer>", 4), 1.0);
}

TEST(RewardArithmetic, WellFormedButWrongScoresPointOne) {
  EXPECT_EQ(reward_arithmetic(answer("41"), 42), 0.1);
  EXPECT_EQ(reward_arithmetic(answer("-42"), 42), 0.1);
  EXPECT_EQ(reward_arithmetic(answer("42"), -42), 0.1);
  EXPECT_EQ(reward_arithmetic(answer("0"), 1), 0.1);
  EXPECT_EQ(reward_arithmetic(answer("99999999999999999999999999"), 42), 0.1);  // no overflow
  EXPECT_EQ(reward_arithmetic(answer("9223372036854775808"), INT64_MIN), 0.1);
  EXPECT_EQ(reward_arithmetic("<answer>4</answer><answer>3</answer>", 4), 0.1);
}

TEST(RewardArithmetic, NotAnIntegerScoresZero) {
  for (const char* body : {"", " ", "- 5", "5.0", "1,000", "5/1", "2+3", "five", "--5", "+-5", "5-", "0x10",
                           "1e2", "\xe2\x88\x92" "5", "5 6", "+", "-"}) {
    EXPECT_EQ(reward_arithmetic(answer(body), 5), 0.0) << "'" << body << "'";
  }
  EXPECT_EQ(reward_arithmetic("the answer is 5", 5), 0.0);
  EXPECT_EQ(reward_arithmetic("<answer>5", 5), 0.0);
}

// ---- gsm8k --------------------------------------------------------------------------------------

TEST(RewardGsm8k, LastHashNumber) {
  EXPECT_EQ(reward_gsm8k("so 3 + 4 = 7\n#### 7", "7"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 1,234", "1234"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### $5", "5"), 1.0);
  EXPECT_EQ(reward_gsm8k("####$1,234.50", "1234.5"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 72.", "72"), 1.0);  // a sentence's full stop
  EXPECT_EQ(reward_gsm8k("#### 72.0", "72"), 1.0);  // compared as numbers
  EXPECT_EQ(reward_gsm8k("#### -3", "-3"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 5 apples", "5"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 50%", "50"), 1.0);
  EXPECT_EQ(reward_gsm8k("####\n  18", "18"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 3\n...\n#### 4", "4"), 1.0);  // the last counts
  EXPECT_EQ(reward_gsm8k("#### 4\n...\n#### 3", "4"), 0.0);
}

TEST(RewardGsm8k, GoldMayBeTheFullSolution) {
  const std::string gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n48+24 = <<48+24=72>>72\n#### 72";
  EXPECT_EQ(reward_gsm8k("<think>...</think> #### 72", gold), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 24", gold), 0.0);
  EXPECT_EQ(reward_gsm8k("#### 1234", "#### 1,234"), 1.0);
  EXPECT_EQ(reward_gsm8k("#### 5", "$5"), 1.0);
}

TEST(RewardGsm8k, MissingOrUnparsableScoresZero) {
  EXPECT_EQ(reward_gsm8k("the answer is 7", "7"), 0.0);
  EXPECT_EQ(reward_gsm8k("#### seven", "7"), 0.0);
  EXPECT_EQ(reward_gsm8k("####", "7"), 0.0);
  EXPECT_EQ(reward_gsm8k("#### 1.2.3", "1.2"), 0.0);
  EXPECT_EQ(reward_gsm8k("#### 8", "7"), 0.0);
  EXPECT_EQ(reward_gsm8k("#### 7", "seven"), 0.0);  // a gold that is not a number never matches
  EXPECT_EQ(reward_gsm8k("#### 7", ""), 0.0);
}

// ---- boxed --------------------------------------------------------------------------------------

TEST(LastBoxed, BalancedBraces) {
  EXPECT_EQ(last_boxed("\\boxed{\\frac{1}{2}}"), "\\frac{1}{2}");
  EXPECT_EQ(last_boxed("\\boxed{1} and \\boxed{2}"), "2");
  EXPECT_EQ(last_boxed("\\boxed{{a}{b}}."), "{a}{b}");
  EXPECT_EQ(last_boxed("\\boxed{}"), "");
  EXPECT_EQ(last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}"), std::nullopt);  // the last never closes
  EXPECT_EQ(last_boxed("no box"), std::nullopt);
  EXPECT_EQ(last_boxed("\\boxed 5"), std::nullopt);
}

TEST(RewardBoxed, NumbersCompareAsNumbers) {
  EXPECT_EQ(reward_boxed("so \\boxed{5}", "5"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{5.0}", "5"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{ 0.50 }", ".5"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{1,234}", "1234"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{$-3$}", "-3"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{+3}", "3"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{6}", "5"), 0.0);
  EXPECT_EQ(reward_boxed("\\boxed{1,23}", "123"), 0.0);  // not a thousands group: text "1,23" != "123"
  EXPECT_EQ(reward_boxed("\\boxed{5} then \\boxed{6}", "6"), 1.0);
}

TEST(RewardBoxed, OtherAnswersCompareAsNormalisedText) {
  EXPECT_EQ(reward_boxed("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"), 1.0);  // nested braces
  EXPECT_EQ(reward_boxed("\\boxed{ \\frac{1}{2} }", "$\\frac{1}{2}$"), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{x  +\n 1}", "x + 1"), 1.0);  // whitespace runs collapse
  EXPECT_EQ(reward_boxed("\\boxed{\\frac{1}{2}}", "0.5"), 0.0);  // no LaTeX equivalence
  EXPECT_EQ(reward_boxed("\\boxed{x+1}", "x + 1"), 0.0);       // spaces are not removed, only collapsed
  EXPECT_EQ(reward_boxed("\\boxed{(1,2)}", "(1, 2)"), 0.0);
  EXPECT_EQ(reward_boxed("\\boxed{\\text{B}}", "\\text{B}"), 1.0);
}

TEST(RewardBoxed, GoldMayHoldItsOwnBox) {
  EXPECT_EQ(reward_boxed("\\boxed{\\frac{1}{2}}", "Thus the answer is $\\boxed{\\frac{1}{2}}$."), 1.0);
  EXPECT_EQ(reward_boxed("\\boxed{12}", "So we get \\boxed{12}."), 1.0);
}

TEST(RewardBoxed, MissingBoxScoresZero) {
  EXPECT_EQ(reward_boxed("the answer is 5", "5"), 0.0);
  EXPECT_EQ(reward_boxed("\\boxed{5", "5"), 0.0);
  EXPECT_EQ(reward_boxed("<answer>5</answer>", "5"), 0.0);
}

// ---- format -------------------------------------------------------------------------------------

TEST(RewardFormat, Matches) {
  EXPECT_EQ(reward_format("<think>a</think><answer>b</answer>"), 1.0);
  EXPECT_EQ(reward_format("<think>\nline 1\nline 2\n</think>\n<answer>\n42\n</answer>"), 1.0);  // dot matches \n
  EXPECT_EQ(reward_format("<think></think> \t\n <answer></answer>"), 1.0);
  EXPECT_EQ(reward_format("<think>a</think><answer>b</answer>\n"), 1.0);  // '$' before a final newline
  EXPECT_EQ(reward_format("<think><answer>x</answer></think><answer>y</answer>"), 1.0);
  // Lazy, but a later </think> may still be the one that matches.
  EXPECT_EQ(reward_format("<think>a</think>b</think> <answer>c</answer>"), 1.0);
  EXPECT_EQ(reward_format("<think>a</think><answer>b</answer></answer>"), 1.0);
}

TEST(RewardFormat, DoesNotMatch) {
  EXPECT_EQ(reward_format(""), 0.0);
  EXPECT_EQ(reward_format(" <think>a</think><answer>b</answer>"), 0.0);  // anchored at the start
  EXPECT_EQ(reward_format("<think>a</think><answer>b</answer> "), 0.0);
  EXPECT_EQ(reward_format("<think>a</think><answer>b</answer>\n\n"), 0.0);
  EXPECT_EQ(reward_format("<think>a</think>x<answer>b</answer>"), 0.0);   // only whitespace between
  EXPECT_EQ(reward_format("<answer>b</answer>"), 0.0);
  EXPECT_EQ(reward_format("<think>a</think>"), 0.0);
  EXPECT_EQ(reward_format("<think>a<answer>b</answer>"), 0.0);
  EXPECT_EQ(reward_format("<think>a</think><answer>b"), 0.0);
  EXPECT_EQ(reward_format("<think></answer>"), 0.0);
  EXPECT_EQ(reward_format("<think></think><answer></answer"), 0.0);
}

// The hand-written matcher against std::regex ([\s\S] for DOTALL, \n? for Python's '$') on random
// strings of tags, whitespace and text.
TEST(RewardFormat, AgreesWithARegexOnRandomTagSoup) {
  const std::regex re(R"(^<think>[\s\S]*?</think>[ \t\n\r\f\v]*<answer>[\s\S]*?</answer>\n?$)");
  const std::vector<std::string> pieces = {"<think>", "</think>", "<answer>", "</answer>", " ", "\n", "x", "<", ">"};
  std::mt19937 rng(3);
  std::uniform_int_distribution<size_t> pick(0, pieces.size() - 1), len(0, 9);
  int matched = 0;
  for (int trial = 0; trial < 30000; ++trial) {
    std::string s;
    const bool seeded = trial % 2 == 0;  // half start and end with the right tags, to hit matches
    if (seeded) s = "<think>";
    for (size_t i = len(rng); i > 0; --i) s += pieces[pick(rng)];
    if (seeded) s += "</answer>";
    const double want = std::regex_match(s, re) ? 1.0 : 0.0;
    ASSERT_EQ(reward_format(s), want) << "'" << s << "'";
    matched += want == 1.0;
  }
  EXPECT_GT(matched, 500);
}

// ---- tag_count ----------------------------------------------------------------------------------

TEST(RewardTagCount, QuarterPerTagPresentExactlyOnce) {
  EXPECT_EQ(reward_tag_count("<think>a</think><answer>b</answer>"), 1.0);
  EXPECT_EQ(reward_tag_count("plain text"), 0.0);
  EXPECT_EQ(reward_tag_count("<think>a</think>"), 0.5);
  EXPECT_EQ(reward_tag_count("<think>a</think><answer>b</answer><answer>c</answer>"), 0.5);
  EXPECT_EQ(reward_tag_count("<think><think></think><answer></answer>"), 0.75);
  EXPECT_EQ(reward_tag_count("</answer>"), 0.25);  // "</answer>" does not contain "<answer>"
  EXPECT_EQ(reward_tag_count("<answer></answer>  <answer>"), 0.25);
}

// ---- overlong -----------------------------------------------------------------------------------

TEST(RewardOverlong, DapoSoftPunishmentAtTheBoundaries) {
  // Lmax = 100, Lc = 20: free up to 80, linear to -1 at 100, -1 beyond.
  EXPECT_EQ(reward_overlong(0, 100, 20), 0.0);
  EXPECT_EQ(reward_overlong(80, 100, 20), 0.0);
  EXPECT_DOUBLE_EQ(reward_overlong(81, 100, 20), -0.05);
  EXPECT_DOUBLE_EQ(reward_overlong(90, 100, 20), -0.5);
  EXPECT_DOUBLE_EQ(reward_overlong(99, 100, 20), -0.95);
  EXPECT_EQ(reward_overlong(100, 100, 20), -1.0);
  EXPECT_EQ(reward_overlong(101, 100, 20), -1.0);
  EXPECT_EQ(reward_overlong(100000, 100, 20), -1.0);
  EXPECT_DOUBLE_EQ(reward_overlong(2, 4, 4), -0.5);  // the window may be the whole length
}

TEST(RewardOverlong, BufferOffIsZeroUpToTheLimit) {
  EXPECT_EQ(reward_overlong(100, 100, 0), 0.0);
  EXPECT_EQ(reward_overlong(101, 100, 0), -1.0);
}

}  // namespace
}  // namespace strata
