// The pipeline executor (DESIGN.md "The parallel layout"): runs one rank's op list of a Schedule
// (parallel/schedule.h) against the model through the small PipelineStage interface, which the
// trainer implements over its Transformer chunks (parallel/ cannot include model/). Activations go
// forward and their gradients back as non-blocking sends; a recv is waited for just before the
// op that consumes it, so a rank runs exactly the order the schedule lists (the validated order,
// free of deadlock) and records what it ran with wall-clock times: its trace.
//
//   stage.forward(micro, chunk, input (N, C) or null, output (N, C) or null)
//   stage.backward_input(micro, chunk, d_output (N, C) or null, d_input (N, C) or null, whole)
//   stage.backward_weight(micro, chunk)
//
// N x C = stage.boundary_elems(micro): the hidden state of one micro-batch at a stage boundary.
// The first virtual stage gets no input (it embeds tokens), the last writes no output (it
// computes the loss); `whole` asks the backward to include the weight gradient (schedules
// without W ops).
//
// Also here: the forward-only schedule evaluation and rollouts use, and the split of a model's
// blocks into stages balanced by cost.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "parallel/communicator.h"
#include "parallel/schedule.h"

namespace strata {

class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  // Floats one micro-batch's hidden state holds at a stage boundary.
  virtual int64_t boundary_elems(int micro) const = 0;
  virtual void forward(int micro, int chunk, const float* input, float* output) = 0;
  virtual void backward_input(int micro, int chunk, const float* d_output, float* d_input, bool whole) = 0;
  virtual void backward_weight(int micro, int chunk) = 0;
  // Micro-batch chunks whose forward ran and whose input gradient has not: the activation sets the
  // stage holds in full now (the executor records the most it saw).
  virtual int live_activations() const = 0;
  // Called between ops: lets communication in flight elsewhere (data-parallel buckets) progress.
  virtual void poll() {}
  // The executor hands the stage a function that moves the pipeline's messages in flight (MPI
  // progresses only inside MPI calls); the stage calls it between layers while it computes.
  // Null when the run ends.
  virtual void set_progress(std::function<void()> fn) { (void)fn; }
};

// One op as run: when it started and ended (seconds since the run began). For a recv, the time
// until its message had arrived; for a send, the time to post it.
struct PipeTraceEntry {
  PipeOp op;
  double start = 0, end = 0;
};

struct PipelineRun {
  std::vector<PipeTraceEntry> trace;  // every op of this rank's list, in the order run
  int activation_peak = 0;            // most live_activations() seen after any op
  double seconds = 0;                 // the whole run, until every send completed
  double compute_s = 0;               // inside F, B and W
  double wait_s = 0;                  // waiting for messages (recvs, and sends at the end)
  int64_t bytes_sent = 0;
};

// Runs rank `rank`'s ops of `s` (the pipeline group `pp` has s.p ranks; pp may be null when
// s.p == 1). Errors: a timed-out message (naming it), or a schedule this rank cannot run.
StatusOr<PipelineRun> run_pipeline(const Schedule& s, int rank, PipelineStage& stage, Communicator* pp);

// The forward half of a schedule with m micro-batches over p ranks and v chunks: every F in
// micro-batch order with its activation messages, no B or W (evaluation, reference log-probs).
Schedule forward_only_schedule(int p, int m, int v = 1);

// Splits n blocks of costs block_cost (n,) into `stages` contiguous runs of at least one block,
// minimising the most expensive stage; extra_first / extra_last are the costs the first stage
// (embedding) and the last (final norm, head and loss) carry besides their blocks. Returns the
// block count of each stage. Ties go to the earliest split, so the layout is deterministic.
std::vector<int64_t> balance_stages(const std::vector<double>& block_cost, int64_t stages, double extra_first,
                                    double extra_last);

}  // namespace strata
