// Pipeline parallelism in the training loop (DESIGN.md "The parallel layout"): which blocks each
// stage holds, the schedule a step runs, and ModelStage, the PipelineStage (parallel/pipeline.h)
// the executor drives over this rank's Transformer.
//
// Stage layout: parallel.pipeline.layout gives the blocks of each virtual stage (pp x
// virtual_stages entries); otherwise blocks are split by training FLOPs per token, the last
// stage also paying for the head and loss (balance_stages). Virtual stage s sits on pipeline rank
// s % pp as its chunk s / pp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "core/status.h"
#include "model/generate.h"
#include "model/transformer.h"
#include "optim/distributed_optimizer.h"
#include "parallel/pipeline.h"
#include "parallel/schedule.h"
#include "trainer/experiment_config.h"

namespace strata {

struct PipelinePlan {
  int p = 1, v = 1, m = 1;        // stages, chunks per stage, micro-batches per step per pipeline
  ScheduleKind kind = ScheduleKind::k1F1B;
  std::vector<int64_t> blocks;    // (p * v,) blocks of each virtual stage
  bool balanced = false;          // blocks chosen by cost (no parallel.pipeline.layout)
  Schedule schedule;              // validated

  // This pipeline rank's part of the model.
  StageSpec stage(int pp_rank) const;
  // "[0,3) [3,6) [6,8)": each virtual stage's blocks.
  std::string describe() const;
};

// The pipeline of a run at data-parallel size dp (every training mode): checks the config
// (schedule, micro-batches, layout, blocks per stage) and builds the schedule. Errors name the
// config key.
StatusOr<PipelinePlan> make_pipeline_plan(const ExperimentConfig& c, int64_t dp);

// The stage a training step runs: the model's forward and backward per (micro-batch, chunk) on
// the step's micro-batches, accumulating gradients into the parameters' gradient tensors (the
// data-parallel buckets), the loss of the last stage, auxiliary losses and expert loads.
struct StageMicro {
  const Batch* batch = nullptr;
  double aux_weight = 1.0;  // scales the auxiliary losses (1 / micro-batches of the global batch)
  bool counted = true;      // false: padding, left out of the expert loads
};

class ModelStage : public PipelineStage {
 public:
  explicit ModelStage(Transformer& model) : model_(model) {}

  // A training step over `micro` (this pipeline's micro-batches, in order). denominator: target
  // tokens of the global batch. keep = false: forward only, nothing kept (evaluation, log-probs).
  void begin_step(std::vector<StageMicro> micro, double denominator, bool keep = true);
  // Data parallelism: once a chunk's last gradient op of the step (its last B, or W when the
  // schedule splits W off) has run, its gradients are final and their bucket reductions may
  // start while the pipeline drains (a tied embedding waits for reduce_tied_embedding). Call
  // after begin_step, with the schedule this rank is about to run.
  void overlap_grad_reduce(DistributedOptimizer* optimizer, const Schedule& s, int rank);
  void poll() override;
  void set_progress(std::function<void()> fn) override { model_.set_progress(std::move(fn)); }
  // Called on the last stage after a micro-batch's forward, before its backward: a loss defined
  // on the log-probs (GRPO) reads acts.token_logp and sets acts.token_logp_grad here.
  std::function<void(int micro, Activations& acts)> on_head_forward;

  int64_t boundary_elems(int micro) const override;
  void forward(int micro, int chunk, const float* input, float* output) override;
  void backward_input(int micro, int chunk, const float* d_output, float* d_input, bool whole) override;
  void backward_weight(int micro, int chunk) override;
  int live_activations() const override { return live_; }

  // After the run: the summed loss the last stage computed (sum over micro-batches of
  // loss_sum / denominator), the summed cross-entropy (loss_sum) and auxiliary losses, the expert
  // loads of this stage's blocks and the largest activation bytes one micro-batch chunk kept.
  double loss = 0, loss_sum = 0, aux = 0;
  std::vector<MoeStats> loads;
  int64_t act_bytes = 0;
  // Seconds and counts of each op kind run (the simulator's F, B, W costs).
  double f_s = 0, b_s = 0, w_s = 0;
  int64_t f_n = 0, b_n = 0, w_n = 0;

 private:
  Transformer& model_;
  std::vector<StageMicro> micro_;
  double denominator_ = 1;
  bool keep_ = true;  // false: forward only (evaluation), nothing kept
  std::map<std::tuple<int, int>, Activations> acts_;  // by (micro, chunk), until its W
  int live_ = 0;      // activation sets between their F and their B
  DistributedOptimizer* optimizer_ = nullptr;
  std::map<int, int> last_grad_micro_;  // chunk -> the micro-batch whose B (or W) finishes it
  bool split_w_ = false;
  void report_chunk(int chunk);
};

// Decoding through the pipeline (GRPO rollouts and evaluation under pp): a decode step's rows are
// split into up to 2p micro-batches that flow through the stages in the forward-only schedule (while
// stage 1 decodes micro-batch 0, stage 0 decodes micro-batch 1); the last stage samples and shares
// the tokens over the pipeline, so every stage keeps the same completions and stops together.
class PipelineDecoder : public Decoder {
 public:
  PipelineDecoder(Transformer& model, const PipelinePlan& plan, int pp_rank, Communicator* pp)
      : model_(model), plan_(plan), pp_rank_(pp_rank), pp_(pp) {}
  const ModelConfig& config() const override { return model_.config(); }
  void start(int64_t B, int64_t capacity) override;
  Tensor step(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
              const std::vector<int32_t>& key_start, int64_t B, int64_t T_new) override;
  void share(std::vector<int32_t>& tokens) override;

 private:
  Transformer& model_;
  const PipelinePlan& plan_;
  int pp_rank_;
  Communicator* pp_;
  std::vector<int64_t> row_begin_;            // (m + 1,) rows of each micro-batch
  std::vector<std::vector<KVCache>> caches_;  // (m,) this stage's caches of each micro-batch
};

// A tied embedding whose head sits on another stage: the first stage (embedding) and the last
// (the head's copy) each hold part of its gradient; both end with the sum, bitwise alike. pp: the
// pipeline group; a no-op for other stages and untied models.
Status reduce_tied_embedding(Transformer& model, Communicator* pp);

}  // namespace strata
