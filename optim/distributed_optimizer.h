// DistributedOptimizer: AdamW over a data-parallel group (DESIGN.md "The parallel layout"). It
// owns the gradient reduction (parallel/grad_buckets.h), the collective skip decision, global-norm
// clipping and, with parallel.zero: 1, the sharding of the optimizer state (ZeRO-1). Training
// loops use it the same way in a single process, where it is plain AdamW.
//
// One update:
//   zero_grads();
//   for each micro-batch this rank runs: forward, backward (the last one reports finished
//       gradients through grads_ready() and calls poll() between layers, so bucket reductions
//       overlap the rest of the backward);
//   reduce_grads();                 // every rank: the global gradient (or its shard under ZeRO-1)
//   step(lr, local_bad);            // collective: skip on NaN/Inf anywhere, clip, AdamW, gather
//
// Plain dp (zero 0): gradients are all-reduced in buckets; every rank holds all moments and
// updates all parameters identically. ZeRO-1: gradients are reduce-scattered; each bucket splits
// into `dp` equal shards, rank r keeps moments for shard r only, updates those elements and the
// parameters are all-gathered (through the bucket buffers, which hold gradients no longer needed).
// The arithmetic per element is AdamW's either way, so ZeRO-1 equals plain dp up to the order of
// the gradient sums inside the reduction.
//
// Expert parallelism: routed-expert tensors (OptimTensor::expert) hold this rank's experts only.
// Their gradients are reduced over the expert-data-parallel group (edp: the ranks holding the same
// experts) in buckets of their own, and the global norm adds their squares summed over the expert
// group (ep). With ZeRO-1 only the dense tensors are sharded over dp; expert tensors keep their
// (already 1/ep) state whole.
//
// Pipeline parallelism: each stage's ranks hold other tensors. The skip decision and the global
// norm are summed over the pipeline group (pp) too; a tensor marked OptimTensor::copy (a tied
// head's embedding copy) is left out of the norm on the stage holding the copy.
//
// Checkpoints: state_slices() names every moment with its global name and where this rank's part
// sits: the whole tensor (zero 0, written once: `replicated`), or a flat element range of it
// (zero 1), so a checkpoint resumes on any dp with or without ZeRO.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "optim/adamw.h"
#include "optim/config.h"
#include "parallel/communicator.h"
#include "parallel/config.h"
#include "parallel/grad_buckets.h"

namespace strata {

// This rank's piece of one optimizer-state tensor.
struct OptimStateSlice {
  std::string name;                   // "optim.m.<param>", "optim.v.<param>"
  const Tensor* tensor = nullptr;     // f32 or bf16 (moments_dtype)
  std::vector<int64_t> global_shape;  // the parameter's shape
  bool flat = false;                  // a flat range [flat_begin, flat_begin + numel) (ZeRO-1)
  int64_t flat_begin = 0;
  bool replicated = false;            // identical on every dp rank (zero 0)
  bool expert = false;                // rows [row_begin, ...) of an expert tensor, identical over edp
  int64_t row_begin = 0;
};

struct OptimStepResult {
  bool applied = false;    // false: skipped because some rank saw NaN/Inf
  double grad_norm = 0.0;  // global L2 norm before clipping (0 when skipped)
};

class DistributedOptimizer {
 public:
  // tensors: every trained tensor, in model parameter order (gradients fill buckets in the reverse
  // order, that of backward). dp: the data-parallel group; null or size 1 = a single process. The
  // gradients of `tensors` are moved into bucket buffers when their group has several ranks.
  // edp, ep: the expert-data-parallel and expert groups (expert parallelism only); pp: the
  // pipeline group (pipeline parallelism only).
  DistributedOptimizer(const OptimConfig& optim, const ParallelConfig& parallel, std::vector<OptimTensor> tensors,
                       Communicator* dp, Communicator* edp = nullptr, Communicator* ep = nullptr,
                       Communicator* pp = nullptr);

  void zero_grads();
  // The backward of the last micro-batch of this update reports gradients that are final: their
  // buckets' reductions may start now (parallel.overlap_grad_reduce). `grad` is the gradient
  // tensor's data pointer; others are ignored.
  void grads_ready(const float* grad);
  void poll();
  // Completes the gradient reduction. Every rank calls it once per update, even one that ran no
  // micro-batch.
  Status reduce_grads();
  // Collective. Skips the update on every rank when any rank has local_bad (non-finite loss, an
  // fp8 event) or a non-finite gradient; otherwise clips to optim.grad_clip with the global norm,
  // runs AdamW and (ZeRO-1) all-gathers the parameters.
  StatusOr<OptimStepResult> step(double lr, bool local_bad);

  // One process only (no buckets, no shards): moves AdamW's moments to `device`, where the
  // model's parameters already are (train.device: cuda).
  void to_device(Device device);
  int64_t step_count() const { return adam_->step_count(); }
  void set_step_count(int64_t t) { adam_->set_step_count(t); }
  bool sharded() const { return zero_; }
  // Bytes of AdamW moments this rank holds: all of them, or its 1/dp shard under ZeRO-1.
  int64_t state_bytes() const;
  // ZeRO-1: bytes of the reduced-gradient shards (one per bucket) AdamW reads; 0 otherwise.
  int64_t grad_shard_bytes() const;
  // Gradient reductions started while backward was still running, in the last update, of all.
  int64_t buckets_overlapped() const {
    return (buckets_ ? buckets_->started_early() : 0) + (expert_buckets_ ? expert_buckets_->started_early() : 0);
  }
  int64_t bucket_count() const {
    return (buckets_ ? static_cast<int64_t>(buckets_->buckets().size()) : 0) +
           (expert_buckets_ ? static_cast<int64_t>(expert_buckets_->buckets().size()) : 0);
  }
  // Seconds spent inside reduce_grads() and step()'s collectives in the last update (waiting,
  // not overlapped).
  double comm_seconds() const { return comm_seconds_; }

  std::vector<OptimStateSlice> state_slices();
  // Loads this rank's part of every moment: read(name, begin, count, out) reads elements
  // [begin, begin + count) of the flattened global tensor `name` as f32.
  using FlatReader = std::function<Status(const std::string& name, int64_t begin, int64_t count, float* out)>;
  Status load_state(const FlatReader& read);

  const std::vector<OptimTensor>& tensors() const { return tensors_; }

 private:
  struct Piece {        // ZeRO-1: this rank's range of one tensor
    size_t tensor = 0;  // index into tensors_
    int64_t begin = 0;  // element range inside the tensor
    int64_t count = 0;
    size_t bucket = 0;     // the bucket holding it
    int64_t shard_at = 0;  // its position in that bucket's shard
  };

  OptimConfig optim_;
  bool zero_ = false, overlap_ = true;
  Communicator* dp_ = nullptr;  // null in a single process
  Communicator* ep_ = nullptr;  // the expert group, with expert parallelism
  Communicator* pp_ = nullptr;  // the pipeline group, with pipeline parallelism
  std::vector<OptimTensor> tensors_;
  std::unique_ptr<GradBuckets> buckets_;         // dense gradients over dp (expert ones too without ep)
  std::unique_ptr<GradBuckets> expert_buckets_;  // expert gradients over edp (ep > 1, edp > 1)
  std::vector<size_t> bucketed_;       // index into tensors_ of each gradient in buckets_, in fill order
  std::vector<Piece> pieces_;          // ZeRO-1, in AdamW tensor order
  std::vector<Tensor> piece_values_;   // views of the parameters
  std::vector<Tensor> piece_grads_;    // views of the bucket shards
  std::vector<OptimTensor> updated_;   // what AdamW updates: tensors_ or the pieces
  std::unique_ptr<AdamW> adam_;
  double comm_seconds_ = 0.0;
};

}  // namespace strata
