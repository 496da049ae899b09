// ParallelConfig: how the world of MPI ranks is split (DESIGN.md "The parallel layout").
// world = pp x dp; expert parallelism is carved out of dp (groups of ep ranks, each holding
// n_experts / ep experts). dp = -1 infers dp from the world size at launch. ParallelDims
// (parallel/dims.h) turns this into rank groups.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config_schema.h"

namespace strata {

enum class PipelineSchedule { kGpipe, k1F1B, kInterleaved1F1B, kZbH1, kDualPipeV };

struct PipelineConfig {
  PipelineSchedule schedule = PipelineSchedule::k1F1B;
  int64_t micro_batches = 0;
  int64_t virtual_stages = 1;
  std::vector<int64_t> layout;

  template <class V>
  void visit(V& v) {
    v.choice("schedule", schedule, "pipeline schedule",
             Choices<PipelineSchedule>{{"gpipe", PipelineSchedule::kGpipe},
                                       {"1f1b", PipelineSchedule::k1F1B},
                                       {"interleaved_1f1b", PipelineSchedule::kInterleaved1F1B},
                                       {"zb_h1", PipelineSchedule::kZbH1},
                                       {"dualpipev", PipelineSchedule::kDualPipeV}});
    v.field("micro_batches", micro_batches, "micro-batches per step per pipeline; 0 = from data batch sizes",
            Range::at_least(0));
    v.field("virtual_stages", virtual_stages, "model chunks per rank (interleaved_1f1b)", Range::at_least(1));
    v.field("layout", layout, "blocks per stage, e.g. [3, 3, 2]; empty = balanced by cost");
  }
  void validate(ConfigChecker& c) const;
};

struct ParallelConfig {
  int64_t dp = -1;
  int64_t pp = 1;
  int64_t ep = 1;
  std::string order = "ep,edp,pp";
  int64_t zero = 0;
  double bucket_mb = 25.0;
  bool overlap_grad_reduce = true;
  bool deterministic = false;
  bool dispatch_fp8 = false;
  double timeout_s = 600.0;
  PipelineConfig pipeline;

  template <class V>
  void visit(V& v) {
    v.field("dp", dp, "data-parallel ranks per pipeline stage; -1 = world size / pp", Range::at_least(-1));
    v.field("pp", pp, "pipeline stages", Range::at_least(1));
    v.field("ep", ep, "expert-parallel group size (divides dp and moe.n_experts)", Range::at_least(1));
    v.field("order", order, "rank order, fastest-varying first: a permutation of ep,edp,pp");
    v.field("zero", zero, "ZeRO stage: 0 = replicated optimizer state, 1 = sharded over dp", Range::between(0, 1));
    v.field("bucket_mb", bucket_mb, "gradient all-reduce bucket size in MiB", Range::above(0));
    v.field("overlap_grad_reduce", overlap_grad_reduce, "start bucket all-reduces while backward still runs");
    v.field("deterministic", deterministic, "fixed-order reductions: bitwise identical results on any layout");
    v.field("dispatch_fp8", dispatch_fp8, "send MoE dispatch payloads in fp8 (combine stays in higher precision)");
    v.field("timeout_s", timeout_s, "seconds a collective may wait before the job aborts naming missing ranks",
            Range::above(0));
    v.section("pipeline", pipeline, "pipeline parallelism");
  }
  void validate(ConfigChecker& c) const;
};

// Splits "ep,edp,pp" into its names; false when it is not a permutation of exactly those three.
bool parse_rank_order(const std::string& order, std::vector<std::string>* names);

}  // namespace strata
