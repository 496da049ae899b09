#include "rl/rewards.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rl/command_reward.h"
#include "rl/verifiers.h"

namespace strata {
namespace {

Status wrong_answer_kind(std::string_view reward, const TaskAnswer& answer, std::string_view wanted) {
  // absl::string_view is not std::string_view in this abseil (TOOLCHAIN.md): convert for StrCat.
  return absl::InvalidArgumentError(absl::StrCat("the ", std::string(reward), " reward needs ", std::string(wanted),
                                                 " answer, but the task's is ",
                                                 std::string(answer_kind_name(answer.kind))));
}

// gsm8k and boxed compare against gold text; an arithmetic task's integer serves as that text too.
StatusOr<std::string> gold_text(std::string_view reward, const TaskAnswer& answer) {
  switch (answer.kind) {
    case AnswerKind::kGsm8k:
    case AnswerKind::kBoxed:
      return answer.text;
    case AnswerKind::kArithmetic:
      return std::to_string(answer.integer);
    default:
      return wrong_answer_kind(reward, answer, "a gsm8k, boxed or arithmetic");
  }
}

}  // namespace

std::string_view answer_kind_name(AnswerKind kind) {
  switch (kind) {
    case AnswerKind::kNone: return "none";
    case AnswerKind::kCountdown: return "countdown";
    case AnswerKind::kArithmetic: return "arithmetic";
    case AnswerKind::kGsm8k: return "gsm8k";
    case AnswerKind::kBoxed: return "boxed";
  }
  return "unknown";
}

TaskAnswer TaskAnswer::countdown(std::vector<int64_t> numbers, int64_t target) {
  TaskAnswer a;
  a.kind = AnswerKind::kCountdown;
  a.numbers = std::move(numbers);
  a.target = target;
  return a;
}

TaskAnswer TaskAnswer::arithmetic(int64_t value) {
  TaskAnswer a;
  a.kind = AnswerKind::kArithmetic;
  a.integer = value;
  return a;
}

TaskAnswer TaskAnswer::gsm8k(std::string gold) {
  TaskAnswer a;
  a.kind = AnswerKind::kGsm8k;
  a.text = std::move(gold);
  return a;
}

TaskAnswer TaskAnswer::boxed(std::string gold) {
  TaskAnswer a;
  a.kind = AnswerKind::kBoxed;
  a.text = std::move(gold);
  return a;
}

Status RewardSpec::add(std::string name, double weight, RewardFn fn) {
  for (const auto& t : terms_) {
    if (t.name == name) return absl::InvalidArgumentError(absl::StrCat("reward ", name, " is listed twice"));
  }
  if (!std::isfinite(weight)) {
    return absl::InvalidArgumentError(absl::StrCat("reward ", name, ": weight ", weight, " is not finite"));
  }
  terms_.push_back(Term{std::move(name), weight, std::move(fn)});
  return OkStatus();
}

StatusOr<RewardResult> RewardSpec::score(const RewardInput& input) const {
  RewardResult out;
  out.components.reserve(terms_.size());
  for (const auto& t : terms_) {
    auto value = t.fn(input);
    if (!value.ok()) return annotate(value.status(), absl::StrCat("reward ", t.name));
    out.total += t.weight * *value;
    out.components.push_back(RewardComponent{t.name, t.weight, *value});
  }
  return out;
}

std::vector<std::string> RewardSpec::names() const {
  std::vector<std::string> out;
  for (const auto& t : terms_) out.push_back(t.name);
  return out;
}

StatusOr<RewardFn> builtin_reward(std::string_view name, const GrpoConfig& config) {
  if (name == "countdown") {
    return RewardFn([](const RewardInput& in) -> StatusOr<double> {
      if (in.answer.kind != AnswerKind::kCountdown) return wrong_answer_kind("countdown", in.answer, "a countdown");
      return reward_countdown(in.completion, in.answer.numbers, in.answer.target);
    });
  }
  if (name == "arithmetic") {
    return RewardFn([](const RewardInput& in) -> StatusOr<double> {
      if (in.answer.kind != AnswerKind::kArithmetic) return wrong_answer_kind("arithmetic", in.answer, "an arithmetic");
      return reward_arithmetic(in.completion, in.answer.integer);
    });
  }
  if (name == "gsm8k") {
    return RewardFn([](const RewardInput& in) -> StatusOr<double> {
      ASSIGN_OR_RETURN(std::string gold, gold_text("gsm8k", in.answer));
      return reward_gsm8k(in.completion, gold);
    });
  }
  if (name == "boxed") {
    return RewardFn([](const RewardInput& in) -> StatusOr<double> {
      ASSIGN_OR_RETURN(std::string gold, gold_text("boxed", in.answer));
      return reward_boxed(in.completion, gold);
    });
  }
  if (name == "format") {
    return RewardFn([](const RewardInput& in) -> StatusOr<double> { return reward_format(in.completion); });
  }
  if (name == "tag_count") {
    return RewardFn([](const RewardInput& in) -> StatusOr<double> { return reward_tag_count(in.completion); });
  }
  if (name == "overlong") {
    const int64_t max_len = config.max_new_tokens, buffer = config.overlong_buffer;
    if (buffer <= 0 || buffer >= max_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the overlong reward needs 0 < overlong_buffer < max_new_tokens; got ", buffer, " and ", max_len));
    }
    return RewardFn([max_len, buffer](const RewardInput& in) -> StatusOr<double> {
      return reward_overlong(in.completion_tokens, max_len, buffer);
    });
  }
  if (name == "command") {
    if (config.reward_command.empty()) {
      return absl::InvalidArgumentError("the command reward needs grpo.reward_command");
    }
    // One process per spec, shared by the copies of the function; started on first use.
    auto cmd = std::make_shared<CommandReward>(config.reward_command, config.reward_command_timeout_s,
                                               config.reward_command_on_failure);
    return RewardFn([cmd](const RewardInput& in) -> StatusOr<double> {
      return cmd->score(in.prompt, in.completion, in.answer_text);
    });
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown reward \"", std::string(name), "\"; known: ", absl::StrJoin(reward_names(), ", ")));
}

namespace {

// The last run of characters matching `keep` that holds at least one digit, trimmed.
std::string last_run(std::string_view text, bool (*keep)(char)) {
  size_t end = text.size();
  while (end > 0) {
    while (end > 0 && !keep(text[end - 1])) --end;
    size_t begin = end;
    while (begin > 0 && keep(text[begin - 1])) --begin;
    std::string_view run = text.substr(begin, end - begin);
    if (run.find_first_of("0123456789") != std::string_view::npos) {
      const size_t a = run.find_first_not_of(' '), b = run.find_last_not_of(' ');
      return std::string(run.substr(a, b - a + 1));
    }
    end = begin;
  }
  return "";
}

bool expression_char(char c) { return (c >= '0' && c <= '9') || std::string_view("+-*/() ").find(c) != std::string_view::npos; }
bool integer_char(char c) { return (c >= '0' && c <= '9') || c == '-'; }

}  // namespace

bool task_answer_correct(std::string_view completion, const TaskAnswer& answer) {
  const bool tagged = last_answer_tag(completion).has_value();
  auto wrap = [](const std::string& s) { return "<answer>" + s + "</answer>"; };
  switch (answer.kind) {
    case AnswerKind::kCountdown:
      return reward_countdown(tagged ? std::string(completion) : wrap(last_run(completion, expression_char)),
                              answer.numbers, answer.target) >= 1.0;
    case AnswerKind::kArithmetic: {
      std::string candidate = tagged ? std::string(completion) : last_run(completion, integer_char);
      if (!tagged) {  // "-" only as a leading sign
        const size_t dash = candidate.find_last_of('-');
        if (dash != std::string::npos && dash > 0) candidate = candidate.substr(dash);
        candidate = wrap(candidate);
      }
      return reward_arithmetic(candidate, answer.integer) >= 1.0;
    }
    case AnswerKind::kGsm8k: return reward_gsm8k(completion, answer.text) >= 1.0;
    case AnswerKind::kBoxed: return reward_boxed(completion, answer.text) >= 1.0;
    case AnswerKind::kNone: break;
  }
  return false;
}

StatusOr<RewardSpec> make_reward_spec(const GrpoConfig& config) {
  if (config.rewards.empty()) return absl::InvalidArgumentError("grpo.rewards: no reward functions named");
  RewardSpec spec;
  for (const auto& [name, weight] : config.rewards) {
    auto fn = builtin_reward(name, config);
    if (!fn.ok()) return annotate(fn.status(), absl::StrCat("grpo.rewards.", name));
    RETURN_IF_ERROR(annotate(spec.add(name, weight, *std::move(fn)), "grpo.rewards"));
  }
  return spec;
}

}  // namespace strata
