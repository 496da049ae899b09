// Verifiable rewards (REFERENCE.md section 6): pure functions from a completion (and the task's
// gold answer, already parsed by the caller; rl/ reads no JSON) to a score. Weighting and
// composition live in rl/rewards.h; the `command` reward (an external program) in rl/command_reward.h.
//
// Shared conventions:
//   - "The last <answer>" is the text between the last "</answer>" and the last "<answer>" before
//     it, trimmed of ASCII whitespace; tags inside <think> count like any other (the format reward
//     is what scores structure). No closed pair -> no answer.
//   - Whitespace means ASCII whitespace (space, \t, \n, \r, \f, \v); any other byte, including
//     UTF-8 such as U+2212 MINUS SIGN, is an ordinary character (so a bad one).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

// Text of the last <answer>...</answer>, trimmed; nullopt when there is none.
std::optional<std::string_view> last_answer_tag(std::string_view completion);

// TinyZero countdown. 0 without an answer tag; 1.0 when the last answer is an expression (see
// rl/expression.h) using exactly `numbers` as a multiset and evaluating to within 1e-5 of `target`;
// 0.1 for any other answer (wrong value, other numbers, bad characters, division by zero, junk).
double reward_countdown(std::string_view completion, const std::vector<int64_t>& numbers, int64_t target);

// Integer answer. The last <answer> is well-formed when, trimmed, it is an optional '+' or '-'
// followed by one or more ASCII digits and nothing else: "-12", "+5", " 7 ", "007" (= 7) are
// well-formed; "- 5", "5.0", "1,000", "five", "" are not. Any number of digits is compared exactly
// (no int64 overflow). 1 when equal to `answer`, 0.1 when well-formed but wrong, else 0.
double reward_arithmetic(std::string_view completion, int64_t answer);

// GSM8K. Takes the number after the last "####" in the completion (whitespace may follow the
// hashes; the number is the run of digits, ',', '$', '.', '+', '-' that comes next, with ',' and '$'
// removed, so "#### $1,234." reads 1234). `gold` is either a bare number in the same notation or a
// full GSM8K solution ending in "#### N". 1 when both parse and are equal as numbers, else 0.
double reward_gsm8k(std::string_view completion, std::string_view gold);

// Contents of the last \boxed{...} with balanced braces; nullopt when there is no "\boxed{" or the
// last one never closes.
std::optional<std::string_view> last_boxed(std::string_view text);

// MATH-style \boxed{} answers. `gold` is a bare answer or text holding its own \boxed{}. Both sides
// are normalised (trim, collapse whitespace runs to one space, strip surrounding '$', trim again);
// if both then parse as decimal numbers (optional sign, digits with ',' thousands groups, optional
// fraction) they are compared as numbers, else as text. No LaTeX equivalence: \frac{1}{2} is not
// 0.5 (use the `command` reward with math-verify for that). 1 when equal, else 0.
double reward_boxed(std::string_view completion, std::string_view gold);

// 1 when the whole completion matches ^<think>.*?</think>\s*<answer>.*?</answer>$ with '.' matching
// newlines, else 0. As in Python's re and PCRE, '$' also matches before one final "\n".
double reward_format(std::string_view completion);

// +0.25 for each of <think>, </think>, <answer>, </answer> that occurs exactly once.
double reward_tag_count(std::string_view completion);

// DAPO soft overlong punishment for a completion of `length` tokens, with Lmax = `max_len` and
// Lc = `buffer`: 0 if L <= Lmax - Lc; ((Lmax - Lc) - L) / Lc within the last Lc tokens; -1 beyond
// Lmax. With buffer <= 0 (off) it is 0 up to Lmax and -1 beyond.
double reward_overlong(int64_t length, int64_t max_len, int64_t buffer);

}  // namespace strata
