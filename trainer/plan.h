// `strata plan`: what a config would put on each rank, computed from the config alone (no weights
// allocated, no compute): the parallel layout, the parameters, each rank's bytes for parameters,
// gradients, optimizer state and activations, and the bytes it sends per optimizer step.
//
// The memory model mirrors the code that allocates (model/*.cc, kernels/precision/linear.cc,
// optim/, parallel/grad_buckets.cc, trainer/train.cc) and lives in plan.cc, whose header comment
// has every formula. Its headline figure, MemoryPlan::allocator_peak, predicts the peak of
// tensor_memory_stats() (all Tensor storage) that training logs as `tensor_peak_mb`;
// tests/trainer/plan_test.cc holds it to 5% of the measured peak. Memory outside Tensor storage
// (fp8 cached activation codes, MoE routing vectors, LinearGemm's low-precision weight copies) is
// reported beside it, not inside it.
//
// Not modelled: pipeline and expert parallelism (pp > 1, ep > 1: they land with issues #8 and #9),
// the activations and rollouts of train.mode grpo, std::vector scratch inside kernels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "trainer/experiment_config.h"

namespace strata {

// One parameter tensor, in Transformer::params() order (the whole model: one stage).
struct PlannedParam {
  std::string name;     // global name, as Transformer::params() has it
  int64_t numel = 0;
  bool trained = true;  // false: the router's balancing bias (no gradient, no optimizer state)
  bool expert = false;  // a routed-expert tensor: n_experts / ep of it per rank, reduced over edp
};
// ep > 1: the routed-expert tensors hold n_experts / ep experts (Moe::build with an ExpertShard).
std::vector<PlannedParam> plan_parameters(const ModelConfig& model, int64_t ep = 1);

// One micro-batch (rows x seq_len tokens) through the forward and backward of the whole model.
struct ActivationPlan {
  int64_t saved_tensor = 0;  // Tensor bytes the forward keeps for the backward
  int64_t saved_host = 0;    // the same outside Tensor storage: fp8 cached input codes, MoE routing vectors
  int64_t peak_tensor = 0;   // the most Tensor bytes alive at once during forward + backward
  // saved_tensor + saved_host equals activation_bytes() of the forward's Activations.
  int64_t saved() const { return saved_tensor + saved_host; }
};
// per_segment_weight_grads: each block's weight-gradient GEMMs run as soon as the block's backward
// is done (a GradsReadyFn, as on a step's last micro-batch), instead of all queued until
// backward_weight (the earlier micro-batches of a step).
ActivationPlan plan_activations(const ExperimentConfig& config, int64_t rows, int64_t seq_len,
                                bool per_segment_weight_grads);

// Bytes on one rank. The first group is Tensor storage; allocator_peak is their predicted peak.
struct MemoryPlan {
  int64_t parameters = 0;         // fp32 values of every parameter
  int64_t gradients = 0;          // fp32 gradients: the parameters' own (dp 1), or the padded buckets
  int64_t optimizer = 0;          // AdamW moments m and v (this rank's shard under ZeRO-1)
  int64_t grad_shards = 0;        // ZeRO-1: the fp32 reduced-gradient shard of every bucket
  int64_t reference_model = 0;    // GRPO with beta > 0: the frozen policy (values and unused grads)
  int64_t activations_saved = 0;  // Tensor bytes one micro-batch's forward keeps
  int64_t activations_peak = 0;   // Tensor bytes one micro-batch's forward + backward holds at most
  int64_t startup_peak = 0;       // dp > 1: while gradients move into buckets (both alive)
  int64_t allocator_peak = 0;     // max(startup_peak, persistent() + activations_peak)
  // Outside Tensor storage (std::vector): in `total` only.
  int64_t activations_host = 0;   // fp8 cached input codes and MoE routing vectors of one micro-batch
  int64_t lowp_weights = 0;       // LinearGemm's bf16/fp8 weight copies (dequantised, 4 bytes each)
  int64_t total = 0;              // allocator_peak + activations_host + lowp_weights

  int64_t persistent() const { return parameters + gradients + optimizer + grad_shards + reference_model; }
};

// Bytes one rank sends in one optimizer step for one purpose.
struct CommItem {
  std::string what;
  int64_t bytes = 0;
};

struct TrainingPlan {
  std::string layout;        // ParallelDims::describe()
  int64_t world = 1, dp = 1, pp = 1, ep = 1;
  int64_t zero = 0;          // the ZeRO stage that runs: parallel.zero when dp > 1, else 0
  std::string refused;       // why `strata train` refuses this config today ("" = it trains)
  std::string schedule;      // pp > 1: the stages, the schedule's ops, timeline and bubble (parallel/schedule.h)
  std::string model;         // "qwen3_moe, 4 blocks (4 MoE), 1.87M parameters"
  int64_t model_params = 0, trained_params = 0;
  int64_t rows = 0, seq_len = 0;         // one micro-batch
  int64_t micro_batches_per_rank = 0;    // per optimizer step
  std::vector<int64_t> bucket_elements;  // dp > 1: padded size of every gradient bucket, in fill order
  bool activations_modelled = true;      // false for train.mode grpo
  MemoryPlan memory;                     // the rank that needs the most
  int64_t memory_rank = 0;               // its dp rank (ZeRO-1 shards differ by rank)
  int64_t memory_stage = 0;              // pp > 1: its pipeline stage
  std::vector<CommItem> comm;            // per rank per step; empty for dp 1
  int64_t comm_bytes = 0;
  std::vector<std::string> notes;        // assumptions behind the figures
};

// The plan of `config` on `world` ranks. Errors are the layout's ("parallel.dp: ...") and the
// batch split's, as `strata train` reports them.
StatusOr<TrainingPlan> make_training_plan(const ExperimentConfig& config, int64_t world);

// The plan as the readable text `strata plan` prints: layout first, then memory and
// communication per rank (1 MB = 1e6 bytes, as tensor_peak_mb).
std::string format_training_plan(const TrainingPlan& plan);

// "812 B", "12.3 KB", "81.72 MB", "1.50 GB" (powers of 1000).
std::string format_bytes(int64_t bytes);

}  // namespace strata
