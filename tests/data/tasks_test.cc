// Synthetic tasks: examples are a pure function of (kind, seed, index, split); train and eval
// never share a problem; every arithmetic trace is right column by column and ends in the right
// answer; every countdown solution uses exactly the given numbers and reaches the target.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/tasks.h"

namespace strata {
namespace {

// A tiny evaluator for + - * / ( ) over integers with real division, collecting the numbers.
class ExprEval {
 public:
  explicit ExprEval(std::string s) : s_(std::move(s)) {}
  bool run(double* value, std::vector<int>* numbers) {
    numbers_ = numbers;
    *value = sum();
    return ok_ && pos_ == s_.size();
  }

 private:
  double sum() {
    double v = product();
    while (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) {
      char op = s_[pos_++];
      double r = product();
      v = op == '+' ? v + r : v - r;
    }
    return v;
  }
  double product() {
    double v = atom();
    while (pos_ < s_.size() && (s_[pos_] == '*' || s_[pos_] == '/')) {
      char op = s_[pos_++];
      double r = atom();
      if (op == '/' && r == 0) ok_ = false;
      v = op == '*' ? v * r : (r == 0 ? 0 : v / r);
    }
    return v;
  }
  double atom() {
    if (pos_ < s_.size() && s_[pos_] == '(') {
      ++pos_;
      double v = sum();
      if (pos_ >= s_.size() || s_[pos_] != ')') ok_ = false;
      ++pos_;
      return v;
    }
    size_t start = pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    if (start == pos_) {
      ok_ = false;
      return 0;
    }
    int n = std::stoi(s_.substr(start, pos_ - start));
    numbers_->push_back(n);
    return n;
  }
  std::string s_;
  size_t pos_ = 0;
  bool ok_ = true;
  std::vector<int>* numbers_ = nullptr;
};

const std::regex kCompletion(R"(^<think>(.*)</think> <answer>(.*)</answer>$)");

struct Arith {
  int a, b;
  char op;
};

Arith parse_arithmetic_prompt(const std::string& prompt) {
  static const std::regex re(R"(^Compute (\d{3})([+-])(\d{3})$)");
  std::smatch m;
  EXPECT_TRUE(std::regex_match(prompt, m, re)) << prompt;
  if (m.empty()) return {0, 0, '+'};
  return {std::stoi(m[1]), std::stoi(m[3]), m[2].str()[0]};
}

std::string canonical_of(TaskKind kind, const Example& ex) {
  if (kind == TaskKind::kArithmetic) {
    Arith p = parse_arithmetic_prompt(ex.prompt);
    return arithmetic_canonical(p.a, p.op, p.b);
  }
  auto j = nlohmann::json::parse(ex.answer);
  return countdown_canonical(j["numbers"].get<std::vector<int>>(), j["target"].get<int>());
}

TEST(Tasks, DeterministicInSeedIndexAndSplit) {
  for (TaskKind kind : {TaskKind::kArithmetic, TaskKind::kCountdown}) {
    for (int64_t i : {0, 1, 77, 123456}) {
      Example a = make_task_example(kind, 7, i, Split::kTrain);
      Example b = make_task_example(kind, 7, i, Split::kTrain);
      EXPECT_EQ(a.prompt, b.prompt);
      EXPECT_EQ(a.completion, b.completion);
      EXPECT_EQ(a.answer, b.answer);
    }
    int same_seed_differs = 0, other_seed_differs = 0;
    for (int64_t i = 0; i < 50; ++i) {
      Example a = make_task_example(kind, 7, i, Split::kTrain);
      same_seed_differs += a.prompt != make_task_example(kind, 7, i + 1, Split::kTrain).prompt;
      other_seed_differs += a.prompt != make_task_example(kind, 8, i, Split::kTrain).prompt;
    }
    EXPECT_GE(same_seed_differs, 48);
    EXPECT_GE(other_seed_differs, 48);
  }
}

TEST(Tasks, TrainAndEvalNeverShareAProblem) {
  constexpr int kN = 20000;
  for (TaskKind kind : {TaskKind::kArithmetic, TaskKind::kCountdown}) {
    std::set<std::string> train, eval;
    for (int i = 0; i < kN; ++i) {
      std::string t = canonical_of(kind, make_task_example(kind, 1, i, Split::kTrain));
      std::string e = canonical_of(kind, make_task_example(kind, 2, i, Split::kEval));  // another seed: still disjoint
      EXPECT_EQ(task_split_of(t), Split::kTrain) << t;
      EXPECT_EQ(task_split_of(e), Split::kEval) << e;
      train.insert(t);
      eval.insert(e);
    }
    std::vector<std::string> common;
    std::set_intersection(train.begin(), train.end(), eval.begin(), eval.end(), std::back_inserter(common));
    EXPECT_TRUE(common.empty()) << task_name(kind) << ": " << common.size() << " shared, e.g. " << common[0];
    // Enough variety that a model cannot memorise its way through.
    EXPECT_GT(train.size(), kN * 9 / 10) << task_name(kind);
    EXPECT_GT(eval.size(), kN * 8 / 10) << task_name(kind);
  }
}

TEST(Tasks, ArithmeticTraceFormat) {
  EXPECT_EQ(arithmetic_completion(347, '+', 589),
            "<think>7+9=16 c1, 4+8+1=13 c1, 3+5+1=9 c0, so 936</think> <answer>936</answer>");
  EXPECT_EQ(arithmetic_completion(999, '+', 999),
            "<think>9+9=18 c1, 9+9+1=19 c1, 9+9+1=19 c1, so 1998</think> <answer>1998</answer>");
  EXPECT_EQ(arithmetic_completion(512, '-', 347),
            "<think>512>=347, 12-7-0=5 b1, 11-4-1=6 b1, 5-3-1=1 b0, so 165</think> <answer>165</answer>");
  EXPECT_EQ(arithmetic_completion(347, '-', 589),
            "<think>347<589 so -(589-347), 9-7-0=2 b0, 8-4-0=4 b0, 5-3-0=2 b0, so -242</think> <answer>-242</answer>");
  EXPECT_EQ(arithmetic_completion(589, '-', 582),
            "<think>589>=582, 9-2-0=7 b0, 8-8-0=0 b0, 5-5-0=0 b0, so 7</think> <answer>7</answer>");
  EXPECT_EQ(arithmetic_completion(400, '-', 400),
            "<think>400>=400, 0-0-0=0 b0, 0-0-0=0 b0, 4-4-0=0 b0, so 0</think> <answer>0</answer>");
}

// Every column of every trace is true arithmetic, the carries chain, and the answer is right.
TEST(Tasks, EveryArithmeticTraceIsCorrect) {
  static const std::regex add_col(R"(^(\d)\+(\d)(?:\+(\d))?=(\d+) c(\d)$)");
  static const std::regex sub_col(R"(^(\d+)-(\d)-(\d)=(\d) b(\d)$)");
  std::map<char, int> ops;
  size_t longest = 0;
  for (Split split : {Split::kTrain, Split::kEval}) {
    for (int i = 0; i < 5000; ++i) {
      Example ex = make_task_example(TaskKind::kArithmetic, 3, i, split);
      Arith p = parse_arithmetic_prompt(ex.prompt);
      ++ops[p.op];
      EXPECT_TRUE(p.a >= 100 && p.a <= 999 && p.b >= 100 && p.b <= 999) << ex.prompt;
      const int want = p.op == '+' ? p.a + p.b : p.a - p.b;
      EXPECT_EQ(nlohmann::json::parse(ex.answer), (nlohmann::json{{"result", want}})) << ex.answer;
      longest = std::max(longest, ex.completion.size());
      std::smatch m;
      ASSERT_TRUE(std::regex_match(ex.completion, m, kCompletion)) << ex.completion;
      EXPECT_EQ(m[2].str(), std::to_string(want));
      std::string think = m[1];
      EXPECT_EQ(think.substr(think.rfind(", so ") + 5), std::to_string(want)) << think;
      // Columns: the pieces between the optional comparison and ", so".
      std::vector<std::string> parts;
      for (size_t s = 0, e; s < think.size(); s = e + 2) {
        e = think.find(", ", s);
        if (e == std::string::npos) e = think.size();
        parts.push_back(think.substr(s, e - s));
      }
      int top = p.a, bottom = p.b;
      size_t first_col = 0;
      if (p.op == '-') {
        first_col = 1;
        if (p.a >= p.b) {
          EXPECT_EQ(parts[0], std::to_string(p.a) + ">=" + std::to_string(p.b));
        } else {
          EXPECT_EQ(parts[0], std::to_string(p.a) + "<" + std::to_string(p.b) + " so -(" + std::to_string(p.b) + "-" +
                                  std::to_string(p.a) + ")");
          std::swap(top, bottom);
        }
      }
      ASSERT_EQ(parts.size(), first_col + 4) << think;
      int carry = 0, value = 0, scale = 1;
      for (int c = 0; c < 3; ++c, scale *= 10) {
        const std::string& col = parts[first_col + c];
        const int dt = top / scale % 10, db = bottom / scale % 10;
        std::smatch cm;
        if (p.op == '+') {
          ASSERT_TRUE(std::regex_match(col, cm, add_col)) << col;
          EXPECT_EQ(std::stoi(cm[1]), dt);
          EXPECT_EQ(std::stoi(cm[2]), db);
          EXPECT_EQ(cm[3].matched ? std::stoi(cm[3]) : 0, carry) << col;
          EXPECT_EQ(c == 0, !cm[3].matched) << col;
          EXPECT_EQ(std::stoi(cm[4]), dt + db + carry) << col;
          carry = std::stoi(cm[5]);
          EXPECT_EQ(carry, (dt + db + std::stoi(cm[3].matched ? cm[3].str() : "0")) / 10) << col;
          value += std::stoi(cm[4]) % 10 * scale;
        } else {
          ASSERT_TRUE(std::regex_match(col, cm, sub_col)) << col;
          const int borrow_out = std::stoi(cm[5]);
          EXPECT_EQ(std::stoi(cm[1]), dt + 10 * borrow_out) << col;
          EXPECT_EQ(std::stoi(cm[2]), db);
          EXPECT_EQ(std::stoi(cm[3]), carry) << col;
          EXPECT_EQ(std::stoi(cm[4]), std::stoi(cm[1]) - db - carry) << col;
          EXPECT_GE(std::stoi(cm[4]), 0) << col;
          carry = borrow_out;
          value += std::stoi(cm[4]) * scale;
        }
      }
      if (p.op == '+') {
        value += carry * 1000;
      } else {
        EXPECT_EQ(carry, 0);
      }
      EXPECT_EQ(p.a >= p.b || p.op == '+' ? value : -value, want) << think;
    }
  }
  EXPECT_GT(ops['+'], 4000);
  EXPECT_GT(ops['-'], 4000);
  EXPECT_LE(longest, 110u) << "traces should stay short for the tiny models";
}

TEST(Tasks, EveryCountdownSolutionUsesTheNumbersAndReachesTheTarget) {
  static const std::regex prompt_re(
      R"(^Using the numbers \[([\d, ]+)\], create an equation that equals (\d+)\. You can use basic arithmetic operations \(\+, -, \*, /\) and each number can only be used once$)");
  static const std::regex step_re(R"(^(\d+)([-+*/])(\d+)=(\d+)$)");
  std::map<int, int> sizes;
  std::map<char, int> ops;
  for (Split split : {Split::kTrain, Split::kEval}) {
    for (int i = 0; i < 10000; ++i) {
      Example ex = make_task_example(TaskKind::kCountdown, 5, i, split);
      auto j = nlohmann::json::parse(ex.answer);
      std::vector<int> numbers = j["numbers"].get<std::vector<int>>();
      const int target = j["target"].get<int>();
      ++sizes[static_cast<int>(numbers.size())];
      EXPECT_TRUE(numbers.size() == 3 || numbers.size() == 4);
      for (int n : numbers) EXPECT_TRUE(n >= 1 && n <= 99) << n;
      EXPECT_TRUE(target >= 1 && target <= 999) << target;
      std::smatch pm;
      ASSERT_TRUE(std::regex_match(ex.prompt, pm, prompt_re)) << ex.prompt;
      std::string listed;
      for (size_t k = 0; k < numbers.size(); ++k) listed += (k ? ", " : "") + std::to_string(numbers[k]);
      EXPECT_EQ(pm[1].str(), listed);
      EXPECT_EQ(std::stoi(pm[2]), target);

      std::smatch m;
      ASSERT_TRUE(std::regex_match(ex.completion, m, kCompletion)) << ex.completion;
      double value = 0;
      std::vector<int> used;
      ASSERT_TRUE(ExprEval(m[2]).run(&value, &used)) << m[2];
      EXPECT_NEAR(value, target, 1e-9) << ex.completion;
      std::vector<int> want = numbers;
      std::sort(want.begin(), want.end());
      std::sort(used.begin(), used.end());
      EXPECT_EQ(used, want) << ex.completion;
      // Steps: each one true, n - 1 of them, the last one reaching the target.
      std::string think = m[1];
      int steps = 0, last = -1;
      for (size_t s = 0, e; s < think.size(); s = e + 2) {
        e = think.find(", ", s);
        if (e == std::string::npos) e = think.size();
        std::string step = think.substr(s, e - s);
        std::smatch sm;
        ASSERT_TRUE(std::regex_match(step, sm, step_re)) << step;
        const int x = std::stoi(sm[1]), y = std::stoi(sm[3]), r = std::stoi(sm[4]);
        const char op = sm[2].str()[0];
        ++ops[op];
        EXPECT_EQ(op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y, r) << step;
        if (op == '/') {
          EXPECT_EQ(x % y, 0) << step;
        }
        EXPECT_GT(r, 0) << step;
        ++steps;
        last = r;
      }
      EXPECT_EQ(steps, static_cast<int>(numbers.size()) - 1) << think;
      EXPECT_EQ(last, target) << think;
    }
  }
  EXPECT_GT(sizes[3], 5000);
  EXPECT_GT(sizes[4], 5000);
  for (char op : {'+', '-', '*', '/'}) EXPECT_GT(ops[op], 1000) << op;
}

TEST(Tasks, CountdownExample) {
  Example ex = make_task_example(TaskKind::kCountdown, 1234, 0, Split::kTrain);
  SCOPED_TRACE(ex.prompt + "\n" + ex.completion + "\n" + ex.answer);
  EXPECT_EQ(ex.answer.find("{\"numbers\":["), 0u);
  EXPECT_EQ(ex.completion.rfind("<think>", 0), 0u);
}

TEST(Tasks, CanonicalTextIgnoresNumberOrder) {
  EXPECT_EQ(countdown_canonical({25, 4, 3}, 87), "3,4,25=87");
  EXPECT_EQ(countdown_canonical({3, 25, 4}, 87), countdown_canonical({25, 4, 3}, 87));
  EXPECT_EQ(arithmetic_canonical(347, '+', 589), "347+589");
}

TEST(Tasks, R1TemplateIsTheReferenceText) {
  EXPECT_EQ(apply_r1_template("Compute 1+2"),
            "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
            "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
            "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
            "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User: "
            "Compute 1+2. Assistant:");
}

TEST(Tasks, ParseNames) {
  EXPECT_EQ(*parse_task_kind("countdown"), TaskKind::kCountdown);
  EXPECT_EQ(*parse_task_kind("arithmetic"), TaskKind::kArithmetic);
  EXPECT_EQ(parse_task_kind("gsm8k").status().message(), "unknown task \"gsm8k\" (expected countdown | arithmetic)");
  EXPECT_EQ(*parse_split("eval"), Split::kEval);
  EXPECT_EQ(parse_split("test").status().message(), "unknown split \"test\" (expected train | eval)");
}

}  // namespace
}  // namespace strata
