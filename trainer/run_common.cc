#include "trainer/run_common.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/device.h"
#include "core/log.h"
#include "kernels/ops.h"
#include "model/hf.h"
#include "parallel/dims.h"
#include "parallel/mpi_env.h"
#include "trainer/config_yaml.h"

namespace strata {

namespace fs = std::filesystem;

std::string run_dir_of(const ExperimentConfig& c) { return (fs::path(c.train.out_dir) / c.train.name).string(); }
std::string checkpoint_root_of(const ExperimentConfig& c) {
  return c.checkpoint.dir.empty() ? (fs::path(run_dir_of(c)) / "checkpoints").string() : c.checkpoint.dir;
}

Status refuse_unlanded(const ExperimentConfig& c) {
  if (c.log.tensorboard) {
    return absl::UnimplementedError("log.tensorboard: TensorBoard event files are not written yet; "
                                    "metrics.jsonl and scripts/plot_metrics.py cover the curves");
  }
  if (c.train.device == DeviceChoice::kCuda) {
    // What runs on a GPU so far: pretrain and SFT of a dense model in one process (#11).
    const char* why = nullptr;
    if (c.train.mode == TrainMode::kGrpo) {
      why = "GRPO runs on the CPU only so far (its rollouts decode with a KV cache, not wired for GPUs)";
    } else if (c.model.is_moe()) {
      why = "MoE models run on the CPU only so far (their routing bookkeeping is host code)";
    } else if (c.parallel.dp > 1 || c.parallel.pp > 1 || c.parallel.ep > 1) {
      why = "parallel layouts (dp, pp or ep > 1) run on the CPU only so far (NCCL buckets, stages and dispatch are not wired for GPUs)";
    } else if (c.precision.mode == PrecisionMode::kFp8 && c.precision.fp8.recipe == Fp8Recipe::kTensorwiseDelayed) {
      why = "precision.fp8.recipe: tensorwise_delayed runs on the CPU only so far (blockwise runs on GPUs)";
    } else if (c.precision.mode == PrecisionMode::kFp8 && c.precision.fp8.cache_activations) {
      why = "precision.fp8.cache_activations runs on the CPU only so far";
    }
    if (why != nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "train.device: cuda: ", why, "; pretrain and SFT of a dense model in one process run on a GPU (#11)"));
    }
    if (!built_with_cuda()) {
      return absl::UnimplementedError("train.device: cuda: this build has no CUDA (configure with -DSTRATA_CUDA=ON)");
    }
  }
  if (c.parallel.deterministic) {
    return absl::UnimplementedError(
        "parallel.deterministic: fixed-order (bitwise layout-invariant) reductions are not implemented yet; layouts "
        "match one process within the measured noise floor");
  }
  return OkStatus();
}

StatusOr<std::string> open_run_dir(const ExperimentConfig& c) {
  const std::string run_dir = run_dir_of(c);
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(run_dir, ": cannot create run directory: ", ec.message()));
  LogLevel level = LogLevel::kInfo;
  parse_log_level(c.log.level, &level);
  set_log_level(level);
  set_log_file((fs::path(run_dir) / absl::StrFormat("rank-%05d.log", log_rank())).string());
  if (log_rank() == 0) {
    std::ofstream out(fs::path(run_dir) / "config.yaml");
    out << experiment_config_to_yaml(c);
  }
  LOG(INFO) << "run directory: " << run_dir;
  return run_dir;
}

StatusOr<std::unique_ptr<Tokenizer>> load_run_tokenizer(const ExperimentConfig& c) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_tokenizer(c.data.tokenizer));
  if (tok->vocab_size() > c.model.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("data.tokenizer ", tok->name(), " has ", tok->vocab_size(),
                                                   " tokens but model.vocab_size is ", c.model.vocab_size));
  }
  return tok;
}

StatusOr<DataParallel> DataParallel::join(const ExperimentConfig& c) {
  DataParallel dp;
  int64_t world = 1;
  if (MpiEnv::active()) {
    dp.world_owned_ = mpi_world_communicator(c.parallel.timeout_s);
    world = dp.world_owned_->size();
  }
  ASSIGN_OR_RETURN(ParallelDims dims, ParallelDims::make(c.parallel, world));
  const int64_t per_rank = c.data.micro_batch_size * dims.dp();
  if (c.train.mode == TrainMode::kGrpo) {  // GRPO's batch: grpo.prompts_per_step groups, whole on one rank each
    if (c.grpo.prompts_per_step % dims.dp() != 0) {
      return absl::InvalidArgumentError(absl::StrCat("grpo.prompts_per_step: ", c.grpo.prompts_per_step,
                                                     " is not a multiple of dp = ", dims.dp(),
                                                     " (each rank samples whole groups)"));
    }
  } else if (c.data.global_batch_size % per_rank != 0) {
    return absl::InvalidArgumentError(absl::StrCat("data.global_batch_size: ", c.data.global_batch_size,
                                                   " is not a multiple of micro_batch_size x dp = ",
                                                   c.data.micro_batch_size, " x ", dims.dp()));
  }
  if (world == 1) {
    dp.world_owned_.reset();
    return dp;
  }
  Communicator* w = dp.world_owned_.get();
  dp.world = w;
  const int64_t me = w->rank();
  const RankCoord coord = dims.coord(me);
  dp.size = static_cast<int>(dims.dp());
  dp.rank = static_cast<int>(dims.dp_rank(me));
  // Every rank splits in the same order: its pipeline and data-parallel groups, then the expert
  // groups out of the world (their ranks share a stage).
  if (dims.pp() > 1) {
    dp.pp_size = static_cast<int>(dims.pp());
    dp.pp_rank = static_cast<int>(coord.pp);
    ASSIGN_OR_RETURN(dp.pp, w->split(dims.group(me, ParallelGroup::kPp), "pp"));
    ASSIGN_OR_RETURN(dp.dp_owned_, w->split(dims.group(me, ParallelGroup::kDp), "dp"));
    if (dims.dp() > 1) dp.comm = dp.dp_owned_.get();
  } else {
    dp.comm = w;
  }
  if (dims.ep() > 1) {
    dp.ep_size = dims.ep();
    dp.ep_rank = coord.ep;
    dp.edp_rank = coord.edp;
    dp.edp_size = dims.edp();
    ASSIGN_OR_RETURN(dp.ep, w->split(dims.group(me, ParallelGroup::kEp), "ep"));
    ASSIGN_OR_RETURN(dp.edp, w->split(dims.group(me, ParallelGroup::kEdp), "edp"));
  }
  LOG(INFO) << "parallel layout: " << dims.describe();
  return dp;
}

Status DataParallel::sum(double* data, int64_t n) const {
  if (!comm) return OkStatus();
  return comm->all_reduce(data, n, ReduceOp::kSum);
}

Status DataParallel::sum_world(double* data, int64_t n) const {
  if (!world) return OkStatus();
  return world->all_reduce(data, n, ReduceOp::kSum);
}

namespace {

bool decays(ParamKind kind, const OptimConfig& c) {
  switch (kind) {
    case ParamKind::kMatrix: return true;
    case ParamKind::kEmbedding: return c.decay_embeddings;
    case ParamKind::kNorm:
    case ParamKind::kBias: return c.decay_norms_biases;
    case ParamKind::kRouterBias: return false;
  }
  return false;
}

}  // namespace

std::vector<OptimTensor> optimizer_tensors(Transformer& model, const OptimConfig& config) {
  std::vector<OptimTensor> out;
  for (const ParamRef& p : model.params()) {
    if (!p.param->grad.defined()) continue;  // balancing biases are not trained by gradient
    out.push_back({p.name, &p.param->value, &p.param->grad, decays(p.kind, config), p.expert, p.row_begin,
                   p.global_rows});
    out.back().copy = p.name == "embed" && !model.stage().has_embedding;
  }
  return out;
}

void backward_micro_batch(Transformer& model, Activations& acts, DistributedOptimizer& optimizer, bool last) {
  if (!last) {
    model.backward(acts);
    return;
  }
  const Transformer::GradsReadyFn ready = [&optimizer](const std::vector<Param*>& params) {
    for (const Param* p : params)
      if (p->grad.defined()) optimizer.grads_ready(p->grad.f32());
    optimizer.poll();
  };
  model.backward(acts, nullptr, nullptr, &ready);
}

std::vector<MoeStats> whole_model_moe_stats(const ModelConfig& config) {
  std::vector<MoeStats> out;
  for (int64_t l = 0; l < config.n_layers; ++l)
    if (config.is_moe_block(l)) out.push_back({l, std::vector<int64_t>(static_cast<size_t>(config.moe.n_experts), 0), 0});
  return out;
}

void add_moe_stats(std::vector<MoeStats>& total, const std::vector<MoeStats>& part) {
  for (const MoeStats& s : part)
    for (MoeStats& t : total)
      if (t.block == s.block) {
        for (size_t e = 0; e < s.load.size(); ++e) t.load[e] += s.load[e];
        t.dropped += s.dropped;
      }
}

void add_moe_metrics(MetricRecord& r, const std::vector<MoeStats>& loads, const MoeCommStats& a2a, bool expert_parallel) {
  if (loads.empty()) return;
  double lo = std::numeric_limits<double>::infinity(), hi = 0, cv_max = 0;
  int64_t dropped = 0;
  for (const MoeStats& s : loads) {
    double sum = 0, sq = 0, mx = 0;
    for (int64_t l : s.load) {
      const double x = static_cast<double>(l);
      sum += x;
      sq += x * x;
      mx = std::max(mx, x);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    const double n = static_cast<double>(s.load.size()), mean = sum / n;
    const double var = std::max(sq / n - mean * mean, 0.0);
    if (mean > 0) cv_max = std::max(cv_max, std::sqrt(var) / mean);
    r.add(absl::StrCat("moe", s.block, "_max_load"), mean > 0 ? mx / mean : 0.0);
    if (s.dropped > 0) r.add(absl::StrCat("moe", s.block, "_dropped"), static_cast<double>(s.dropped));
    dropped += s.dropped;
  }
  r.add("moe_load_min", lo);
  r.add("moe_load_max", hi);
  r.add("moe_load_cv", cv_max);
  if (dropped > 0) r.add("moe_dropped", static_cast<double>(dropped));
  if (expert_parallel) {
    r.add("a2a_s", a2a.seconds);
    r.add("a2a_mb", (a2a.dispatch_bytes + a2a.combine_bytes + a2a.backward_bytes) / 1e6);
    r.add("a2a_dispatch_bytes", static_cast<double>(a2a.dispatch_bytes));
    r.add("a2a_slots", static_cast<double>(a2a.slots_sent));
  }
}

Batch to_model_batch(const TokenBatch& tb, int64_t vocab) {
  Batch b;
  b.B = tb.B;
  b.T = tb.T;
  b.tokens = tb.tokens;
  b.targets = tb.targets;
  b.finalize(vocab);
  return b;
}

std::vector<int64_t> shape_of(const Tensor& t) {
  std::vector<int64_t> s;
  for (int i = 0; i < t.shape().rank(); ++i) s.push_back(t.shape()[i]);
  return s;
}

CheckpointTensor param_tensor(const std::string& name, const ParamRef& p) {
  CheckpointTensor t = whole_tensor(name, p.param->value);
  if (p.sharded()) {  // an expert shard: its rows of the whole tensor
    t.global_shape[0] = p.global_rows;
    t.offset[0] = p.row_begin;
    t.expert_shard = true;
  }
  return t;
}

Status read_param(const Checkpoint& ckpt, const std::string& name, const ParamRef& p) {
  std::vector<int64_t> shape = shape_of(p.param->value);
  const int64_t n = p.param->value.numel();
  int64_t begin = 0;
  if (p.global_rows > 0) {  // an expert shard reads its rows
    begin = p.row_begin * (n / shape[0]);
    shape[0] = p.global_rows;
  }
  if (!ckpt.has_tensor(name)) return absl::NotFoundError(absl::StrCat("checkpoint has no tensor ", name));
  if (ckpt.global_shape(name) != shape) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint tensor ", name, " has another shape than the model"));
  }
  return ckpt.read_flat(name, begin, n, p.param->value.f32());
}

CheckpointTensor whole_tensor(const std::string& name, const Tensor& t) {
  CheckpointTensor ct;
  ct.name = name;
  ct.tensor = &t;
  ct.global_shape = shape_of(t);
  ct.offset.assign(ct.global_shape.size(), 0);
  return ct;
}

Status init_model_weights(Transformer& model, const ModelConfig& config, uint64_t seed) {
  model.init(seed);
  const std::string& from = config.init_from;
  if (from.rfind("hf:", 0) == 0) {
    RETURN_IF_ERROR(load_hf_weights(model, from.substr(3)));
  } else if (from.rfind("ckpt:", 0) == 0) {
    std::string target = from.substr(5);
    if (fs::exists(fs::path(target) / "checkpoints" / "latest")) target = (fs::path(target) / "checkpoints").string();
    ASSIGN_OR_RETURN(std::string dir, resolve_checkpoint(target));
    ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(dir));
    RETURN_IF_ERROR(annotate(restore_checkpoint(ckpt, model, nullptr), absl::StrCat("model.init_from ", from)));
  } else {
    return OkStatus();
  }
  LOG(INFO) << "initialised from " << from;
  return OkStatus();
}

StatusOr<std::string> resume_dir_of(const ExperimentConfig& c, const TrainOptions& options) {
  const std::string ckpt_root = checkpoint_root_of(c);
  const std::string resume = options.resume.empty() ? c.checkpoint.resume : options.resume;
  if (resume == "auto") {
    if (!fs::exists(fs::path(ckpt_root) / "latest")) return std::string();
    return resolve_checkpoint(ckpt_root);
  }
  if (resume == "never") return std::string();
  return resolve_checkpoint(resume);
}

std::vector<CheckpointTensor> run_checkpoint_tensors(Transformer& model, DistributedOptimizer& optimizer,
                                                     std::vector<Fp8StateTensor>& fp8_state,
                                                     const std::vector<CheckpointTensor>& extra,
                                                     const DataParallel& dp) {
  std::vector<CheckpointTensor> all;
  // A tied head's copy of the embedding (pipeline parallelism) is the first stage's to write.
  std::vector<std::string> copies;
  for (const OptimTensor& t : optimizer.tensors())
    if (t.copy) copies.insert(copies.end(), {t.name, "optim.m." + t.name, "optim.v." + t.name});
  auto is_copy = [&](const std::string& name) { return std::find(copies.begin(), copies.end(), name) != copies.end(); };
  for (const ParamRef& p : model.params())
    if (!is_copy(p.name)) all.push_back(param_tensor(p.name, p));
  for (const OptimStateSlice& s : optimizer.state_slices()) {
    if (is_copy(s.name)) continue;
    CheckpointTensor t;
    t.name = s.name;
    t.tensor = s.tensor;
    t.global_shape = s.global_shape;
    if (s.flat) {
      t.flat_range = true;
      t.flat_begin = s.flat_begin;
    } else {
      t.offset.assign(s.global_shape.size(), 0);
      if (s.expert) t.offset[0] = s.row_begin;
    }
    t.replicated = !s.flat;
    t.expert_shard = s.expert && s.global_shape[0] != s.tensor->shape()[0];
    all.push_back(t);
  }
  fp8_state = fp8_state_tensors(model.linear_gemms());
  for (const Fp8StateTensor& s : fp8_state) {
    all.push_back(whole_tensor(s.name, s.value));
    // A routed expert's GEMMs are named "layers.L.moe.experts.E.w_*" (Moe::build): only the
    // expert's own ranks hold their state.
    all.back().expert_shard = dp.ep_size > 1 && s.name.find(".moe.experts.") != std::string::npos;
  }
  all.insert(all.end(), extra.begin(), extra.end());
  if (dp.size == 1) return all;
  // Every rank of a group holds its replicated tensors alike: the i-th of them is written by the
  // group's rank i % size (dense: the dp group; expert shards: the edp group of their holders).
  std::vector<CheckpointTensor> mine;
  int64_t k_dense = 0, k_expert = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    CheckpointTensor& t = all[i];
    if (t.flat_range) {
      mine.push_back(t);
      continue;
    }
    t.replicated = true;
    const bool write = t.expert_shard ? k_expert++ % dp.edp_size == dp.edp_rank : k_dense++ % dp.size == dp.rank;
    if (write) mine.push_back(t);
  }
  return mine;
}

Status restore_checkpoint(const Checkpoint& ckpt, Transformer& model, DistributedOptimizer* optimizer) {
  auto check_shape = [&](const std::string& name, const std::vector<int64_t>& shape) -> Status {
    if (!ckpt.has_tensor(name)) return absl::NotFoundError(absl::StrCat("checkpoint has no tensor ", name));
    if (ckpt.global_shape(name) != shape) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint tensor ", name, " has another shape than the model"));
    }
    return OkStatus();
  };
  for (const ParamRef& p : model.params()) RETURN_IF_ERROR(read_param(ckpt, p.name, p));
  if (optimizer != nullptr) {
    for (const OptimStateSlice& s : optimizer->state_slices()) RETURN_IF_ERROR(check_shape(s.name, s.global_shape));
    RETURN_IF_ERROR(optimizer->load_state([&](const std::string& name, int64_t begin, int64_t count, float* out) {
      return ckpt.read_flat(name, begin, count, out);
    }));
  }
  model.mark_weights_changed();
  // FP8 amax histories: a checkpoint from another precision has none; those start empty.
  int64_t missing = 0;
  RETURN_IF_ERROR(fp8_load_state(model.linear_gemms(), [&](const std::string& name) -> StatusOr<Tensor> {
    if (!ckpt.has_tensor(name)) {
      ++missing;
      return Tensor();
    }
    std::vector<int64_t> shape = ckpt.global_shape(name);
    Shape s;
    for (int64_t d : shape) s.push_back(d);
    Tensor t = Tensor::zeros(s, DType::kF32);
    RETURN_IF_ERROR(ckpt.read_flat(name, 0, t.numel(), t.f32()));
    return t;
  }));
  if (missing > 0) LOG(WARN) << "checkpoint has no fp8 amax history for " << missing << " GEMMs; they start empty";
  return OkStatus();
}

}  // namespace strata
