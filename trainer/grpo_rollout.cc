#include "trainer/grpo_rollout.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/timer.h"
#include "rl/pass_at_k.h"

namespace strata {

namespace {

StatusOr<TaskAnswer> parse_task_answer(const std::string& text) {
  if (text.empty()) return TaskAnswer::none();
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat("answer ", text, " is not a JSON object"));
  try {
    if (j.contains("numbers") && j.contains("target")) {
      return TaskAnswer::countdown(j["numbers"].get<std::vector<int64_t>>(), j["target"].get<int64_t>());
    }
    if (j.contains("result")) return TaskAnswer::arithmetic(j["result"].get<int64_t>());
    if (j.contains("gsm8k")) return TaskAnswer::gsm8k(j["gsm8k"].get<std::string>());
    if (j.contains("boxed")) return TaskAnswer::boxed(j["boxed"].get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("answer ", text, ": ", e.what()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("answer ", text, " has none of result, numbers+target, gsm8k, boxed"));
}

}  // namespace

StatusOr<Problem> make_problem(const DataLoader& loader, int64_t sample_id, int64_t index, const Tokenizer& tok,
                               bool r1) {
  Problem p;
  p.index = index;
  p.example = loader.example(sample_id);
  auto answer = parse_task_answer(p.example.answer);
  if (!answer.ok()) return annotate(answer.status(), absl::StrCat("example ", sample_id));
  p.answer = *answer;
  p.prompt_text = r1 ? apply_r1_template(p.example.prompt) : p.example.prompt;
  p.prompt_ids = tok.encode(p.prompt_text);
  if (p.prompt_ids.empty()) return absl::InvalidArgumentError(absl::StrCat("example ", sample_id, ": empty prompt"));
  return p;
}

RolloutOptions rollout_options(const GrpoConfig& g, const Tokenizer& tok) {
  RolloutOptions o;
  o.sampling.max_new_tokens = g.max_new_tokens;
  o.sampling.temperature = static_cast<float>(g.temperature);
  o.sampling.top_k = g.top_k;
  o.sampling.top_p = static_cast<float>(g.top_p);
  o.sampling.eos_id = tok.eos_id();
  o.stop = g.stop;
  o.group_size = g.group_size;
  o.batch_rows = g.rollout_batch;
  return o;
}

namespace {

// Under pipeline parallelism every stage holds the same samples but only the last scores them
// (a `command` reward runs once): it sends each sample's total, correctness and terms to the others.
Status share_scores(std::vector<Scored>& scored, const RewardSpec& rewards, Communicator* pp) {
  const std::vector<std::string> names = rewards.names();
  const size_t per = 2 + 2 * names.size();
  std::vector<double> packet(scored.size() * per, 0.0);
  const bool root = pp->rank() == pp->size() - 1;
  if (root) {
    for (size_t i = 0; i < scored.size(); ++i) {
      double* q = packet.data() + i * per;
      q[0] = scored[i].reward.total;
      q[1] = scored[i].correct ? 1.0 : 0.0;
      for (size_t c = 0; c < names.size() && c < scored[i].reward.components.size(); ++c) {
        q[2 + 2 * c] = scored[i].reward.components[c].weight;
        q[3 + 2 * c] = scored[i].reward.components[c].value;
      }
    }
  }
  RETURN_IF_ERROR(pp->broadcast(packet.data(), static_cast<int64_t>(packet.size() * sizeof(double)), pp->size() - 1));
  if (root) return OkStatus();
  for (size_t i = 0; i < scored.size(); ++i) {
    const double* q = packet.data() + i * per;
    scored[i].reward.total = q[0];
    scored[i].correct = q[1] != 0.0;
    scored[i].reward.components.clear();
    for (size_t c = 0; c < names.size(); ++c) scored[i].reward.components.push_back({names[c], q[2 + 2 * c], q[3 + 2 * c]});
  }
  return OkStatus();
}

}  // namespace

// Samples G completions for each problem and scores them. pp (pipeline parallelism): the
// pipeline group, whose last stage scores for all.
StatusOr<std::vector<Scored>> sample_and_score(Transformer& model, const Tokenizer& tok,
                                               const std::vector<Problem>& problems, const RolloutOptions& options,
                                               const RewardSpec& rewards, uint64_t seed, int64_t key_step,
                                               RolloutResult* stats, const RolloutLayout& layout,
                                               Communicator* pp) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int64_t> indices;
  for (const Problem& p : problems) {
    prompts.push_back(p.prompt_ids);
    indices.push_back(p.index);
  }
  RolloutResult r = rollout(model, tok, prompts, indices, options, seed, key_step, layout);
  const bool scores_here = pp == nullptr || pp->rank() == pp->size() - 1;
  std::vector<Scored> out;
  for (size_t i = 0; i < r.samples.size(); ++i) {
    Scored s;
    s.problem = &problems[i / static_cast<size_t>(options.group_size)];
    s.sample = std::move(r.samples[i]);
    if (scores_here) {
      RewardInput in{s.problem->prompt_text, s.sample.text, s.problem->answer,
                     static_cast<int64_t>(s.sample.completion.size()), s.sample.truncated, s.problem->example.answer};
      auto reward = rewards.score(in);
      if (!reward.ok()) return annotate(reward.status(), absl::StrCat("scoring prompt ", s.problem->index));
      s.reward = *reward;
      s.correct = task_answer_correct(s.sample.text, s.problem->answer);
    }
    out.push_back(std::move(s));
  }
  if (pp != nullptr) RETURN_IF_ERROR(share_scores(out, rewards, pp));
  stats->new_tokens += r.new_tokens;
  stats->seconds += r.seconds;
  return out;
}

// `problems` are this rank's share of the held-out set (`total` problems over all ranks); the
// figures are over all of them.
// With expert parallelism every rank must decode the same batches: ranks with fewer problems
// append copies of problem 0 to reach the busiest rank's count; only the first `real` count.
StatusOr<EvalStats> evaluate(Transformer& model, const Tokenizer& tok, const std::vector<Problem>& padded_problems,
                             int64_t real, int64_t total, const GrpoConfig& g, const RewardSpec& rewards,
                             uint64_t seed, const DataParallel& dp, const RolloutLayout& layout) {
  EvalStats e;
  Timer timer;
  RolloutResult stats;
  const std::vector<Problem>& problems = padded_problems;
  // Fixed keys (step -1): every evaluation of a run samples with the same randomness.
  RolloutOptions greedy = rollout_options(g, tok);
  greedy.group_size = 1;
  greedy.sampling.temperature = 0.0f;
  RolloutOptions sampled = rollout_options(g, tok);
  sampled.group_size = g.eval_samples;
  std::vector<Scored> gs, ss;
  if (!problems.empty()) {  // a rank may hold none of a small held-out set (dp > problems)
    ASSIGN_OR_RETURN(gs, sample_and_score(model, tok, problems, greedy, rewards, seed, -1, &stats, layout, dp.pp.get()));
    ASSIGN_OR_RETURN(ss, sample_and_score(model, tok, problems, sampled, rewards, seed, -1, &stats, layout, dp.pp.get()));
  }
  for (int64_t i = 0; i < real; ++i) e.greedy_accuracy += gs[static_cast<size_t>(i)].correct;
  std::vector<SampleCounts> counts(static_cast<size_t>(real));
  for (size_t i = 0; i < static_cast<size_t>(real * g.eval_samples); ++i) {
    SampleCounts& c = counts[i / static_cast<size_t>(g.eval_samples)];
    c.n++;
    c.correct += ss[i].correct;
    e.mean_reward += ss[i].reward.total;
  }
  const double n = static_cast<double>(real);
  if (real > 0) {  // sums over this rank's problems
    ASSIGN_OR_RETURN(e.pass_at_1, mean_pass_at_k(counts, 1));
    ASSIGN_OR_RETURN(e.pass_at_k, mean_pass_at_k(counts, g.eval_samples));
    e.pass_at_1 *= n;
    e.pass_at_k *= n;
  }
  double sums[4] = {e.greedy_accuracy, e.pass_at_1, e.pass_at_k, e.mean_reward};
  RETURN_IF_ERROR(dp.sum(sums, 4));
  const double all = static_cast<double>(std::max<int64_t>(total, 1));
  e.greedy_accuracy = sums[0] / all;
  e.pass_at_1 = sums[1] / all;
  e.pass_at_k = sums[2] / all;
  e.mean_reward = sums[3] / (all * static_cast<double>(g.eval_samples));
  e.seconds = timer.seconds();
  return e;
}

}  // namespace strata
