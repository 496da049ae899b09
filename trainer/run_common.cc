#include "trainer/run_common.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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
    return absl::UnimplementedError("train.device: cuda lands with the CUDA backend issue (#11)");
  }
  if (c.parallel.pp > 1 || c.parallel.ep > 1 || c.parallel.zero > 0) {
    return absl::UnimplementedError(
        "parallel layouts beyond data parallelism (pp > 1, ep > 1, zero: 1) land with issues #7-#9");
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
    dp.comm = mpi_world_communicator(c.parallel.timeout_s);
    world = dp.comm->size();
  }
  ASSIGN_OR_RETURN(ParallelDims dims, ParallelDims::make(c.parallel, world));
  const int64_t per_rank = c.data.micro_batch_size * dims.dp();
  if (c.data.global_batch_size % per_rank != 0) {
    return absl::InvalidArgumentError(absl::StrCat("data.global_batch_size: ", c.data.global_batch_size,
                                                   " is not a multiple of micro_batch_size x dp = ",
                                                   c.data.micro_batch_size, " x ", dims.dp()));
  }
  if (world == 1) {
    dp.comm.reset();
    return dp;
  }
  dp.size = dp.comm->size();
  dp.rank = dp.comm->rank();
  LOG(INFO) << "data parallel: " << dims.describe();
  return dp;
}

Status DataParallel::sum_gradients(const std::vector<OptimTensor>& tensors) const {
  if (!comm) return OkStatus();
  int64_t n = 0;
  for (const OptimTensor& t : tensors) n += t.grad->numel();
  std::vector<float> flat(static_cast<size_t>(n));
  int64_t at = 0;
  for (const OptimTensor& t : tensors) {
    copy_f32(flat.data() + at, t.grad->f32(), t.grad->numel());
    at += t.grad->numel();
  }
  RETURN_IF_ERROR(comm->all_reduce(flat.data(), n, ReduceOp::kSum));
  at = 0;
  for (const OptimTensor& t : tensors) {
    copy_f32(t.grad->f32(), flat.data() + at, t.grad->numel());
    at += t.grad->numel();
  }
  return OkStatus();
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

std::vector<CheckpointTensor> run_checkpoint_tensors(Transformer& model, AdamW& optimizer,
                                                     std::vector<Fp8StateTensor>& fp8_state,
                                                     const std::vector<CheckpointTensor>& extra) {
  std::vector<CheckpointTensor> tensors = checkpoint_tensors(model, &optimizer);
  fp8_state = fp8_state_tensors(model.linear_gemms());
  for (const Fp8StateTensor& s : fp8_state) tensors.push_back(whole_tensor(s.name, s.value));
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  return tensors;
}

Status restore_checkpoint(const Checkpoint& ckpt, Transformer& model, AdamW* optimizer) {
  for (CheckpointTensor& t : checkpoint_tensors(model, optimizer)) {
    Tensor* dst = const_cast<Tensor*>(t.tensor);
    if (!ckpt.has_tensor(t.name)) return absl::NotFoundError(absl::StrCat("checkpoint has no tensor ", t.name));
    if (ckpt.global_shape(t.name) != t.global_shape) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint tensor ", t.name, " has another shape than the model"));
    }
    if (dst->dtype() == DType::kF32) {
      RETURN_IF_ERROR(ckpt.read_flat(t.name, 0, dst->numel(), dst->f32()));
    } else {  // bf16 moments: read as f32, round back (exact: the values are bf16)
      std::vector<float> tmp(static_cast<size_t>(dst->numel()));
      RETURN_IF_ERROR(ckpt.read_flat(t.name, 0, dst->numel(), tmp.data()));
      f32_to_bf16_n(tmp.data(), dst->data<uint16_t>(), tmp.size());
    }
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
