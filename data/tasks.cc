#include "data/tasks.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "core/rng.h"
#include "nlohmann/json.hpp"

namespace strata {
namespace {

// Random words of example `index` are words [index * kWordsPerIndex, +kWordsPerIndex) of the
// stream "data/task/<kind>/<split>"; attempt k of the split rejection sampling uses the slice
// [k * kWordsPerAttempt, +kWordsPerAttempt) of those. Changing these changes every dataset.
constexpr uint64_t kWordsPerAttempt = 32;
constexpr uint64_t kMaxAttempts = 1024;
constexpr uint64_t kWordsPerIndex = kWordsPerAttempt * kMaxAttempts;

// Countdown limits: intermediate results stay in [1, kMaxIntermediate]; the target in [1, 999].
constexpr int kMaxIntermediate = 9999;
constexpr int kMaxTarget = 999;

class Words {
 public:
  Words(const RngStream& rng, uint64_t first) : rng_(rng), next_(first) {}
  uint32_t next() { return rng_.u32(next_++); }
  // Uniform in [0, n) (multiply-shift; the bias is below 2^-24 for the n used here).
  int below(int n) { return static_cast<int>((static_cast<uint64_t>(next()) * static_cast<uint64_t>(n)) >> 32); }

 private:
  const RngStream& rng_;
  uint64_t next_;
};

RngStream task_stream(TaskKind kind, uint64_t seed, Split split) {
  return RngStream(seed, absl::StrCat("data/task/", task_name(kind), "/", split_name(split)));
}

std::string think_answer(const std::string& think, const std::string& answer) {
  return absl::StrCat("<think>", think, "</think> <answer>", answer, "</answer>");
}

// Digits of a 3-digit number, units first.
std::array<int, 3> digits_of(int v) { return {v % 10, v / 10 % 10, v / 100}; }

// ---- arithmetic -------------------------------------------------------------------------------

std::string addition_think(int a, int b) {
  auto da = digits_of(a), db = digits_of(b);
  std::string s;
  int carry = 0;
  for (int i = 0; i < 3; ++i) {
    int sum = da[i] + db[i] + carry;
    absl::StrAppend(&s, da[i], "+", db[i]);
    if (i > 0) absl::StrAppend(&s, "+", carry);
    carry = sum / 10;
    absl::StrAppend(&s, "=", sum, " c", carry, ", ");
  }
  absl::StrAppend(&s, "so ", a + b);
  return s;
}

// Columns of top - bottom with top >= bottom.
std::string subtraction_columns(int top, int bottom) {
  auto dt = digits_of(top), db = digits_of(bottom);
  std::string s;
  int borrow = 0;
  for (int i = 0; i < 3; ++i) {
    int diff = dt[i] - db[i] - borrow;
    int borrow_out = diff < 0 ? 1 : 0;
    absl::StrAppend(&s, dt[i] + 10 * borrow_out, "-", db[i], "-", borrow, "=", diff + 10 * borrow_out, " b",
                    borrow_out, ", ");
    borrow = borrow_out;
  }
  CHECK(borrow == 0) << top << " - " << bottom;
  return s;
}

Example make_arithmetic(uint64_t seed, int64_t index, Split split) {
  RngStream rng = task_stream(TaskKind::kArithmetic, seed, split);
  for (uint64_t attempt = 0; attempt < kMaxAttempts; ++attempt) {
    Words w(rng, static_cast<uint64_t>(index) * kWordsPerIndex + attempt * kWordsPerAttempt);
    int a = 100 + w.below(900);
    int b = 100 + w.below(900);
    char op = (w.next() & 1) ? '-' : '+';
    if (task_split_of(arithmetic_canonical(a, op, b)) != split) continue;
    Example ex;
    ex.prompt = absl::StrCat("Compute ", a, std::string(1, op), b);
    ex.completion = arithmetic_completion(a, op, b);
    ex.answer = nlohmann::ordered_json{{"result", op == '+' ? a + b : a - b}}.dump();
    return ex;
  }
  CHECK(false) << "no arithmetic problem of the requested split in " << kMaxAttempts << " attempts";
  return {};
}

// ---- countdown --------------------------------------------------------------------------------

struct Node {
  int value;
  std::string expr;
  int prec;  // 3 number, 2 * and /, 1 + and -
};

std::string operand(const Node& child, int parent_prec, bool right, char parent_op) {
  bool paren = child.prec < parent_prec ||
               (right && child.prec == parent_prec && (parent_op == '-' || parent_op == '/'));
  return paren ? absl::StrCat("(", child.expr, ")") : child.expr;
}

Node combine(const Node& l, char op, const Node& r) {
  int prec = (op == '+' || op == '-') ? 1 : 2;
  int v = op == '+' ? l.value + r.value : op == '-' ? l.value - r.value : op == '*' ? l.value * r.value : l.value / r.value;
  return {v, absl::StrCat(operand(l, prec, false, op), std::string(1, op), operand(r, prec, true, op)), prec};
}

Example make_countdown(uint64_t seed, int64_t index, Split split) {
  RngStream rng = task_stream(TaskKind::kCountdown, seed, split);
  for (uint64_t attempt = 0; attempt < kMaxAttempts; ++attempt) {
    Words w(rng, static_cast<uint64_t>(index) * kWordsPerIndex + attempt * kWordsPerAttempt);
    int n = 3 + static_cast<int>(w.next() & 1);
    std::vector<int> numbers;
    std::vector<Node> pool;
    for (int i = 0; i < n; ++i) {
      numbers.push_back(1 + w.below(99));
      pool.push_back({numbers.back(), std::to_string(numbers.back()), 3});
    }
    // Combine two random pool entries with a random op whose result is a positive integer in
    // range ('-' and '/' take the larger first; '/' only when exact and not by 1).
    std::vector<std::string> steps;
    bool ok = true;
    while (pool.size() > 1) {
      int i = w.below(static_cast<int>(pool.size()));
      int j = w.below(static_cast<int>(pool.size()) - 1);
      if (j >= i) ++j;
      Node x = pool[i], y = pool[j];
      std::vector<char> ops = {'+'};
      if (x.value != y.value) ops.push_back('-');
      if (static_cast<int64_t>(x.value) * y.value <= kMaxIntermediate) ops.push_back('*');
      int hi = std::max(x.value, y.value), lo = std::min(x.value, y.value);
      if (lo > 1 && hi % lo == 0) ops.push_back('/');
      char op = ops[w.below(static_cast<int>(ops.size()))];
      if ((op == '-' || op == '/') && x.value < y.value) std::swap(x, y);
      Node z = combine(x, op, y);
      if (z.value > kMaxIntermediate) { ok = false; break; }
      steps.push_back(absl::StrCat(x.value, std::string(1, op), y.value, "=", z.value));
      pool.erase(pool.begin() + std::max(i, j));
      pool.erase(pool.begin() + std::min(i, j));
      pool.push_back(std::move(z));
    }
    int target = pool[0].value;
    if (!ok || target < 1 || target > kMaxTarget) continue;
    if (task_split_of(countdown_canonical(numbers, target)) != split) continue;
    Example ex;
    ex.prompt = absl::StrCat("Using the numbers [", absl::StrJoin(numbers, ", "),
                             "], create an equation that equals ", target,
                             ". You can use basic arithmetic operations (+, -, *, /) and each number can only be "
                             "used once");
    ex.completion = think_answer(absl::StrJoin(steps, ", "), pool[0].expr);
    ex.answer = nlohmann::ordered_json{{"numbers", numbers}, {"target", target}}.dump();
    return ex;
  }
  CHECK(false) << "no countdown problem of the requested split in " << kMaxAttempts << " attempts";
  return {};
}

}  // namespace

std::string arithmetic_completion(int a, char op, int b) {
  CHECK(a >= 100 && a <= 999 && b >= 100 && b <= 999 && (op == '+' || op == '-')) << a << op << b;
  if (op == '+') return think_answer(addition_think(a, b), std::to_string(a + b));
  std::string think = a >= b ? absl::StrCat(a, ">=", b, ", ", subtraction_columns(a, b))
                             : absl::StrCat(a, "<", b, " so -(", b, "-", a, "), ", subtraction_columns(b, a));
  absl::StrAppend(&think, "so ", a - b);
  return think_answer(think, std::to_string(a - b));
}

namespace {

// Columns of a + b, or of top - bottom (top >= bottom), without carries or borrows; returns the
// trace text and sets *value to what the forgetful teacher then answers.
std::string forgetful_columns(int a, char op, int b, int* value) {
  auto da = digits_of(a), db = digits_of(b);
  std::string s;
  int v = 0, scale = 1, out = 0;
  for (int i = 0; i < 3; ++i, scale *= 10) {
    if (op == '+') {
      const int sum = da[i] + db[i];
      absl::StrAppend(&s, da[i], "+", db[i]);
      if (i > 0) absl::StrAppend(&s, "+0");
      out = sum / 10;
      absl::StrAppend(&s, "=", sum, " c", out, ", ");
      v += (sum % 10) * scale;
    } else {
      const int diff = da[i] - db[i];
      out = diff < 0 ? 1 : 0;
      absl::StrAppend(&s, da[i] + 10 * out, "-", db[i], "-0=", diff + 10 * out, " b", out, ", ");
      v += (diff + 10 * out) * scale;
    }
  }
  if (op == '+') v += out * 1000;  // the top column's carry still leads the number
  *value = v;
  return s;
}

}  // namespace

std::string arithmetic_completion_forgetful(int a, char op, int b) {
  CHECK(a >= 100 && a <= 999 && b >= 100 && b <= 999 && (op == '+' || op == '-')) << a << op << b;
  int v = 0;
  if (op == '+') {
    std::string think = forgetful_columns(a, '+', b, &v);
    absl::StrAppend(&think, "so ", v);
    return think_answer(think, std::to_string(v));
  }
  const bool neg = a < b;
  std::string think = neg ? absl::StrCat(a, "<", b, " so -(", b, "-", a, "), ", forgetful_columns(b, '-', a, &v))
                          : absl::StrCat(a, ">=", b, ", ", forgetful_columns(a, '-', b, &v));
  if (neg) v = -v;
  absl::StrAppend(&think, "so ", v);
  return think_answer(think, std::to_string(v));
}

Example make_arithmetic_example(uint64_t seed, int64_t index, Split split, double teacher_error_rate) {
  Example ex = make_task_example(TaskKind::kArithmetic, seed, index, split);
  if (teacher_error_rate <= 0) return ex;
  // The teacher's choice is its own stream, so the problems are those of the exact set.
  const double u = RngStream(seed, "data/task/arithmetic/teacher").uniform(static_cast<uint64_t>(index));
  if (u >= teacher_error_rate) return ex;
  int a = 0, b = 0;
  char op = 0;
  CHECK(std::sscanf(ex.prompt.c_str(), "Compute %d%c%d", &a, &op, &b) == 3) << "arithmetic prompt " << ex.prompt;
  ex.completion = arithmetic_completion_forgetful(a, op, b);
  return ex;
}

std::string arithmetic_canonical(int a, char op, int b) { return absl::StrCat(a, std::string(1, op), b); }

std::string countdown_canonical(std::vector<int> numbers, int target) {
  std::sort(numbers.begin(), numbers.end());
  return absl::StrCat(absl::StrJoin(numbers, ","), "=", target);
}

Split task_split_of(std::string_view canonical) {
  return stream_id(canonical) % 10 == 0 ? Split::kEval : Split::kTrain;
}

Example make_task_example(TaskKind kind, uint64_t seed, int64_t index, Split split) {
  CHECK(index >= 0 && static_cast<uint64_t>(index) < (uint64_t{1} << 48)) << "task example index " << index;
  return kind == TaskKind::kArithmetic ? make_arithmetic(seed, index, split) : make_countdown(seed, index, split);
}

std::string apply_r1_template(const std::string& prompt) {
  return absl::StrCat(
      "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
      "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
      "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
      "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
      "User: ",
      prompt, ". Assistant:");
}

const char* task_name(TaskKind kind) { return kind == TaskKind::kArithmetic ? "arithmetic" : "countdown"; }

StatusOr<TaskKind> parse_task_kind(std::string_view name) {
  if (name == "countdown") return TaskKind::kCountdown;
  if (name == "arithmetic") return TaskKind::kArithmetic;
  return absl::InvalidArgumentError(absl::StrCat("unknown task \"", std::string(name), "\" (expected countdown | arithmetic)"));
}

const char* split_name(Split split) { return split == Split::kEval ? "eval" : "train"; }

StatusOr<Split> parse_split(std::string_view name) {
  if (name == "train") return Split::kTrain;
  if (name == "eval") return Split::kEval;
  return absl::InvalidArgumentError(absl::StrCat("unknown split \"", std::string(name), "\" (expected train | eval)"));
}

}  // namespace strata
