#include "trainer/grpo_train.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/log.h"
#include "core/timer.h"
#include "kernels/ops.h"
#include "model/flops.h"
#include "optim/schedule.h"
#include "rl/grpo.h"
#include "rl/rewards.h"
#include "rl/rollout.h"
#include "trainer/config_yaml.h"
#include "trainer/fault_injection.h"
#include "trainer/grpo_rollout.h"
#include "trainer/pipeline_stage.h"
#include "trainer/run_common.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// The training rows of a micro-batch: prompt + completion, right-padded; targets on the
// completion tokens only (and none where overlong filtering masks a truncated completion).
struct MicroBatch {
  Batch batch;
  std::vector<int64_t> rows;          // indices into the step's samples
  std::vector<int64_t> first_target;  // per row: position predicting the first completion token
  std::vector<int64_t> n_completion;  // per row: completion tokens
};

MicroBatch make_micro_batch(const std::vector<Scored>& samples, int64_t begin, int64_t end, int64_t vocab,
                            float logit_scale, bool overlong_filter) {
  MicroBatch mb;
  int64_t T = 1;
  for (int64_t i = begin; i < end; ++i) {
    const auto& s = samples[i].sample;
    T = std::max<int64_t>(T, static_cast<int64_t>(s.prompt.size() + s.completion.size()));
  }
  Batch& b = mb.batch;
  b.B = end - begin;
  b.T = T;
  b.tokens.assign(static_cast<size_t>(b.B * T), 0);
  b.targets.assign(static_cast<size_t>(b.B * T), -1);
  b.logit_scale = logit_scale;
  for (int64_t i = begin; i < end; ++i) {
    const auto& s = samples[i].sample;
    const int64_t r = i - begin, P = static_cast<int64_t>(s.prompt.size()), n = static_cast<int64_t>(s.completion.size());
    for (int64_t t = 0; t < P; ++t) b.tokens[r * T + t] = s.prompt[t];
    for (int64_t t = 0; t < n; ++t) b.tokens[r * T + P + t] = s.completion[t];
    const bool masked = overlong_filter && s.truncated;
    if (!masked)
      for (int64_t t = 0; t < n; ++t) b.targets[r * T + P - 1 + t] = s.completion[t];
    mb.rows.push_back(i);
    mb.first_target.push_back(r * T + P - 1);
    mb.n_completion.push_back(n);
  }
  b.finalize(vocab);
  return mb;
}

// Per-row completion log-probs of a forward (no gradient kept).
std::vector<std::vector<float>> completion_logp(Transformer& model, const MicroBatch& mb) {
  Activations acts;
  model.forward(mb.batch, acts, 1.0);
  std::vector<std::vector<float>> out;
  for (size_t r = 0; r < mb.rows.size(); ++r) {
    const float* lp = acts.token_logp.data() + mb.first_target[r];
    out.emplace_back(lp, lp + mb.n_completion[r]);
  }
  return out;
}

// completion_logp of every micro-batch: in this process, or through the pipeline (the log-probs
// are on the last stage; the other stages get empty lists).
StatusOr<std::vector<std::vector<std::vector<float>>>> completion_logps(Transformer& model,
                                                                      const std::vector<MicroBatch>& micro,
                                                                      const PipelinePlan* pipe, const DataParallel& dp) {
  std::vector<std::vector<std::vector<float>>> out(micro.size());
  if (pipe == nullptr) {
    for (size_t k = 0; k < micro.size(); ++k) out[k] = completion_logp(model, micro[k]);
    return out;
  }
  ModelStage stage(model);
  std::vector<StageMicro> mbs;
  for (const MicroBatch& m : micro) mbs.push_back({&m.batch, 1.0, false});
  stage.begin_step(mbs, 1.0, /*keep=*/false);
  stage.on_head_forward = [&](int k, Activations& acts) {
    const MicroBatch& mb = micro[static_cast<size_t>(k)];
    for (size_t r = 0; r < mb.rows.size(); ++r) {
      const float* lp = acts.token_logp.data() + mb.first_target[r];
      out[static_cast<size_t>(k)].emplace_back(lp, lp + mb.n_completion[r]);
    }
  };
  const Schedule s = forward_only_schedule(pipe->p, static_cast<int>(micro.size()), pipe->v);
  RETURN_IF_ERROR(run_pipeline(s, dp.pp_rank, stage, dp.pp.get()).status());
  return out;
}

// Mean entropy (nats) of the sampling distribution over the loss positions of a forward.
double entropy_sum(const Activations& acts, const Batch& b, int64_t V, int64_t* count) {
  double sum = 0;
  for (int64_t i = 0; i < b.B * b.T; ++i) {
    if (b.targets[i] < 0) continue;
    const float* z = acts.logits.f32() + i * V;  // already scaled; overwritten only by backward
    const double lse = acts.lse.f32()[i];
    double ez = 0;
    for (int64_t v = 0; v < V; ++v) ez += std::exp(z[v] - lse) * z[v];
    sum += lse - ez;
    ++*count;
  }
  return sum;
}

// Rank 0 receives every rank's (slot, line) pairs and orders them by slot (stably: a group's
// lines keep their order); the other ranks send theirs and keep none.
Status gather_lines(const DataParallel& dp, std::vector<std::pair<int64_t, std::string>>& lines) {
  if (!dp.comm) return OkStatus();
  constexpr int kTagCount = 31, kTagText = 32;
  auto pack = [](const std::vector<std::pair<int64_t, std::string>>& in) {
    std::string out;
    for (const auto& [slot, line] : in) out += absl::StrCat(slot, " ", line, "\n");
    return out;
  };
  if (dp.rank != 0) {
    const std::string text = pack(lines);
    const int64_t n = static_cast<int64_t>(text.size());
    RETURN_IF_ERROR(dp.comm->send(&n, sizeof n, 0, kTagCount));
    if (n > 0) RETURN_IF_ERROR(dp.comm->send(text.data(), n, 0, kTagText));
    lines.clear();
    return OkStatus();
  }
  for (int src = 1; src < dp.size; ++src) {
    int64_t n = 0;
    RETURN_IF_ERROR(dp.comm->recv(&n, sizeof n, src, kTagCount));
    std::string text(static_cast<size_t>(n), '\0');
    if (n > 0) RETURN_IF_ERROR(dp.comm->recv(text.data(), n, src, kTagText));
    for (size_t at = 0; at < text.size();) {
      const size_t space = text.find(' ', at), end = text.find('\n', at);
      lines.emplace_back(std::stoll(text.substr(at, space - at)), text.substr(space + 1, end - space - 1));
      at = end + 1;
    }
  }
  std::stable_sort(lines.begin(), lines.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return OkStatus();
}

void copy_weights(const Transformer& from, Transformer& to) {
  for (size_t i = 0; i < from.params().size(); ++i) {
    const Tensor& src = from.params()[i].param->value;
    copy_f32(to.params()[i].param->value.f32(), src.f32(), src.numel());
  }
  to.mark_weights_changed();
}

}  // namespace

Status run_grpo(const ExperimentConfig& config, const TrainOptions& options) {
  const TrainConfig& tc = config.train;
  const GrpoConfig& g = config.grpo;
  RETURN_IF_ERROR(refuse_unlanded(config));
  // Data parallelism: rank r owns the groups of the prompts at positions r, r + dp, ... of every
  // sampling round (a group's G samples stay on one rank, scored there, `command` rewards
  // included). Rewards are shared so every rank selects the same groups, in the order one process
  // would, and computes the same advantages; the loss divides by global counts.
  ASSIGN_OR_RETURN(DataParallel dp, DataParallel::join(config));
  ASSIGN_OR_RETURN(const std::string run_dir, open_run_dir(config));

  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_run_tokenizer(config));
  const uint64_t seed = static_cast<uint64_t>(tc.seed);
  ASSIGN_OR_RETURN(std::unique_ptr<DataLoader> loader, DataLoader::create(config.data, *tok, seed, Split::kTrain));
  ASSIGN_OR_RETURN(RewardSpec rewards, make_reward_spec(g));
  const bool r1 = config.data.r1_template;

  // Held-out problems, fixed for the run.
  std::vector<Problem> eval_problems;  // this rank's share, then (ep > 1) padding
  int64_t eval_total = 0, eval_real = 0;
  {
    auto el = DataLoader::create(config.data, *tok, seed, Split::kEval);
    if (el.ok()) {
      eval_total = std::min<int64_t>(g.eval_problems, (*el)->size());
      for (int64_t i = dp.rank; i < eval_total; i += dp.size) {
        ASSIGN_OR_RETURN(Problem p, make_problem(**el, i, i, *tok, r1));
        eval_problems.push_back(std::move(p));
      }
      eval_real = static_cast<int64_t>(eval_problems.size());
      // Expert parallelism decodes in lockstep: every rank runs as many problems as the busiest.
      const int64_t most = (eval_total + dp.size - 1) / dp.size;
      while (dp.ep_size > 1 && eval_total > 0 && static_cast<int64_t>(eval_problems.size()) < most) {
        ASSIGN_OR_RETURN(Problem p, make_problem(**el, 0, 0, *tok, r1));
        eval_problems.push_back(std::move(p));
      }
    } else {
      LOG(WARN) << "no held-out split (" << el.status().message() << "): no evaluation";
    }
  }

  // Pipeline parallelism: this rank's stage. Every stage of a pipeline holds the same samples
  // (the last samples and scores, the others receive tokens and scores), so all of them build the
  // same micro-batches and run each step's schedule over them.
  std::unique_ptr<PipelinePlan> pipe;
  if (config.parallel.pp > 1) {
    ASSIGN_OR_RETURN(PipelinePlan plan, make_pipeline_plan(config, dp.size));
    pipe = std::make_unique<PipelinePlan>(std::move(plan));
    LOG(INFO) << "pipeline: " << schedule_name(pipe->kind) << ", blocks per stage " << pipe->describe();
  }
  const StageSpec spec = pipe ? pipe->stage(dp.pp_rank) : StageSpec{};
  Transformer model(config.model, config.precision, spec, dp.experts());
  model.set_expert_group(dp.ep.get());
  model.set_dispatch_fp8(config.parallel.dispatch_fp8);
  RETURN_IF_ERROR(init_model_weights(model, config.model, seed));
  DistributedOptimizer optimizer(config.optim, config.parallel, optimizer_tensors(model, config.optim), dp.comm,
                                 dp.edp.get(), dp.ep.get(), dp.pp.get());
  // Expert parallelism: MoE layers exchange tokens in every forward, so decoding runs in lockstep
  // over the expert group (the most steps any rank needs; finished ranks keep stepping).
  RolloutLayout layout;
  std::unique_ptr<PipelineDecoder> decoder;
  if (pipe) {
    decoder = std::make_unique<PipelineDecoder>(model, *pipe, dp.pp_rank, dp.pp.get());
    layout.decoder = decoder.get();
  }
  if (dp.ep) {
    layout.any_active = [&dp](bool local) {
      double v = local ? 1.0 : 0.0;
      const Status st = dp.ep->all_reduce(&v, 1, ReduceOp::kMax);
      CHECK(st.ok()) << "rollout lockstep: " << st.message();
      return v > 0.0;
    };
  }
  const std::vector<LinearGemm*> gemms = model.linear_gemms();
  const bool fp8_delayed =
      config.precision.mode == PrecisionMode::kFp8 && config.precision.fp8.recipe == Fp8Recipe::kTensorwiseDelayed;
  // The frozen reference policy, only when the KL term needs it.
  std::unique_ptr<Transformer> ref;
  if (g.beta > 0) {
    ref = std::make_unique<Transformer>(config.model, config.precision, spec, dp.experts());
    ref->set_expert_group(dp.ep.get());
    ref->set_dispatch_fp8(config.parallel.dispatch_fp8);
    copy_weights(model, *ref);
  }
  LOG(INFO) << absl::StrFormat("GRPO: %d prompts x %d samples per step, %d steps, loss %s, beta %g%s",
                               g.prompts_per_step, g.group_size, tc.steps,
                               g.loss_type == GrpoLossType::kGrpo   ? "grpo"
                               : g.loss_type == GrpoLossType::kDapo ? "dapo"
                                                                    : "dr_grpo",
                               g.beta, g.dynamic_sampling ? ", dynamic sampling" : "");

  // Resume.
  int64_t start = 0, cursor = 0;
  ASSIGN_OR_RETURN(const std::string resume_dir, resume_dir_of(config, options));
  if (!resume_dir.empty()) {
    ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(resume_dir));
    RETURN_IF_ERROR(restore_checkpoint(ckpt, model, &optimizer));
    const auto& state = ckpt.meta().trainer_state;
    start = ckpt.meta().step;
    if (state.contains("optimizer_step")) optimizer.set_step_count(state["optimizer_step"].get<int64_t>());
    if (state.contains("prompt_cursor")) cursor = state["prompt_cursor"].get<int64_t>();
    if (ref) {
      for (const ParamRef& p : ref->params()) {
        const std::string name = "ref." + p.name;
        if (!ckpt.has_tensor(name)) {
          return absl::NotFoundError(absl::StrCat(resume_dir, ": no reference policy tensor ", name,
                                                  " (saved with grpo.beta = 0?)"));
        }
        RETURN_IF_ERROR(read_param(ckpt, name, p));
      }
      ref->mark_weights_changed();
    }
    LOG(INFO) << "resumed from " << resume_dir << " at step " << start;
  }

  MetricsWriter metrics;
  if (config.log.metrics_jsonl && dp.root()) metrics.open((fs::path(run_dir) / "metrics.jsonl").string(), start);
  std::ofstream samples_out;
  if (g.samples_every > 0 && dp.root()) samples_out.open(fs::path(run_dir) / "samples.jsonl", start > 0 ? std::ios::app : std::ios::trunc);
  const double peak = measure_sgemm_peak_flops();
  const int64_t V = config.model.vocab_size, mb_rows = config.data.micro_batch_size;
  const float logit_scale = static_cast<float>(1.0 / g.temperature);
  const RolloutOptions ropts = rollout_options(g, *tok);

  auto save = [&](int64_t step) -> Status {
    CheckpointMeta meta;
    meta.step = step;
    meta.config_yaml = experiment_config_to_yaml(config);
    meta.layout = {{"world", dp.world_size()}, {"dp", dp.size},        {"pp", dp.pp_size},
                   {"ep", dp.ep_size},      {"zero", optimizer.sharded() ? 1 : 0}};
    meta.trainer_state = {{"step", step},
                          {"prompt_cursor", cursor},
                          {"optimizer_step", optimizer.step_count()},
                          {"seed", tc.seed}};
    std::vector<CheckpointTensor> extra;
    if (ref)  // a tied head's embedding copy (pipeline) is the first stage's to write
      for (const ParamRef& p : ref->params())
        if (p.name != "embed" || ref->stage().has_embedding) extra.push_back(param_tensor("ref." + p.name, p));
    std::vector<Fp8StateTensor> fp8_state;
    Timer t;
    RETURN_IF_ERROR(save_checkpoint(checkpoint_root_of(config), meta,
                                    run_checkpoint_tensors(model, optimizer, fp8_state, extra, dp),
                                    config.checkpoint.keep_last, nullptr, dp.world));
    LOG(INFO) << absl::StrFormat("checkpoint step %d saved in %.2fs", step, t.seconds());
    return OkStatus();
  };
  auto run_eval = [&](int64_t done) -> Status {
    if (eval_total == 0) return OkStatus();
    ASSIGN_OR_RETURN(EvalStats e,
                     evaluate(model, *tok, eval_problems, eval_real, eval_total, g, rewards, seed, dp, layout));
    MetricRecord r;
    r.kind = "eval";
    r.step = done;
    r.add("eval_accuracy", e.greedy_accuracy);
    r.add("eval_pass_at_1", e.pass_at_1);
    r.add(absl::StrCat("eval_pass_at_", g.eval_samples), e.pass_at_k);
    r.add("eval_reward", e.mean_reward);
    r.add("eval_s", e.seconds);
    LOG(INFO) << format_metric_line(r);
    metrics.write(r);
    return OkStatus();
  };
  if (start == 0 && tc.eval_every > 0) RETURN_IF_ERROR(run_eval(0));

  int64_t steps_this_process = 0;
  for (int64_t step = start; step < tc.steps; ++step) {
    RETURN_IF_ERROR(maybe_inject_fault(step));
    Timer step_timer;
    fp8_reset_step(gemms);
    // ---- rollouts, rewards, dynamic sampling ----
    std::vector<Problem> problems;  // owns the problems the samples point to (stable: reserved)
    problems.reserve(static_cast<size_t>(g.prompts_per_step * g.max_sampling_rounds));
    std::vector<Scored> batch;    // this rank's groups of the step's batch
    std::vector<int64_t> batch_slot;  // per local group: its position among the batch's groups
    std::vector<double> rs;       // every rank's: the batch's rewards, group-major, in global order
    RolloutResult rstats;
    const int64_t G = g.group_size, P = g.prompts_per_step;
    int64_t groups_seen = 0, zero_spread = 0, rounds = 0;
    const int64_t rounds_max = g.dynamic_sampling ? g.max_sampling_rounds : 1;
    while (rounds < rounds_max && static_cast<int64_t>(rs.size()) < P * G) {
      std::vector<int64_t> ids = loader->sample_ids(cursor, P);
      const size_t first_new = problems.size();
      std::vector<int64_t> owned;  // positions in the round of this rank's prompts
      for (int64_t i = dp.rank; i < P; i += dp.size) {
        ASSIGN_OR_RETURN(Problem p, make_problem(*loader, ids[i], cursor + i, *tok, r1));
        problems.push_back(std::move(p));
        owned.push_back(i);
      }
      cursor += P;
      std::vector<Problem> round(problems.begin() + static_cast<std::ptrdiff_t>(first_new), problems.end());
      ASSIGN_OR_RETURN(std::vector<Scored> scored,
                       sample_and_score(model, *tok, round, ropts, rewards, seed, step * 64 + rounds, &rstats, layout,
                                        dp.pp.get()));
      for (size_t k = 0; k < scored.size(); ++k)  // point at the stable copies
        scored[k].problem = &problems[first_new + k / static_cast<size_t>(G)];
      // Every group's rewards on every rank, so all select the same groups.
      std::vector<double> round_rewards(static_cast<size_t>(P * G), 0.0);
      for (size_t j = 0; j < owned.size(); ++j)
        for (int64_t k = 0; k < G; ++k) round_rewards[owned[j] * G + k] = scored[j * G + k].reward.total;
      RETURN_IF_ERROR(dp.sum(round_rewards.data(), P * G));
      for (int64_t gi = 0; gi < P; ++gi) {
        ++groups_seen;
        bool equal = true;
        for (int64_t k = 1; k < G; ++k) equal = equal && round_rewards[gi * G + k] == round_rewards[gi * G];
        zero_spread += equal;
        if (g.dynamic_sampling && equal) continue;
        if (static_cast<int64_t>(rs.size()) >= P * G) break;
        if (gi % dp.size == dp.rank) {
          const size_t j = static_cast<size_t>(gi / dp.size);
          for (int64_t k = 0; k < G; ++k) batch.push_back(scored[j * G + k]);
          batch_slot.push_back(static_cast<int64_t>(rs.size()) / G);
        }
        rs.insert(rs.end(), round_rewards.begin() + gi * G, round_rewards.begin() + (gi + 1) * G);
      }
      ++rounds;
    }

    // ---- advantages (identical on every rank) and global denominators ----
    const std::vector<double> adv = grpo_advantages(rs, G, g.scale_rewards);
    for (size_t i = 0; i < batch.size(); ++i) batch[i].advantage = adv[static_cast<size_t>(batch_slot[i / static_cast<size_t>(G)] * G) + i % static_cast<size_t>(G)];
    GrpoDenominators den;
    den.sequences = static_cast<double>(std::max<size_t>(rs.size(), 1));
    den.max_completion_length = static_cast<double>(g.max_new_tokens);
    // Sums over the batch: completion, prompt and masked-in tokens, truncated, correct, then each
    // reward term.
    const std::vector<std::string> terms = rewards.names();
    std::vector<double> sums(5 + terms.size(), 0.0);
    for (const Scored& s : batch) {
      const double n = static_cast<double>(s.sample.completion.size());
      sums[0] += n;
      sums[1] += static_cast<double>(s.sample.prompt.size());
      if (!(g.overlong_filter && s.sample.truncated)) sums[2] += n;
      sums[3] += s.sample.truncated;
      sums[4] += s.correct;
      for (size_t c = 0; c < s.reward.components.size() && c < terms.size(); ++c) sums[5 + c] += s.reward.components[c].value;
    }
    RETURN_IF_ERROR(dp.sum(sums.data(), static_cast<int64_t>(sums.size())));
    const double completion_tokens = sums[0], prompt_tokens = sums[1];
    const double truncated = sums[3], correct = sums[4];
    den.tokens = std::max(sums[2], 1.0);

    std::vector<MicroBatch> micro;
    for (int64_t b = 0; b < static_cast<int64_t>(batch.size()); b += mb_rows) {
      micro.push_back(make_micro_batch(batch, b, std::min<int64_t>(b + mb_rows, static_cast<int64_t>(batch.size())), V,
                                       logit_scale, g.overlong_filter));
    }
    // The aux losses' share of each micro-batch counts every rank's micro-batches.
    double global_micro = static_cast<double>(micro.size());
    RETURN_IF_ERROR(dp.sum(&global_micro, 1));
    // Expert parallelism: every forward exchanges tokens over the expert group, so every rank runs
    // as many micro-batches as the busiest, padding with empty ones (one token, no target).
    size_t want = micro.size();
    if (dp.ep) {
      double most = static_cast<double>(micro.size());
      RETURN_IF_ERROR(dp.ep->all_reduce(&most, 1, ReduceOp::kMax));
      want = static_cast<size_t>(most);
    }
    // Interleaved 1F1B runs a multiple of p micro-batches: pad with empty ones too.
    if (pipe && pipe->kind == ScheduleKind::kInterleaved1F1B) want = (want + pipe->p - 1) / pipe->p * pipe->p;
    while (micro.size() < want) {
      MicroBatch pad;
      pad.batch.B = 1;
      pad.batch.T = 1;
      pad.batch.tokens = {0};
      pad.batch.targets = {-1};
      pad.batch.finalize(V);
      micro.push_back(std::move(pad));
    }
    // logp_old from the rollout weights' own forward (only needed for num_iterations > 1: with
    // one update the old policy is the current one and the ratio is exactly 1).
    std::vector<std::vector<std::vector<float>>> old_logp, ref_logp;
    double extra_forward_tokens = 0, micro_tokens = 0;
    for (const MicroBatch& m : micro) micro_tokens += static_cast<double>(m.batch.B * m.batch.T);
    if (g.num_iterations > 1) {
      ASSIGN_OR_RETURN(old_logp, completion_logps(model, micro, pipe.get(), dp));
      extra_forward_tokens += micro_tokens;
    }
    if (ref) {
      ASSIGN_OR_RETURN(ref_logp, completion_logps(*ref, micro, pipe.get(), dp));
      extra_forward_tokens += micro_tokens;
    }

    // ---- updates ----
    double loss = 0, kl_sum = 0, ratio_sum = 0, entropy = 0, grad_norm = 0;
    int64_t clip_low = 0, clip_high = 0, loss_tokens = 0, entropy_count = 0;
    double trained_tokens = 0;
    bool bad = false;
    std::string bad_what;
    std::vector<MoeStats> loads = whole_model_moe_stats(config.model);
    const double lr = lr_at(config.optim, step, tc.steps);
    // The GRPO loss of micro-batch mi from its forward (on the last stage under a pipeline): sets
    // the log-prob gradients its backward starts from; returns the loss.
    auto head_loss = [&](size_t mi, Activations& acts, int64_t it) -> double {
      const MicroBatch& m = micro[mi];
      if (m.rows.empty()) {  // padding: no loss, a zero gradient
        acts.token_logp_grad.assign(acts.token_logp.size(), 0.0f);
        return 0.0;
      }
      if (it == 0) entropy += entropy_sum(acts, m.batch, V, &entropy_count);
      GrpoPiece piece;
      piece.offsets.push_back(0);
      for (size_t r = 0; r < m.rows.size(); ++r) {
        const Scored& s = batch[m.rows[r]];
        const int64_t n = m.n_completion[r], at = m.first_target[r];
        const bool keep = !(g.overlong_filter && s.sample.truncated);
        for (int64_t t = 0; t < n; ++t) {
          const float lp = acts.token_logp[at + t];
          piece.logp.push_back(lp);
          piece.logp_old.push_back(g.num_iterations > 1 ? old_logp[mi][r][t] : lp);
          if (ref) piece.logp_ref.push_back(ref_logp[mi][r][t]);
          piece.mask.push_back(keep ? 1 : 0);
        }
        piece.offsets.push_back(static_cast<int64_t>(piece.logp.size()));
        piece.advantage.push_back(s.advantage);
      }
      const GrpoLossResult res = grpo_loss(piece, g, den);
      acts.token_logp_grad.assign(acts.token_logp.size(), 0.0f);
      for (size_t r = 0, k = 0; r < m.rows.size(); ++r)
        for (int64_t t = 0; t < m.n_completion[r]; ++t, ++k) acts.token_logp_grad[m.first_target[r] + t] = res.dlogp[k];
      if (it == 0) {
        kl_sum += res.kl_sum;
        ratio_sum += res.ratio_sum;
        clip_low += res.clipped_low;
        clip_high += res.clipped_high;
        loss_tokens += res.tokens;
      }
      return res.loss;
    };
    std::unique_ptr<ModelStage> stage;
    if (pipe) stage = std::make_unique<ModelStage>(model);
    // Every rank takes part in every update, also one whose groups were all filtered out.
    for (int64_t it = 0; it < g.num_iterations && !rs.empty(); ++it) {
      optimizer.zero_grads();
      fp8_reset_step(gemms);  // amaxes of this update only (not rollouts or re-scoring forwards)
      double it_loss = 0;
      if (pipe) {
        // The step's micro-batches through the pipeline's schedule; the last stage computes the
        // loss of each as its forward ends.
        std::vector<StageMicro> mbs;
        for (const MicroBatch& m : micro)
          mbs.push_back({&m.batch, m.rows.empty() ? 0.0 : 1.0 / global_micro, !m.rows.empty() && it == 0});
        stage->begin_step(mbs, 1.0);  // CE unused: the loss is GRPO's, on the log-probs
        double head = 0;
        stage->on_head_forward = [&](int mi, Activations& acts) { head += head_loss(static_cast<size_t>(mi), acts, it); };
        ASSIGN_OR_RETURN(const Schedule sched, make_schedule(pipe->kind, pipe->p, static_cast<int>(micro.size()), pipe->v));
        if (config.parallel.overlap_grad_reduce) stage->overlap_grad_reduce(&optimizer, sched, dp.pp_rank);
        RETURN_IF_ERROR(run_pipeline(sched, dp.pp_rank, *stage, dp.pp.get()).status());
        it_loss += stage->aux + head;
        if (it == 0) add_moe_stats(loads, stage->loads);
        RETURN_IF_ERROR(reduce_tied_embedding(model, dp.pp.get()));
      }
      for (size_t mi = 0; !pipe && mi < micro.size(); ++mi) {
        const MicroBatch& m = micro[mi];
        Activations acts;
        const bool padding = m.rows.empty();
        model.forward(m.batch, acts, 1.0, nullptr, nullptr, padding ? 0.0 : 1.0 / global_micro);  // CE unused
        it_loss += acts.aux_loss;
        if (it == 0 && !padding) add_moe_stats(loads, model.moe_stats(acts));
        it_loss += head_loss(mi, acts, it);
        backward_micro_batch(model, acts, optimizer, mi + 1 == micro.size());
      }
      for (const MicroBatch& m : micro) trained_tokens += static_cast<double>(m.batch.B * m.batch.T);
      RETURN_IF_ERROR(optimizer.reduce_grads());
      if (it == 0) loss = it_loss;
      const Fp8Events fp8 = fp8_events(gemms);
      ASSIGN_OR_RETURN(const OptimStepResult update, optimizer.step(lr, !std::isfinite(it_loss) || fp8.nonfinite > 0));
      if (!update.applied) {
        bad = true;
        bad_what = fp8.nonfinite > 0 ? absl::StrCat("non-finite values (", fp8.nonfinite, ") in an fp8 operand, first in ", fp8.first)
                                     : std::string("non-finite loss or gradients");
        break;
      }
      grad_norm = update.grad_norm;
      model.mark_weights_changed();
      if (fp8_delayed) {  // the max over ranks, as one process would see over all micro-batches
        std::vector<float> amax = fp8_pending_amax(gemms);
        if (dp.comm) RETURN_IF_ERROR(dp.comm->all_reduce(amax.data(), static_cast<int64_t>(amax.size()), ReduceOp::kMax));
        fp8_commit_amax(gemms, amax);
      }
    }
    // The first update's loss and statistics over all ranks; expert loads over the global batch.
    {
      // Over every rank: the loss terms live on the last stage (aux losses on all), expert loads
      // on the stage holding their block; every stage of a pipeline decoded the same tokens.
      const bool last_stage = dp.pp_rank == dp.pp_size - 1;
      std::vector<double> st = {loss, kl_sum, ratio_sum, entropy, static_cast<double>(entropy_count),
                                static_cast<double>(clip_low + clip_high), static_cast<double>(loss_tokens),
                                last_stage ? static_cast<double>(rstats.new_tokens) : 0.0};
      for (const MoeStats& m : loads)
        for (int64_t l : m.load) st.push_back(static_cast<double>(l));
      RETURN_IF_ERROR(dp.sum_world(st.data(), static_cast<int64_t>(st.size())));
      loss = st[0], kl_sum = st[1], ratio_sum = st[2], entropy = st[3];
      entropy_count = static_cast<int64_t>(st[4]);
      clip_low = static_cast<int64_t>(st[5]), clip_high = 0;
      loss_tokens = static_cast<int64_t>(st[6]);
      rstats.new_tokens = static_cast<int64_t>(st[7]);
      size_t k = 8;
      for (MoeStats& m : loads)
        for (int64_t& l : m.load) l = static_cast<int64_t>(st[k++]);
      if (dp.world) RETURN_IF_ERROR(dp.world->all_reduce(&rstats.seconds, 1, ReduceOp::kMax));
    }
    if (bad) {
      LOG(WARN) << "step " << step << ": " << bad_what
                << (tc.nan_policy == NanPolicy::kSkip ? "; skipping the update" : "; stopping (train.nan_policy: stop)");
      if (tc.nan_policy == NanPolicy::kStop) return absl::AbortedError(absl::StrCat("step ", step, ": ", bad_what));
    } else if (config.model.moe.bias_update_rate > 0 && !loads.empty() && !rs.empty()) {
      model.update_router_biases(loads, static_cast<float>(config.model.moe.bias_update_rate));
    }
    const int64_t done = step + 1;
    if (ref && g.ref_refresh_steps > 0 && done % g.ref_refresh_steps == 0) copy_weights(model, *ref);

    // ---- metrics ----
    const double secs = step_timer.seconds();
    if (done % config.log.every == 0 || done == tc.steps) {
      double mean = 0, var = 0;
      for (double r : rs) mean += r;
      mean /= std::max<double>(rs.size(), 1);
      for (double r : rs) var += (r - mean) * (r - mean);
      const double n = static_cast<double>(rs.size());
      const double S = rs.empty() ? 1.0 : (prompt_tokens + completion_tokens) / n;
      const double flops = g.num_iterations * train_flops_per_token(config.model, static_cast<int64_t>(S)) *
                               (prompt_tokens + completion_tokens) +
                           forward_flops_per_token(config.model, static_cast<int64_t>(S)) *
                               (prompt_tokens + static_cast<double>(rstats.new_tokens) + extra_forward_tokens);
      MetricRecord r;
      r.step = done;
      r.add("loss", loss);
      r.add("reward", mean);
      r.add("reward_std", n > 1 ? std::sqrt(var / (n - 1)) : 0.0);
      r.add("accuracy", n > 0 ? correct / n : 0.0);
      for (size_t c = 0; n > 0 && c < terms.size(); ++c) r.add("reward_" + terms[c], sums[5 + c] / n);
      r.add("zero_spread", groups_seen > 0 ? static_cast<double>(zero_spread) / groups_seen : 0.0);
      if (g.dynamic_sampling) r.add("sampling_rounds", static_cast<double>(rounds));
      r.add("completion_len", n > 0 ? completion_tokens / n : 0.0);
      r.add("truncated", n > 0 ? truncated / n : 0.0);
      r.add("kl", loss_tokens > 0 ? kl_sum / loss_tokens : 0.0);
      r.add("ratio", loss_tokens > 0 ? ratio_sum / loss_tokens : 0.0);
      r.add("clip_frac", loss_tokens > 0 ? static_cast<double>(clip_low + clip_high) / loss_tokens : 0.0);
      r.add("entropy", entropy_count > 0 ? entropy / entropy_count : 0.0);
      r.add("lr", lr);
      r.add("grad_norm", grad_norm);
      r.add("rollout_tok_s", rstats.tokens_per_s());
      r.add("rollout_s", rstats.seconds);
      r.add("step_s", secs);
      r.add("mfu", flops / secs / (peak * dp.world_size()));  // every rank's share of the work against its own peak
      r.add("memory_gb", resident_memory_bytes() / 1e9);
      if (dp.comm) r.add("comm_s", optimizer.comm_seconds());
      if (bad) r.add("skipped", 1.0);
      LOG(INFO) << format_metric_line(r);
      metrics.write(r);
    }
    if (g.samples_every > 0 && done % g.samples_every == 0) {
      // The first samples_groups groups of the batch, from whichever rank holds them, written by
      // rank 0 in the order one process has them.
      std::vector<std::pair<int64_t, std::string>> lines;  // (slot, JSON line)
      for (size_t i = 0; i < batch.size(); ++i) {
        const int64_t slot = batch_slot[i / static_cast<size_t>(G)];
        if (g.samples_groups > 0 && slot >= g.samples_groups) continue;
        const Scored& s = batch[i];
        nlohmann::json comps = nlohmann::json::object();
        for (const RewardComponent& c : s.reward.components) comps[c.name] = c.value;
        nlohmann::json j = {{"step", done},
                            {"prompt_index", s.problem->index},
                            {"sample", s.sample.sample_index},
                            {"prompt", s.problem->prompt_text},
                            {"completion", s.sample.text},
                            {"reward", s.reward.total},
                            {"rewards", comps},
                            {"advantage", s.advantage},
                            {"correct", s.correct},
                            {"truncated", s.sample.truncated}};
        lines.emplace_back(slot, j.dump());
      }
      RETURN_IF_ERROR(gather_lines(dp, lines));
      if (samples_out.is_open()) {
        for (const auto& [slot, line] : lines) samples_out << line << "\n";
        samples_out.flush();
      }
    }
    const bool last = done == tc.steps;
    if ((tc.eval_every > 0 && done % tc.eval_every == 0) || last) RETURN_IF_ERROR(run_eval(done));
    if ((config.checkpoint.every > 0 && done % config.checkpoint.every == 0) || last) RETURN_IF_ERROR(save(done));
    ++steps_this_process;
    if (options.stop_after > 0 && steps_this_process >= options.stop_after) {
      LOG(INFO) << "stopping after " << steps_this_process << " steps (--stop-after)";
      break;
    }
  }
  LOG(INFO) << "done: results in " << run_dir << " (metrics.jsonl, samples.jsonl, checkpoints/)";
  return OkStatus();
}

}  // namespace strata
