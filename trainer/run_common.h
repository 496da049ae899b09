// What the two training loops share (pretrain/SFT in train.cc, GRPO in grpo_train.cc): the run
// directory and its logs, the refusals of features that have not landed, initial weights
// (random, hf:DIR or ckpt:PATH), resuming, and the checkpoint contents (parameters, optimizer
// moments, FP8 amax histories, plus whatever extra tensors a loop adds).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader.h"
#include "kernels/precision/scaling.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"
#include "parallel/communicator.h"
#include "trainer/checkpoint.h"
#include "trainer/experiment_config.h"
#include "trainer/metrics.h"
#include "trainer/train.h"

namespace strata {

std::string run_dir_of(const ExperimentConfig& c);
std::string checkpoint_root_of(const ExperimentConfig& c);
// Features a config can name that this build cannot run yet (Unimplemented, exit 3).
Status refuse_unlanded(const ExperimentConfig& c);
// The parallel groups of a run (DESIGN.md "The parallel layout"): the data-parallel group of
// this rank's pipeline stage, rank r of which takes micro-batches m with m % size == r of every
// step's global batch (pretrain / SFT) or its share of the prompts (GRPO); the expert groups
// carved out of it; the pipeline group (pp > 1). Gradients are reduced by the
// DistributedOptimizer built over them.
struct DataParallel {
  int size = 1, rank = 0;           // the data-parallel group
  Communicator* comm = nullptr;     // the data-parallel group; null in a single process
  Communicator* world = nullptr;    // every rank of the job (checkpoints, job-wide sums); null alone
  // Expert parallelism (parallel.ep > 1): this rank's expert group (all-to-all dispatch) and
  // expert-data-parallel group (expert gradients); null otherwise.
  int64_t ep_size = 1, ep_rank = 0, edp_size = 1, edp_rank = 0;
  std::unique_ptr<Communicator> ep, edp;
  // Pipeline parallelism (parallel.pp > 1): this rank's stage and the group of its pipeline.
  int pp_size = 1, pp_rank = 0;
  std::unique_ptr<Communicator> pp;
  ExpertShard experts() const { return {ep_size, ep_rank}; }
  int world_size() const { return world ? world->size() : 1; }
  bool root() const { return world == nullptr || world->rank() == 0; }  // writes metrics and samples
  // Joins MPI's world when the process runs under mpirun/srun; validates the layout.
  static StatusOr<DataParallel> join(const ExperimentConfig& c);
  // Sums `data` (n,) over the data-parallel group / the whole job in place; nothing alone.
  Status sum(double* data, int64_t n) const;
  Status sum_world(double* data, int64_t n) const;

 private:
  std::unique_ptr<Communicator> world_owned_, dp_owned_;
};

// AdamW's view of the model's parameters; `decay` follows ParamKind and OptimConfig. A tied
// head's copy of the embedding on a stage without the embedding is marked OptimTensor::copy.
std::vector<OptimTensor> optimizer_tensors(Transformer& model, const OptimConfig& config);

// Backward of one micro-batch. For the last micro-batch this rank runs in an update, the
// optimizer learns which gradients are final as each layer finishes (their bucket reductions
// start while the rest of the backward runs) and its reductions are polled between layers.
void backward_micro_batch(Transformer& model, Activations& acts, DistributedOptimizer& optimizer, bool last);

// Zero expert loads for every MoE block of the whole model (every stage's blocks), in block order.
std::vector<MoeStats> whole_model_moe_stats(const ModelConfig& config);
// Adds `part` (some blocks' loads) into `total` (whole_model_moe_stats's layout), by block index.
void add_moe_stats(std::vector<MoeStats>& total, const std::vector<MoeStats>& part);

// MoE metrics of one step: per block its busiest expert's load over the mean (moe<b>_max_load)
// and dropped choices; over all blocks tokens per expert (moe_load_min / max) and the largest
// coefficient of variation of a block's loads (moe_load_cv), all over the global batch; with
// expert parallelism this rank's all-to-all time (a2a_s) and bytes sent (a2a_mb).
void add_moe_metrics(MetricRecord& r, const std::vector<MoeStats>& loads, const MoeCommStats& a2a, bool expert_parallel);

// Creates the run directory, points this rank's log file (rank-XXXXX.log) at it and saves the
// resolved config (rank 0).
StatusOr<std::string> open_run_dir(const ExperimentConfig& c);

// data.tokenizer, checked against model.vocab_size.
StatusOr<std::unique_ptr<Tokenizer>> load_run_tokenizer(const ExperimentConfig& c);

// A parameter as a checkpoint tensor named `name`: the whole tensor, or with expert parallelism
// the rows of the global tensor this rank holds. read_param reads it back the same way.
CheckpointTensor param_tensor(const std::string& name, const ParamRef& p);
Status read_param(const Checkpoint& ckpt, const std::string& name, const ParamRef& p);

Batch to_model_batch(const TokenBatch& tb, int64_t vocab);
std::vector<int64_t> shape_of(const Tensor& t);

// Random init from the seed, then model.init_from: hf:DIR (Hugging Face) or ckpt:PATH (a Strata
// checkpoint, run or step directory: its weights only, not its optimizer state).
Status init_model_weights(Transformer& model, const ModelConfig& config, uint64_t seed);

// The checkpoint to resume from ("" = start fresh): checkpoint.resume / --resume, auto = latest.
StatusOr<std::string> resume_dir_of(const ExperimentConfig& c, const TrainOptions& options);
// Copies a checkpoint's parameters (and this rank's part of the optimizer state when given) into
// the model, and the FP8 amax histories (a checkpoint of another precision has none: they start
// empty). The checkpoint may come from any dp, with or without ZeRO-1.
Status restore_checkpoint(const Checkpoint& ckpt, Transformer& model, DistributedOptimizer* optimizer);

// This rank's tensors of a training checkpoint: parameters, optimizer state, FP8 histories (kept
// alive by `fp8_state`), then `extra`. Tensors every rank holds alike are divided among the ranks
// (each written once, the writing spread over the group); ZeRO-1 shards are each rank's own.
std::vector<CheckpointTensor> run_checkpoint_tensors(Transformer& model, DistributedOptimizer& optimizer,
                                                     std::vector<Fp8StateTensor>& fp8_state,
                                                     const std::vector<CheckpointTensor>& extra,
                                                     const DataParallel& dp);
CheckpointTensor whole_tensor(const std::string& name, const Tensor& t);

}  // namespace strata
