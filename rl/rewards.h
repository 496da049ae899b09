// Reward composition (REFERENCE.md section 6, "rewards combine as a weighted sum named in the
// config"): a RewardSpec built from GrpoConfig.rewards (name -> weight) scores one completion as
// sum_r weight_r * reward_r and keeps every unweighted component for logging. The verifiers
// themselves are the pure functions of rl/verifiers.h; the gold answer arrives already parsed
// (TaskAnswer), since rl/ reads no JSON, and also as text for the `command` reward
// (rl/command_reward.h), which sends it to the user's program as is.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "rl/config.h"

namespace strata {

enum class AnswerKind { kNone, kCountdown, kArithmetic, kGsm8k, kBoxed };
std::string_view answer_kind_name(AnswerKind kind);

// The gold answer of one task, as the caller parsed it from the dataset.
struct TaskAnswer {
  AnswerKind kind = AnswerKind::kNone;
  std::vector<int64_t> numbers;  // countdown: the numbers to use, as a multiset
  int64_t target = 0;            // countdown: the value to reach
  int64_t integer = 0;           // arithmetic: the exact answer
  std::string text;              // gsm8k / boxed: the gold answer text

  static TaskAnswer none() { return {}; }
  static TaskAnswer countdown(std::vector<int64_t> numbers, int64_t target);
  static TaskAnswer arithmetic(int64_t value);
  static TaskAnswer gsm8k(std::string gold);
  static TaskAnswer boxed(std::string gold);
};

// One completion to score. `prompt` is unused by the built-in rewards (the command reward sends
// it); `truncated` is for the loss mask (DAPO overlong filtering), not a reward.
struct RewardInput {
  std::string prompt;
  std::string completion;
  const TaskAnswer& answer;
  int64_t completion_tokens = 0;
  bool truncated = false;
  std::string answer_text;  // the gold answer as the dataset stores it (JSON), for the command reward
};

// A reward function: a score, or an error when the input cannot be scored at all (e.g. a
// countdown reward given an arithmetic answer: a config/data mismatch, not a bad completion).
using RewardFn = std::function<StatusOr<double>(const RewardInput&)>;

struct RewardComponent {
  std::string name;
  double weight = 0.0;
  double value = 0.0;  // unweighted
};

struct RewardResult {
  double total = 0.0;                         // sum of weight * value
  std::vector<RewardComponent> components;    // in the order the terms were added
};

class RewardSpec {
 public:
  // InvalidArgument when `name` is already a term or `weight` is not finite.
  Status add(std::string name, double weight, RewardFn fn);
  // Errors name the reward that failed ("reward countdown: ...").
  StatusOr<RewardResult> score(const RewardInput& input) const;
  size_t size() const { return terms_.size(); }
  std::vector<std::string> names() const;

 private:
  struct Term {
    std::string name;
    double weight;
    RewardFn fn;
  };
  std::vector<Term> terms_;
};

// Whether a completion's answer is right, scored leniently on the answer alone, so that learning
// the output format does not count as getting better (evaluation): the last <answer> when there
// is one, else the last integer (arithmetic) or the last run of expression characters
// (countdown) in the text; gsm8k and boxed use their own markers.
bool task_answer_correct(std::string_view completion, const TaskAnswer& answer);

// The reward `name` (one of reward_names()). Uses config.max_new_tokens and
// config.overlong_buffer for "overlong", config.reward_command* for "command".
StatusOr<RewardFn> builtin_reward(std::string_view name, const GrpoConfig& config);

// Every term of config.rewards, in name order. Errors: no rewards; an unknown name; "command"
// without grpo.reward_command; a non-finite weight; overlong without a positive overlong_buffer
// below max_new_tokens.
StatusOr<RewardSpec> make_reward_spec(const GrpoConfig& config);

}  // namespace strata
