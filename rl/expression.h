// A safe parser and evaluator for countdown answers (REFERENCE.md section 6): arithmetic over
// non-negative integer literals with + - * / and parentheses, real (double) division, never a
// shell or an eval. It also returns the integer literals the expression uses, so the countdown
// verifier can check them against the given numbers as a multiset.
//
// Grammar (ASCII whitespace may separate tokens; no other character is accepted, not even '.'):
//   expr   := term (('+' | '-') term)*
//   term   := unary (('*' | '/') unary)*
//   unary  := ('+' | '-') unary | atom          -- unary signs, as Python's eval allows
//   atom   := number | '(' expr ')'
//   number := digit+                             -- decimal; "07" reads as 7
// '**' and '//' are errors (only the four operators exist). Hostile input is bounded: at most
// kMaxExpressionChars characters, kMaxExpressionDepth nested parentheses/unary signs, and
// kMaxLiteralDigits digits per literal, so nothing can exhaust the stack or overflow an int64.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace strata {

inline constexpr int64_t kMaxExpressionChars = 10000;
inline constexpr int64_t kMaxExpressionDepth = 256;
inline constexpr int64_t kMaxLiteralDigits = 18;

struct EvaluatedExpression {
  double value = 0.0;
  std::vector<int64_t> numbers;  // the integer literals in order of appearance
};

// Parses and evaluates `text`. InvalidArgument (with the 1-based column) for: empty input, a bad
// character, an unbalanced parenthesis, a missing operand, trailing junk, a literal longer than
// kMaxLiteralDigits, input longer than kMaxExpressionChars or nested deeper than
// kMaxExpressionDepth, division by zero, and any non-finite intermediate value.
StatusOr<EvaluatedExpression> evaluate_expression(std::string_view text);

}  // namespace strata
