#include "trainer/eval_cmd.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/tasks.h"
#include "model/generate.h"
#include "rl/pass_at_k.h"
#include "rl/rewards.h"
#include "rl/verifiers.h"
#include "trainer/cli.h"
#include "trainer/train.h"

namespace strata {
namespace {

struct Verdict {
  double reward = 0;     // the task's reward (strict: needs the <answer> tag)
  bool correct = false;  // the answer alone is right (lenient: format does not count)
};

// Scores one completion with the verifier of the task.
StatusOr<Verdict> verify(TaskKind kind, const std::string& answer_json, const std::string& completion) {
  auto j = nlohmann::json::parse(answer_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InternalError(absl::StrCat("bad task answer ", answer_json));
  Verdict v;
  if (kind == TaskKind::kArithmetic) {
    const TaskAnswer a = TaskAnswer::arithmetic(j.at("result").get<int64_t>());
    v.reward = reward_arithmetic(completion, a.integer);
    v.correct = task_answer_correct(completion, a);
  } else {
    const TaskAnswer a =
        TaskAnswer::countdown(j.at("numbers").get<std::vector<int64_t>>(), j.at("target").get<int64_t>());
    v.reward = reward_countdown(completion, a.numbers, a.target);
    v.correct = task_answer_correct(completion, a);
  }
  return v;
}

}  // namespace

StatusOr<EvalResult> run_eval(const EvalArgs& args) {
  ASSIGN_OR_RETURN(TaskKind kind, parse_task_kind(args.task));
  if (args.samples < 1) return absl::InvalidArgumentError("--samples must be >= 1");
  if (args.samples > 1 && args.temperature <= 0) {
    return absl::InvalidArgumentError("--samples > 1 needs --temperature > 0 (greedy samples are all the same)");
  }
  ASSIGN_OR_RETURN(LoadedModel lm, load_model_for_inference(args.checkpoint, args.tokenizer));
  if (!lm.tokenizer) return absl::InvalidArgumentError("no tokenizer: pass --tokenizer char|PATH");
  const Tokenizer& tok = *lm.tokenizer;
  const ModelConfig& mc = lm.config.model;
  const bool r1 = lm.config.data.r1_template;
  const uint64_t seed = static_cast<uint64_t>(lm.config.train.seed);

  std::vector<Example> problems;
  std::vector<std::vector<int32_t>> prompts;
  int64_t longest = 0;
  for (int64_t i = 0; i < args.n; ++i) {
    problems.push_back(make_task_example(kind, seed, i, Split::kEval));
    const std::string text = r1 ? apply_r1_template(problems.back().prompt) : problems.back().prompt;
    prompts.push_back(tok.encode(text));
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts.back().size()));
  }
  SamplingParams sp;
  sp.temperature = static_cast<float>(args.temperature);
  sp.eos_id = tok.eos_id();
  sp.max_new_tokens = args.max_new_tokens > 0 ? args.max_new_tokens : mc.max_seq_len - longest;
  sp.max_new_tokens = std::min<int64_t>(sp.max_new_tokens, mc.max_seq_len - longest);
  if (sp.max_new_tokens < 1) return absl::InvalidArgumentError("prompts fill the model's max_seq_len");

  std::ofstream out;
  if (!args.out.empty()) out.open(args.out);
  EvalResult r;
  std::vector<SampleCounts> counts(problems.size());
  double reward_sum = 0;
  Timer timer;
  // Rows are (problem, sample) pairs decoded in batches; each row's randomness is keyed by them.
  const int64_t rows_total = args.n * args.samples;
  for (int64_t first = 0; first < rows_total; first += args.batch) {
    const int64_t rows = std::min(args.batch, rows_total - first);
    std::vector<std::vector<int32_t>> batch;
    std::vector<uint64_t> keys;
    for (int64_t row = first; row < first + rows; ++row) {
      const int64_t p = row / args.samples, s = row % args.samples;
      batch.push_back(prompts[p]);
      keys.push_back(stream_id(absl::StrCat("eval/", args.task, "/", p, "/", s)));
    }
    Generation g = generate(*lm.model, batch, sp, keys, static_cast<uint64_t>(args.seed));
    r.generated_tokens += g.new_tokens;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t p = (first + i) / args.samples;
      std::vector<int32_t> ids = g.completions[i];
      if (!ids.empty() && ids.back() == tok.eos_id()) ids.pop_back();
      const std::string text = tok.decode(ids);
      ASSIGN_OR_RETURN(Verdict v, verify(kind, problems[p].answer, text));
      const double reward = v.reward;
      const bool correct = v.correct;
      counts[p].n++;
      counts[p].correct += correct;
      reward_sum += reward;
      if (out.is_open()) {
        nlohmann::json j = {{"problem", p},       {"prompt", problems[p].prompt}, {"completion", text},
                            {"reward", reward},   {"correct", correct},           {"truncated", static_cast<bool>(g.truncated[i])}};
        out << j.dump() << "\n";
      }
    }
    std::fprintf(stderr, "\reval: %ld/%ld completions", static_cast<long>(first + rows), static_cast<long>(rows_total));
  }
  std::fprintf(stderr, "\n");
  r.seconds = timer.seconds();
  r.problems = args.n;
  double acc = 0;
  for (const auto& c : counts) acc += static_cast<double>(c.correct) / c.n;
  r.accuracy = acc / args.n;
  r.mean_reward = reward_sum / rows_total;
  ASSIGN_OR_RETURN(r.pass_at_1, mean_pass_at_k(counts, 1));
  ASSIGN_OR_RETURN(r.pass_at_k, mean_pass_at_k(counts, args.samples));
  return r;
}

int run_eval_command(const EvalArgs& args) {
  auto r = run_eval(args);
  if (!r.ok()) {
    std::fprintf(stderr, "strata eval: %s\n", std::string(r.status().message()).c_str());
    const auto code = r.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? kExitUsage : kExitFailure;
  }
  std::printf("task %s: %ld held-out problems x %ld sample(s)\n", args.task.c_str(), static_cast<long>(r->problems),
              static_cast<long>(args.samples));
  std::printf("accuracy %.2f%%  pass@1 %.2f%%", 100 * r->accuracy, 100 * r->pass_at_1);
  if (args.samples > 1) std::printf("  pass@%ld %.2f%%", static_cast<long>(args.samples), 100 * r->pass_at_k);
  std::printf("  mean reward %.4f\n", r->mean_reward);
  std::printf("%ld tokens generated in %.1fs (%.0f tokens/s)\n", static_cast<long>(r->generated_tokens), r->seconds,
              r->generated_tokens / std::max(r->seconds, 1e-9));
  return kExitOk;
}

}  // namespace strata
