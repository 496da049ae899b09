#include "rl/verifiers.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

#include "rl/expression.h"

namespace strata {
namespace {

constexpr double kCountdownCorrect = 1.0;
constexpr double kCountdownFormatOnly = 0.1;  // TinyZero's format_score
constexpr double kCountdownTolerance = 1e-5;
constexpr double kArithmeticWellFormedWrong = 0.1;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

int64_t count_occurrences(std::string_view text, std::string_view needle) {
  int64_t n = 0;
  for (size_t at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

// Strict decimal: [+-]? (digits ('.' digits*)? | '.' digits). Nothing else, no exponent, no commas.
std::optional<double> parse_decimal(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  size_t int_digits = 0, frac_digits = 0, i = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++int_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i, ++frac_digits;
  }
  if (i != s.size() || int_digits + frac_digits == 0) return std::nullopt;
  double v = 0.0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, std::chars_format::fixed);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return negative ? -v : v;
}

// ---- gsm8k --------------------------------------------------------------------------------------

// The number after the last "####": see reward_gsm8k in the header.
std::optional<double> last_hash_number(std::string_view text) {
  const size_t hashes = text.rfind("####");
  if (hashes == std::string_view::npos) return std::nullopt;
  size_t i = hashes + 4;
  while (i < text.size() && is_space(text[i])) ++i;
  std::string cleaned;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ',' || c == '$') continue;
    if (!(is_digit(c) || c == '.' || c == '+' || c == '-')) break;
    cleaned.push_back(c);
  }
  if (!cleaned.empty() && cleaned.back() == '.') cleaned.pop_back();  // "#### 72." ends a sentence
  return parse_decimal(cleaned);
}

// ---- boxed --------------------------------------------------------------------------------------

// Trim, strip '$' from both ends, trim again, collapse whitespace runs to one space.
std::string normalise_answer_text(std::string_view s) {
  s = trim(s);
  while (!s.empty() && s.front() == '$') s.remove_prefix(1);
  while (!s.empty() && s.back() == '$') s.remove_suffix(1);
  s = trim(s);
  std::string out;
  bool in_space = false;
  for (char c : s) {
    if (is_space(c)) {
      in_space = true;
      continue;
    }
    if (in_space) out.push_back(' ');
    in_space = false;
    out.push_back(c);
  }
  return out;
}

// parse_decimal, also accepting ',' thousands groups in the integer part ("1,234,567.5").
std::optional<double> parse_boxed_number(std::string_view s) {
  const size_t comma = s.find(',');
  if (comma == std::string_view::npos) return parse_decimal(s);
  size_t start = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  size_t int_end = s.find('.');
  if (int_end == std::string_view::npos) int_end = s.size();
  if (comma > int_end) return std::nullopt;
  const size_t lead = comma - start;  // first group: 1-3 digits, then ",ddd" groups
  if (lead < 1 || lead > 3) return std::nullopt;
  for (size_t g = comma; g < int_end; g += 4) {
    if (s[g] != ',' || g + 4 > int_end) return std::nullopt;
    for (size_t k = g + 1; k < g + 4; ++k) {
      if (!is_digit(s[k])) return std::nullopt;
    }
  }
  std::string plain(s);
  plain.erase(std::remove(plain.begin(), plain.end(), ','), plain.end());
  return parse_decimal(plain);
}

// The gold side of reward_boxed: its own last \boxed{} if it has one, else the whole text.
std::string_view boxed_gold(std::string_view gold) {
  if (auto inner = last_boxed(gold)) return *inner;
  return gold;
}

// ---- format -------------------------------------------------------------------------------------

// Whether text[0, end) matches ^<think>.*?</think>\s*<answer>.*?</answer>\z (DOTALL). The lazy
// quantifiers do not change whether a match exists, so: the text starts with <think>, ends with
// </answer>, and some </think> after the opening tag is followed by whitespace and an <answer>
// that finishes before the final </answer> begins.
bool matches_format(std::string_view text) {
  constexpr std::string_view kThinkOpen = "<think>", kThinkClose = "</think>";
  constexpr std::string_view kAnswerOpen = "<answer>", kAnswerClose = "</answer>";
  if (!text.starts_with(kThinkOpen) || !text.ends_with(kAnswerClose)) return false;
  const size_t final_close = text.size() - kAnswerClose.size();
  for (size_t p = text.find(kThinkClose, kThinkOpen.size()); p != std::string_view::npos;
       p = text.find(kThinkClose, p + 1)) {
    size_t q = p + kThinkClose.size();
    while (q < text.size() && is_space(text[q])) ++q;
    if (q + kAnswerOpen.size() > final_close) return false;  // later </think>s only start later
    if (text.substr(q, kAnswerOpen.size()) == kAnswerOpen) return true;
  }
  return false;
}

}  // namespace

std::optional<std::string_view> last_answer_tag(std::string_view completion) {
  const size_t close = completion.rfind("</answer>");
  if (close == std::string_view::npos) return std::nullopt;
  constexpr std::string_view kOpen = "<answer>";
  const size_t open = completion.substr(0, close).rfind(kOpen);
  if (open == std::string_view::npos) return std::nullopt;
  return trim(completion.substr(open + kOpen.size(), close - open - kOpen.size()));
}

double reward_countdown(std::string_view completion, const std::vector<int64_t>& numbers, int64_t target) {
  const auto answer = last_answer_tag(completion);
  if (!answer) return 0.0;
  const auto expr = evaluate_expression(*answer);
  if (!expr.ok()) return kCountdownFormatOnly;
  std::vector<int64_t> used = expr->numbers, given = numbers;
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  if (used != given) return kCountdownFormatOnly;
  if (!(std::fabs(expr->value - static_cast<double>(target)) < kCountdownTolerance)) return kCountdownFormatOnly;
  return kCountdownCorrect;
}

double reward_arithmetic(std::string_view completion, int64_t answer) {
  const auto text = last_answer_tag(completion);
  if (!text) return 0.0;
  std::string_view s = *text;
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || !std::all_of(s.begin(), s.end(), is_digit)) return 0.0;
  // Compare canonical decimal strings, so a 30-digit answer is simply wrong, never an overflow.
  while (s.size() > 1 && s.front() == '0') s.remove_prefix(1);
  if (s == "0") negative = false;
  const std::string want = std::to_string(answer);
  const std::string_view want_digits = std::string_view(want).substr(answer < 0 ? 1 : 0);
  const bool equal = negative == (answer < 0) && s == want_digits;
  return equal ? 1.0 : kArithmeticWellFormedWrong;
}

double reward_gsm8k(std::string_view completion, std::string_view gold) {
  const auto got = last_hash_number(completion);
  if (!got) return 0.0;
  // A bare gold number reads exactly as if it followed "####".
  const std::string gold_text = gold.find("####") != std::string_view::npos ? std::string(gold)
                                                                              : "####" + std::string(gold);
  const auto want = last_hash_number(gold_text);
  return want && *got == *want ? 1.0 : 0.0;
}

std::optional<std::string_view> last_boxed(std::string_view text) {
  constexpr std::string_view kOpen = "\\boxed{";
  const size_t open = text.rfind(kOpen);
  if (open == std::string_view::npos) return std::nullopt;
  const size_t begin = open + kOpen.size();
  int64_t depth = 1;
  for (size_t i = begin; i < text.size(); ++i) {
    if (text[i] == '{') {
      ++depth;
    } else if (text[i] == '}' && --depth == 0) {
      return text.substr(begin, i - begin);
    }
  }
  return std::nullopt;
}

double reward_boxed(std::string_view completion, std::string_view gold) {
  const auto boxed = last_boxed(completion);
  if (!boxed) return 0.0;
  const std::string got = normalise_answer_text(*boxed);
  const std::string want = normalise_answer_text(boxed_gold(gold));
  const auto got_num = parse_boxed_number(got), want_num = parse_boxed_number(want);
  if (got_num && want_num) return *got_num == *want_num ? 1.0 : 0.0;
  return got == want ? 1.0 : 0.0;
}

double reward_format(std::string_view completion) {
  if (matches_format(completion)) return 1.0;
  // '$' without MULTILINE also matches just before a final newline (Python re, PCRE).
  if (completion.ends_with('\n') && matches_format(completion.substr(0, completion.size() - 1))) return 1.0;
  return 0.0;
}

double reward_tag_count(std::string_view completion) {
  double score = 0.0;
  for (std::string_view tag : {"<think>", "</think>", "<answer>", "</answer>"}) {
    if (count_occurrences(completion, tag) == 1) score += 0.25;
  }
  return score;
}

double reward_overlong(int64_t length, int64_t max_len, int64_t buffer) {
  if (length > max_len) return -1.0;
  if (buffer <= 0) return 0.0;
  const int64_t expected = max_len - buffer;  // Lmax - Lc
  if (length <= expected) return 0.0;
  return static_cast<double>(expected - length) / static_cast<double>(buffer);
}

}  // namespace strata
