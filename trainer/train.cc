#include "trainer/train.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/device.h"
#include "core/log.h"
#include "core/timer.h"
#include "kernels/ops.h"
#ifdef STRATA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"  // measure_bf16_peak_flops
#endif
#include "kernels/precision/scaling.h"
#include "model/flops.h"
#include "model/hf.h"
#include "optim/schedule.h"
#include "trainer/config_yaml.h"
#include "trainer/fault_injection.h"
#include "trainer/grpo_train.h"
#include "trainer/pipeline_stage.h"
#include "trainer/run_common.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// Held-out loss over `batches` (no gradients kept). Under pipeline parallelism the batches flow
// through the stages forward only and the last stage's sum is shared over the pipeline.
StatusOr<double> evaluate_loss(Transformer& model, const std::vector<Batch>& batches, const PipelinePlan* pipe,
                               const DataParallel& dp) {
  double sum = 0;
  int64_t n = 0;
  for (const Batch& b : batches) n += b.n_targets();
  if (pipe == nullptr) {
    for (const Batch& b : batches) {
      Activations acts;
      model.forward(b, acts, 1.0);
      sum += acts.loss_sum;
    }
  } else {
    ModelStage stage(model);
    std::vector<StageMicro> micro;
    for (const Batch& b : batches) micro.push_back({&b, 1.0, false});
    stage.begin_step(micro, 1.0, /*keep=*/false);
    const Schedule s = forward_only_schedule(pipe->p, static_cast<int>(batches.size()), pipe->v);
    RETURN_IF_ERROR(run_pipeline(s, dp.pp_rank, stage, dp.pp.get()).status());
    sum = stage.loss_sum;
    RETURN_IF_ERROR(dp.pp->all_reduce(&sum, 1, ReduceOp::kSum));
  }
  return n > 0 ? sum / static_cast<double>(n) : 0.0;
}

}  // namespace

Status run_training(const ExperimentConfig& config, const TrainOptions& options) {
  const TrainConfig& tc = config.train;
  if (tc.mode == TrainMode::kGrpo) return run_grpo(config, options);
  RETURN_IF_ERROR(refuse_unlanded(config));
  ASSIGN_OR_RETURN(DataParallel dp, DataParallel::join(config));
  // train.device: cuda (a dense model in one process: refuse_unlanded has said what else is not
  // wired): parameters, moments and every forward and backward live on cuda:0.
  const bool on_gpu = config.train.device == DeviceChoice::kCuda;
  if (on_gpu && dp.world_size() > 1) {
    return absl::UnimplementedError(absl::StrCat("train.device: cuda: one process only so far (this job has ",
                                                 dp.world_size(), " ranks; NCCL-parallel GPU training is #11's)"));
  }
  if (on_gpu && cuda_device_count() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("train.device: cuda: ", cuda_unavailable_reason()));
  }
  ASSIGN_OR_RETURN(const std::string run_dir, open_run_dir(config));

  // Data.
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, load_run_tokenizer(config));
  const uint64_t seed = static_cast<uint64_t>(tc.seed);
  ASSIGN_OR_RETURN(std::unique_ptr<DataLoader> loader, DataLoader::create(config.data, *tokenizer, seed, Split::kTrain));
  std::unique_ptr<DataLoader> eval_loader;
  {
    auto el = DataLoader::create(config.data, *tokenizer, seed, Split::kEval);
    if (el.ok()) eval_loader = *std::move(el);
  }

  // Model and optimizer: this rank's pipeline stage (the whole model without pp) and experts.
  std::unique_ptr<PipelinePlan> pipe;
  if (config.parallel.pp > 1) {
    ASSIGN_OR_RETURN(PipelinePlan plan, make_pipeline_plan(config, dp.size));
    pipe = std::make_unique<PipelinePlan>(std::move(plan));
    LOG(INFO) << "pipeline: " << schedule_name(pipe->kind) << ", " << pipe->m << " micro-batches, blocks per stage "
              << pipe->describe() << (pipe->balanced ? " (balanced by cost)" : " (parallel.pipeline.layout)");
  }
  Transformer model(config.model, config.precision, pipe ? pipe->stage(dp.pp_rank) : StageSpec{}, dp.experts());
  model.set_expert_group(dp.ep.get());
  model.set_dispatch_fp8(config.parallel.dispatch_fp8);
  RETURN_IF_ERROR(init_model_weights(model, config.model, seed));
  DistributedOptimizer optimizer(config.optim, config.parallel, optimizer_tensors(model, config.optim), dp.comm,
                                 dp.edp.get(), dp.ep.get(), dp.pp.get());
  std::string where;
  if (dp.ep_size > 1 || pipe) {
    where = absl::StrCat(" on this rank (", pipe ? absl::StrCat("stage ", dp.pp_rank, " of ", dp.pp_size) : "",
                         pipe && dp.ep_size > 1 ? ", " : "",
                         dp.ep_size > 1 ? absl::StrFormat("experts split %d ways", dp.ep_size) : "", ")");
  }
  LOG(INFO) << absl::StrFormat("model: %s, %.2fM parameters%s (%.2fM active matmul per token), %d blocks",
                               hf_model_type(config.model.arch), count_elements(model.params()) / 1e6, where,
                               active_matmul_params(config.model) / 1e6, config.model.n_layers);

  // Resume.
  int64_t start = 0;
  const std::string ckpt_root = checkpoint_root_of(config);
  ASSIGN_OR_RETURN(const std::string resume_dir, resume_dir_of(config, options));
  if (!resume_dir.empty()) {
    ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(resume_dir));
    RETURN_IF_ERROR(restore_checkpoint(ckpt, model, &optimizer));
    const auto& state = ckpt.meta().trainer_state;
    start = ckpt.meta().step;
    if (state.contains("optimizer_step")) optimizer.set_step_count(state["optimizer_step"].get<int64_t>());
    LOG(INFO) << "resumed from " << resume_dir << " at step " << start;
  }
  if (on_gpu) {  // after initialising or loading, which write parameters and moments on the CPU
    model.to_device(Device::cuda());
    optimizer.to_device(Device::cuda());
    LOG(INFO) << "training on cuda:0";
  }

  MetricsWriter metrics;
  if (config.log.metrics_jsonl && dp.root()) metrics.open((fs::path(run_dir) / "metrics.jsonl").string(), start);

  const int64_t G = config.data.global_batch_size, mb = config.data.micro_batch_size, T = config.data.seq_len;
  const int64_t accum = G / mb;
  // MFU's denominator: the CPU's sgemm rate, or the GPU's bf16 tensor-core rate, measured here.
  double peak = 0.0;
  if (on_gpu) {
#ifdef STRATA_WITH_CUDA
    peak = cuda::measure_bf16_peak_flops();
#endif
  } else {
    peak = measure_sgemm_peak_flops();
  }
  const double flops_per_token = train_flops_per_token(config.model, T);

  std::vector<Batch> eval_batches;
  if (eval_loader) {
    const int64_t n = std::min<int64_t>(eval_loader->size(), 256);
    for (int64_t first = 0; first < n; first += mb) {
      eval_batches.push_back(to_model_batch(eval_loader->make_batch(eval_loader->sample_ids(first, std::min(mb, n - first)), T),
                                            config.model.vocab_size));
    }
  }

  const std::vector<LinearGemm*> gemms = model.linear_gemms();
  const bool fp8_delayed = config.precision.mode == PrecisionMode::kFp8 &&
                           config.precision.fp8.recipe == Fp8Recipe::kTensorwiseDelayed;
  auto save = [&](int64_t step) -> Status {
    CheckpointMeta meta;
    meta.step = step;
    meta.config_yaml = experiment_config_to_yaml(config);
    meta.layout = {{"world", dp.world_size()}, {"dp", dp.size},        {"pp", dp.pp_size},
                   {"ep", dp.ep_size},      {"zero", optimizer.sharded() ? 1 : 0}};
    meta.trainer_state = {{"step", step},
                          {"samples_consumed", step * G},
                          {"optimizer_step", optimizer.step_count()},
                          {"seed", tc.seed}};
    Timer t;
    std::vector<Fp8StateTensor> fp8_state;
    RETURN_IF_ERROR(save_checkpoint(ckpt_root, meta, run_checkpoint_tensors(model, optimizer, fp8_state, {}, dp),
                                    config.checkpoint.keep_last, nullptr, dp.world));
    LOG(INFO) << absl::StrFormat("checkpoint step %d saved in %.2fs", step, t.seconds());
    return OkStatus();
  };

  std::unique_ptr<ModelStage> stage;
  if (pipe) stage = std::make_unique<ModelStage>(model);
  ScheduleSim pipe_sim;  // the simulator's prediction at this step's measured op costs
  double pipe_bubble = 0, pipe_wait = 0;

  Timer window;
  int64_t window_tokens = 0, steps_this_process = 0;
  for (int64_t step = start; step < tc.steps; ++step) {
    RETURN_IF_ERROR(maybe_inject_fault(step));
    Timer step_timer;
    // The global batch of this step, as micro-batches; the loss denominator counts all of it.
    std::vector<int64_t> ids = loader->sample_ids(step * G, G);
    std::vector<Batch> micro;
    int64_t targets = 0;
    for (int64_t m = 0; m < accum; ++m) {
      std::vector<int64_t> part(ids.begin() + m * mb, ids.begin() + (m + 1) * mb);
      micro.push_back(to_model_batch(loader->make_batch(part, T), config.model.vocab_size));
      targets += micro.back().n_targets();
    }
    const double denom = static_cast<double>(std::max<int64_t>(targets, 1));
    optimizer.zero_grads();
    fp8_reset_step(gemms);  // eval forwards since the last step recorded amaxes too
    double loss = 0.0, aux = 0.0;
    int64_t act_bytes = 0;
    std::vector<MoeStats> loads = whole_model_moe_stats(config.model);
    model.take_moe_comm_stats();  // count this step's all-to-alls only (not evaluation forwards)
    // Data parallelism: this rank's share of the micro-batches.
    std::vector<int64_t> mine;
    for (int64_t m = dp.rank; m < accum; m += dp.size) mine.push_back(m);
    PipelineRun pipe_run;
    if (pipe) {
      // Pipeline parallelism: the schedule runs them through the stages; gradients accumulate
      // into the buckets, reduced once the pipeline has drained.
      std::vector<StageMicro> batches;
      for (int64_t m : mine) batches.push_back({&micro[m], 1.0 / static_cast<double>(accum), true});
      stage->begin_step(batches, denom);
      if (config.parallel.overlap_grad_reduce) stage->overlap_grad_reduce(&optimizer, pipe->schedule, dp.pp_rank);
      ASSIGN_OR_RETURN(pipe_run, run_pipeline(pipe->schedule, dp.pp_rank, *stage, dp.pp.get()));
      loss = stage->loss;
      aux = stage->aux;
      act_bytes = stage->act_bytes;
      add_moe_stats(loads, stage->loads);
      RETURN_IF_ERROR(reduce_tied_embedding(model, dp.pp.get()));
    } else {
      // The backward of this rank's last micro-batch starts the gradient reductions layer by layer.
      for (int64_t m : mine) {
        Batch& b = micro[m];
        Activations acts;
        loss += model.forward(b, acts, denom, nullptr, nullptr, 1.0 / static_cast<double>(accum));
        act_bytes = std::max(act_bytes, activation_bytes(acts));
        aux += acts.aux_loss;
        add_moe_stats(loads, model.moe_stats(acts));
        backward_micro_batch(model, acts, optimizer, m == mine.back());
      }
    }
    RETURN_IF_ERROR(optimizer.reduce_grads());
    // Losses and expert loads of every rank's micro-batches (each already divided by the global
    // target count) and stages, so every rank logs and balances on the whole global batch.
    Fp8Events fp8 = fp8_events(gemms);
    if (dp.world) {
      std::vector<double> sums = {loss, aux, static_cast<double>(fp8.nonfinite)};
      for (const MoeStats& s : loads) {
        for (int64_t l : s.load) sums.push_back(static_cast<double>(l));
        sums.push_back(static_cast<double>(s.dropped));
      }
      if (pipe) {  // the simulator's inputs: seconds and counts of F, B, W ops; idle share
        sums.insert(sums.end(), {stage->f_s, static_cast<double>(stage->f_n), stage->b_s, static_cast<double>(stage->b_n),
                                 stage->w_s, static_cast<double>(stage->w_n),
                                 1.0 - pipe_run.compute_s / std::max(pipe_run.seconds, 1e-12), pipe_run.wait_s});
      }
      RETURN_IF_ERROR(dp.sum_world(sums.data(), static_cast<int64_t>(sums.size())));
      loss = sums[0];
      aux = sums[1];
      fp8.nonfinite = static_cast<int64_t>(sums[2]);
      size_t k = 3;
      for (MoeStats& s : loads) {
        for (int64_t& l : s.load) l = static_cast<int64_t>(sums[k++]);
        s.dropped = static_cast<int64_t>(sums[k++]);
      }
      if (pipe) {
        const double F = sums[k] / std::max(sums[k + 1], 1.0), B = sums[k + 2] / std::max(sums[k + 3], 1.0),
                     W = sums[k + 4] / std::max(sums[k + 5], 1.0);
        // Per whole stage (a chunk is 1/v of it); without W ops the B op is the whole backward.
        pipe_sim = simulate_schedule(pipe->schedule, F * pipe->v, B * pipe->v, pipe->schedule.split_w ? W * pipe->v : 0.0);
        pipe_bubble = sums[k + 6] / dp.world_size();
        pipe_wait = sums[k + 7] / dp.world_size();
      }
      if (fp8.nonfinite > 0 && fp8.first.empty()) fp8.first = "another rank's GEMM (see its log)";
    }
    // FP8 quantisation never saturates NaN/Inf away: it poisons the tile, and names it here. The
    // optimizer decides over all ranks (a NaN in any rank's gradient shard skips everywhere).
    const double lr = lr_at(config.optim, step, tc.steps);
    ASSIGN_OR_RETURN(const OptimStepResult update, optimizer.step(lr, !std::isfinite(loss) || fp8.nonfinite > 0));
    const bool bad = !update.applied;
    const double grad_norm = update.grad_norm;
    if (bad) {
      const std::string what =
          fp8.nonfinite > 0 ? absl::StrCat("non-finite values (", fp8.nonfinite, ") in an fp8 operand, first in ", fp8.first)
                            : std::string("non-finite loss or gradients");
      LOG(WARN) << "step " << step << ": " << what
                << (tc.nan_policy == NanPolicy::kSkip ? "; skipping the update" : "; stopping (train.nan_policy: stop)");
      if (tc.nan_policy == NanPolicy::kStop) return absl::AbortedError(absl::StrCat("step ", step, ": ", what));
    } else {
      model.mark_weights_changed();
      // Delayed scaling: this step's amaxes (max over micro-batches and ranks) enter the
      // histories only when the step is applied.
      if (fp8_delayed) {
        std::vector<float> amax = fp8_pending_amax(gemms);
        if (dp.comm) RETURN_IF_ERROR(dp.comm->all_reduce(amax.data(), static_cast<int64_t>(amax.size()), ReduceOp::kMax));
        fp8_commit_amax(gemms, amax);
      }
      if (config.model.moe.bias_update_rate > 0) {
        model.update_router_biases(loads, static_cast<float>(config.model.moe.bias_update_rate));
      }
    }
    const MoeCommStats a2a = model.take_moe_comm_stats();
    const int64_t step_tokens = G * T;
    window_tokens += step_tokens;
    ++steps_this_process;
    const int64_t done = step + 1;

    if (done % config.log.every == 0 || done == tc.steps) {
      const double secs = window.seconds();
      const double tps = window_tokens / std::max(secs, 1e-9);
      MetricRecord r;
      r.step = done;
      r.add("loss", loss);
      if (config.model.is_moe() && config.model.moe.aux_loss != AuxLoss::kNone) r.add("aux_loss", aux);
      r.add("lr", lr);
      r.add("grad_norm", grad_norm);
      r.add("tokens_per_s", tps);
      r.add("mfu", tps * flops_per_token / (peak * dp.world_size()));  // the job's tokens against every rank's peak
      r.add("step_s", step_timer.seconds());
      r.add("memory_gb", resident_memory_bytes() / 1e9);
      r.add("tensor_peak_mb", tensor_memory_stats(model.device()).peak_bytes / 1e6);
      r.add("optim_mb", optimizer.state_bytes() / 1e6);
      if (optimizer.sharded()) r.add("grad_shard_mb", optimizer.grad_shard_bytes() / 1e6);
      if (dp.comm) {
        r.add("comm_s", optimizer.comm_seconds());
        r.add("buckets_overlapped", static_cast<double>(optimizer.buckets_overlapped()) /
                                        std::max<int64_t>(optimizer.bucket_count(), 1));
      }
      r.add("act_mb", act_bytes / 1e6);
      if (pipe) {
        r.add("pp_bubble", pipe_bubble);           // measured idle share of the step's pipeline run
        r.add("pp_bubble_sim", pipe_sim.bubble_ratio);  // the schedule simulated at the measured F, B, W
        r.add("pp_wait_s", pipe_wait);
        r.add("pp_act_peak", static_cast<double>(pipe_run.activation_peak));
      }
      if (fp8_delayed) r.add("fp8_saturated", static_cast<double>(fp8.saturated));
      if (bad) r.add("skipped", 1.0);
      add_moe_metrics(r, loads, a2a, config.parallel.ep > 1);
      LOG(INFO) << format_metric_line(r);
      metrics.write(r);
      window.reset();
      window_tokens = 0;
    }
    const bool last = done == tc.steps;
    if (!eval_batches.empty() && ((tc.eval_every > 0 && done % tc.eval_every == 0) || last)) {
      MetricRecord e;
      e.kind = "eval";
      e.step = done;
      ASSIGN_OR_RETURN(const double eval_loss, evaluate_loss(model, eval_batches, pipe.get(), dp));
      e.add("eval_loss", eval_loss);
      LOG(INFO) << format_metric_line(e);
      metrics.write(e);
    }
    if ((config.checkpoint.every > 0 && done % config.checkpoint.every == 0) || last) RETURN_IF_ERROR(save(done));
    if (options.stop_after > 0 && steps_this_process >= options.stop_after) {
      LOG(INFO) << "stopping after " << steps_this_process << " steps (--stop-after)";
      break;
    }
  }
  LOG(INFO) << "done: results in " << run_dir << " (metrics.jsonl, checkpoints/)";
  return OkStatus();
}

StatusOr<LoadedModel> load_model_for_inference(const std::string& path, const std::string& tokenizer_override) {
  LoadedModel out;
  if (path.rfind("hf:", 0) == 0) {
    const std::string dir = path.substr(3);
    ASSIGN_OR_RETURN(out.config.model, load_hf_config(dir));
    out.model = std::make_unique<Transformer>(out.config.model, PrecisionConfig{});
    RETURN_IF_ERROR(load_hf_weights(*out.model, dir));
    if (!tokenizer_override.empty()) {
      ASSIGN_OR_RETURN(out.tokenizer, load_tokenizer(tokenizer_override));
    } else if (fs::exists(fs::path(dir) / "tokenizer.json")) {
      ASSIGN_OR_RETURN(out.tokenizer, load_tokenizer((fs::path(dir) / "tokenizer.json").string()));
    }
    return out;
  }
  std::string target = path;
  // A run directory holds checkpoints/; a checkpoint root holds latest.
  if (fs::exists(fs::path(path) / "checkpoints" / "latest")) target = (fs::path(path) / "checkpoints").string();
  ASSIGN_OR_RETURN(std::string dir, resolve_checkpoint(target));
  ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(dir));
  ASSIGN_OR_RETURN(out.config, parse_experiment_config(ckpt.meta().config_yaml, dir + "/manifest.json (config)"));
  out.step = ckpt.meta().step;
  out.model = std::make_unique<Transformer>(out.config.model, out.config.precision);
  out.model->set_dispatch_fp8(out.config.parallel.dispatch_fp8);  // the function it was trained as
  RETURN_IF_ERROR(restore_checkpoint(ckpt, *out.model, nullptr));
  ASSIGN_OR_RETURN(out.tokenizer,
                   load_tokenizer(tokenizer_override.empty() ? out.config.data.tokenizer : tokenizer_override));
  return out;
}

}  // namespace strata
