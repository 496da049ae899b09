#include "rl/expression.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace strata {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// One pass, no tokenizer: each parse_* reads from pos_ and leaves pos_ after what it consumed.
// Binary operator chains are loops (left-associative), so only '(' and unary signs recurse, and
// depth_ bounds that recursion.
class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  StatusOr<EvaluatedExpression> run() {
    skip_space();
    if (pos_ == text_.size()) return error("empty expression");
    EvaluatedExpression out;
    ASSIGN_OR_RETURN(out.value, parse_expr());
    skip_space();
    if (pos_ != text_.size()) {
      if (text_[pos_] == ')') return error("unbalanced ')'");
      return error(absl::StrCat("unexpected ", describe(pos_), " after a complete expression"));
    }
    out.numbers = std::move(numbers_);
    return out;
  }

 private:
  StatusOr<double> parse_expr() {
    ASSIGN_OR_RETURN(double acc, parse_term());
    for (;;) {
      skip_space();
      if (pos_ == text_.size() || (text_[pos_] != '+' && text_[pos_] != '-')) return acc;
      const char op = text_[pos_++];
      ASSIGN_OR_RETURN(double rhs, parse_term());
      acc = op == '+' ? acc + rhs : acc - rhs;
      RETURN_IF_ERROR(check_finite(acc));
    }
  }

  StatusOr<double> parse_term() {
    ASSIGN_OR_RETURN(double acc, parse_unary());
    for (;;) {
      skip_space();
      if (pos_ == text_.size() || (text_[pos_] != '*' && text_[pos_] != '/')) return acc;
      const size_t op_pos = pos_;
      const char op = text_[pos_++];
      ASSIGN_OR_RETURN(double rhs, parse_unary());
      if (op == '*') {
        acc *= rhs;
      } else {
        if (rhs == 0.0) return error_at(op_pos, "division by zero");
        acc /= rhs;
      }
      RETURN_IF_ERROR(check_finite(acc));
    }
  }

  StatusOr<double> parse_unary() {
    skip_space();
    if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) {
      const char sign = text_[pos_++];
      RETURN_IF_ERROR(enter());
      ASSIGN_OR_RETURN(double v, parse_unary());
      --depth_;
      return sign == '-' ? -v : v;
    }
    return parse_atom();
  }

  StatusOr<double> parse_atom() {
    skip_space();
    if (pos_ == text_.size()) return error("expected a number or '(' but the expression ended");
    const char c = text_[pos_];
    if (c == '(') {
      const size_t open = pos_++;
      RETURN_IF_ERROR(enter());
      ASSIGN_OR_RETURN(double v, parse_expr());
      --depth_;
      skip_space();
      if (pos_ == text_.size()) return error_at(open, "unbalanced '(' (never closed)");
      if (text_[pos_] != ')') return error(absl::StrCat("expected ')' but found ", describe(pos_)));
      ++pos_;
      return v;
    }
    if (is_digit(c)) return parse_number();
    return error(absl::StrCat("expected a number or '(' but found ", describe(pos_)));
  }

  StatusOr<double> parse_number() {
    const size_t start = pos_;
    while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    if (static_cast<int64_t>(pos_ - start) > kMaxLiteralDigits) {
      return error_at(start, absl::StrCat("number longer than ", kMaxLiteralDigits, " digits"));
    }
    int64_t n = 0;
    for (size_t i = start; i < pos_; ++i) n = n * 10 + (text_[i] - '0');
    numbers_.push_back(n);
    return static_cast<double>(n);
  }

  Status enter() {
    if (++depth_ > kMaxExpressionDepth) {
      return error(absl::StrCat("nested deeper than ", kMaxExpressionDepth, " parentheses or signs"));
    }
    return OkStatus();
  }

  Status check_finite(double v) const {
    if (!std::isfinite(v)) return error("intermediate value is not finite");
    return OkStatus();
  }

  void skip_space() {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }

  std::string describe(size_t at) const {
    const auto c = static_cast<unsigned char>(text_[at]);
    if (c >= 0x20 && c < 0x7f) return absl::StrCat("'", std::string(1, static_cast<char>(c)), "'");
    return absl::StrCat("byte 0x", absl::Hex(c, absl::kZeroPad2));
  }

  Status error(std::string_view what) const { return error_at(pos_, what); }
  Status error_at(size_t at, std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("column ", at + 1, ": ", std::string(what)));
  }

  std::string_view text_;
  size_t pos_ = 0;
  int64_t depth_ = 0;
  std::vector<int64_t> numbers_;
};

}  // namespace

StatusOr<EvaluatedExpression> evaluate_expression(std::string_view text) {
  if (static_cast<int64_t>(text.size()) > kMaxExpressionChars) {
    return absl::InvalidArgumentError(
        absl::StrCat("expression of ", text.size(), " characters exceeds the limit of ", kMaxExpressionChars));
  }
  return Parser(text).run();
}

}  // namespace strata
