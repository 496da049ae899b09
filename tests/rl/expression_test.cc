// Tests of the countdown expression parser (rl/expression.h):
//   - precedence, associativity, unary signs, real division, whitespace, literal extraction;
//   - every error class: empty, bad characters ('.', '**', '//', '^', U+2212), unbalanced
//     parentheses, missing operands, trailing junk, division by zero, non-finite values;
//   - hostile input: deep nesting, long sign chains, huge literals, input past the length limit;
//   - random expression trees printed and re-parsed against their known value.
#include "rl/expression.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace strata {
namespace {

double value_of(std::string_view text) {
  auto r = evaluate_expression(text);
  EXPECT_TRUE(r.ok()) << text << ": " << r.status();
  return r.ok() ? r->value : std::nan("");
}

std::string error_of(std::string_view text) {
  auto r = evaluate_expression(text);
  EXPECT_FALSE(r.ok()) << text << " evaluated to " << (r.ok() ? r->value : 0.0);
  return r.ok() ? "" : std::string(r.status().message());
}

// ---- values -------------------------------------------------------------------------------------

TEST(Expression, PrecedenceAndAssociativity) {
  EXPECT_EQ(value_of("1+2*3"), 7);
  EXPECT_EQ(value_of("(1+2)*3"), 9);
  EXPECT_EQ(value_of("8-3-2"), 3);     // left-associative
  EXPECT_EQ(value_of("64/4/2"), 8);    // left-associative
  EXPECT_EQ(value_of("2*3+4*5"), 26);
  EXPECT_EQ(value_of("((((7))))"), 7);
  EXPECT_EQ(value_of("(95 - 39) + (78 - 83)"), 51);
  EXPECT_EQ(value_of("0"), 0);
}

TEST(Expression, RealDivision) {
  EXPECT_DOUBLE_EQ(value_of("8/3"), 8.0 / 3.0);
  EXPECT_DOUBLE_EQ(value_of("1/3*3"), 1.0);
  EXPECT_DOUBLE_EQ(value_of("7/2"), 3.5);  // not integer division
  EXPECT_DOUBLE_EQ(value_of("(1+2)/(3*4)"), 0.25);
}

TEST(Expression, UnarySignsAsPythonEval) {
  EXPECT_EQ(value_of("-3+5"), 2);
  EXPECT_EQ(value_of("2*-3"), -6);
  EXPECT_EQ(value_of("--3"), 3);
  EXPECT_EQ(value_of("+4"), 4);
  EXPECT_EQ(value_of("2--3"), 5);
  EXPECT_EQ(value_of("-(2+3)*2"), -10);
  EXPECT_EQ(value_of("- 3"), -3);
}

TEST(Expression, WhitespaceIsAnyAsciiSpace) {
  EXPECT_EQ(value_of("  1 +\t2\n*\r3  "), 7);
  EXPECT_EQ(value_of("( 1 + 2 ) * 3"), 9);
}

TEST(Expression, ExtractsLiteralsInOrder) {
  auto r = evaluate_expression("(44 + 19) - 3 * 44");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->numbers, (std::vector<int64_t>{44, 19, 3, 44}));
  auto lead = evaluate_expression("007 + 0");
  ASSERT_TRUE(lead.ok()) << lead.status();
  EXPECT_EQ(lead->numbers, (std::vector<int64_t>{7, 0}));  // decimal, leading zeros ignored
  EXPECT_EQ(lead->value, 7);
  auto neg = evaluate_expression("-5");
  ASSERT_TRUE(neg.ok());
  EXPECT_EQ(neg->numbers, (std::vector<int64_t>{5}));  // the sign is an operator, not the literal
}

// ---- errors -------------------------------------------------------------------------------------

TEST(Expression, EmptyInput) {
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("   \n").find("empty"), std::string::npos);
}

TEST(Expression, BadCharacters) {
  for (const char* text : {"3.5", "1.0+2", "x+1", "1e3", "2^3", "3 \xe2\x88\x92 2" /* U+2212 */,
                           "1,2", "abs(3)", "3=3", "1+2;", "\"1\"", "[1]", "1_000"}) {
    error_of(text);
  }
  EXPECT_NE(error_of("3 \xe2\x88\x92 2").find("0xe2"), std::string::npos);
  EXPECT_NE(error_of("1.5").find("'.'"), std::string::npos);
}

TEST(Expression, OnlyTheFourOperators) {
  // Python would read these as power and floor division; REFERENCE allows only + - * /.
  error_of("2**3");
  error_of("8//2");
  error_of("2* *3");
}

TEST(Expression, UnbalancedParentheses) {
  EXPECT_NE(error_of("(1+2").find("unbalanced '('"), std::string::npos);
  EXPECT_NE(error_of("1+2)").find("unbalanced ')'"), std::string::npos);
  EXPECT_NE(error_of("((1+2)").find("unbalanced '('"), std::string::npos);
  error_of("(1+2))");
  error_of(")1+2(");
  error_of("()");
  error_of("(");
}

TEST(Expression, MissingOperandsAndTrailingJunk) {
  error_of("1+");
  error_of("*2");
  error_of("1 2");
  error_of("(1)(2)");
  error_of("2(3)");
  error_of("1+*2");
  error_of("-");
  EXPECT_NE(error_of("1+2 x").find("column 5"), std::string::npos);
}

TEST(Expression, DivisionByZero) {
  EXPECT_NE(error_of("5/0").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("5/(3-3)").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("0/0").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("1/-0").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("5/0*0").find("division by zero"), std::string::npos);
}

// ---- hostile input ------------------------------------------------------------------------------

TEST(Expression, DeepNestingIsAnErrorNotACrash) {
  const std::string ten_k = std::string(10000, '(') + "1" + std::string(10000, ')');
  error_of(ten_k);  // over the length limit
  const std::string deep = std::string(4000, '(') + "1" + std::string(4000, ')');
  EXPECT_NE(error_of(deep).find("nested deeper"), std::string::npos);
  const std::string unclosed = std::string(9999, '(') + "1";
  error_of(unclosed);
  const std::string at_limit =
      std::string(kMaxExpressionDepth, '(') + "1" + std::string(kMaxExpressionDepth, ')');
  EXPECT_EQ(value_of(at_limit), 1);
  const std::string over =
      std::string(kMaxExpressionDepth + 1, '(') + "1" + std::string(kMaxExpressionDepth + 1, ')');
  EXPECT_NE(error_of(over).find("nested deeper"), std::string::npos);
}

TEST(Expression, LongSignChainsAreBounded) {
  EXPECT_NE(error_of(std::string(5000, '-') + "1").find("nested deeper"), std::string::npos);
  EXPECT_EQ(value_of(std::string(kMaxExpressionDepth, '-') + "1"), 1);  // even count of '-'
}

TEST(Expression, LengthLimit) {
  std::string sum = "1";
  while (static_cast<int64_t>(sum.size()) + 2 <= kMaxExpressionChars) sum += "+1";
  EXPECT_EQ(value_of(sum), static_cast<double>((sum.size() + 1) / 2));
  EXPECT_NE(error_of(sum + "+1").find("exceeds the limit"), std::string::npos);
  error_of(std::string(1 << 20, '1'));
}

TEST(Expression, HugeLiteralsAndOverflow) {
  EXPECT_EQ(value_of("999999999999999999"), 999999999999999999.0);  // 18 digits
  EXPECT_NE(error_of("1000000000000000000").find("longer than"), std::string::npos);
  std::string product = "999999999999999999";
  for (int i = 0; i < 20; ++i) product += "*999999999999999999";
  EXPECT_NE(error_of(product).find("not finite"), std::string::npos);
}

TEST(Expression, RandomGarbageNeverCrashes) {
  std::mt19937 rng(7);
  const std::string alphabet = "0123456789+-*/() .x\n";
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1), len(0, 40);
  int ok = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string s;
    for (size_t i = len(rng); i > 0; --i) s.push_back(alphabet[pick(rng)]);
    auto r = evaluate_expression(s);
    if (r.ok()) {
      ++ok;
      EXPECT_TRUE(std::isfinite(r->value)) << s;
    } else {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << s;
    }
  }
  EXPECT_GT(ok, 0);
}

// ---- random trees -------------------------------------------------------------------------------

struct Built {
  std::string text;
  double value;
  std::vector<int64_t> numbers;
};

// Fully parenthesised binary trees over small integers; the printed form must evaluate to the value
// computed on the tree. Divisions by zero are skipped by construction.
Built build(std::mt19937& rng, int depth) {
  std::uniform_int_distribution<int> leaf(1, 99), op(0, 3), coin(0, 2);
  if (depth == 0 || coin(rng) == 0) {
    const int v = leaf(rng);
    return {std::to_string(v), static_cast<double>(v), {v}};
  }
  Built a = build(rng, depth - 1), b = build(rng, depth - 1);
  const char ops[] = {'+', '-', '*', '/'};
  char o = ops[op(rng)];
  if (o == '/' && b.value == 0) o = '+';
  const double v = o == '+' ? a.value + b.value
                   : o == '-' ? a.value - b.value
                   : o == '*' ? a.value * b.value
                              : a.value / b.value;
  Built out{"(" + a.text + " " + o + " " + b.text + ")", v, a.numbers};
  out.numbers.insert(out.numbers.end(), b.numbers.begin(), b.numbers.end());
  return out;
}

TEST(Expression, RandomTreesEvaluateToTheirValue) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const Built b = build(rng, 5);
    auto r = evaluate_expression(b.text);
    ASSERT_TRUE(r.ok()) << b.text << ": " << r.status();
    EXPECT_EQ(r->value, b.value) << b.text;  // same operations in the same order: bit-identical
    EXPECT_EQ(r->numbers, b.numbers) << b.text;
  }
}

}  // namespace
}  // namespace strata
