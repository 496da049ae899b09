#include "trainer/pipeline_stage.h"

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/timer.h"
#include "kernels/ops.h"
#include "model/flops.h"

namespace strata {

namespace {

ScheduleKind schedule_kind(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::kGpipe: return ScheduleKind::kGpipe;
    case PipelineSchedule::k1F1B: return ScheduleKind::k1F1B;
    case PipelineSchedule::kInterleaved1F1B: return ScheduleKind::kInterleaved1F1B;
    case PipelineSchedule::kZbH1: return ScheduleKind::kZbH1;
    case PipelineSchedule::kDualPipeV: break;
  }
  return ScheduleKind::k1F1B;
}

}  // namespace

StageSpec PipelinePlan::stage(int pp_rank) const {
  StageSpec spec;
  int64_t at = 0;
  for (int s = 0; s < p * v; ++s) {
    if (s % p == pp_rank) spec.chunks.push_back({at, at + blocks[static_cast<size_t>(s)]});
    at += blocks[static_cast<size_t>(s)];
  }
  spec.has_embedding = pp_rank == 0;
  spec.has_head = pp_rank == p - 1;
  return spec;
}

std::string PipelinePlan::describe() const {
  std::string out;
  int64_t at = 0;
  for (size_t s = 0; s < blocks.size(); ++s) {
    absl::StrAppend(&out, s ? " " : "", "[", at, ",", at + blocks[s], ")");
    at += blocks[s];
  }
  return out;
}

StatusOr<PipelinePlan> make_pipeline_plan(const ExperimentConfig& c, int64_t dp) {
  const PipelineConfig& pc = c.parallel.pipeline;
  PipelinePlan plan;
  plan.p = static_cast<int>(c.parallel.pp);
  plan.v = static_cast<int>(pc.virtual_stages);
  if (pc.schedule == PipelineSchedule::kDualPipeV) {
    return absl::UnimplementedError("parallel.pipeline.schedule: dualpipev is not implemented (the stretch goal of "
                                    "issue #9); use gpipe, 1f1b, interleaved_1f1b or zb_h1");
  }
  plan.kind = schedule_kind(pc.schedule);
  const int64_t mbs = c.data.micro_batch_size;
  if (c.train.mode == TrainMode::kGrpo) {
    plan.m = static_cast<int>(pc.micro_batches > 0 ? pc.micro_batches : 1);
  } else {
    const int64_t m = c.data.global_batch_size / (mbs * dp);
    if (pc.micro_batches > 0 && pc.micro_batches != m) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.pipeline.micro_batches: ", pc.micro_batches, " but data.global_batch_size / (micro_batch_size x dp) = ",
          c.data.global_batch_size, " / (", mbs, " x ", dp, ") = ", m, " micro-batches per pipeline; set it to ", m,
          " or 0"));
    }
    plan.m = static_cast<int>(m);
  }
  const int64_t S = static_cast<int64_t>(plan.p) * plan.v;
  const ModelConfig& model = c.model;
  if (model.n_layers < S) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.pp: ", plan.p, " stages x ", plan.v,
                                                   " virtual stages need at least ", S, " blocks; model.n_layers is ",
                                                   model.n_layers));
  }
  if (!pc.layout.empty()) {
    if (static_cast<int64_t>(pc.layout.size()) != S) {
      return absl::InvalidArgumentError(absl::StrCat("parallel.pipeline.layout: ", pc.layout.size(),
                                                     " entries; expected pp x virtual_stages = ", S));
    }
    int64_t total = 0;
    for (int64_t n : pc.layout) total += n;
    if (total != model.n_layers) {
      return absl::InvalidArgumentError(absl::StrCat("parallel.pipeline.layout: the stages hold ", total,
                                                     " blocks; model.n_layers is ", model.n_layers));
    }
    plan.blocks = pc.layout;
  } else {
    std::vector<double> cost;
    for (int64_t l = 0; l < model.n_layers; ++l) cost.push_back(block_train_flops_per_token(model, l, c.data.seq_len));
    plan.blocks = balance_stages(cost, S, 0.0, head_train_flops_per_token(model));
    plan.balanced = true;
  }
  if (plan.p > 1 && model.is_moe() && model.moe.aux_loss == AuxLoss::kSwitch) {
    return absl::InvalidArgumentError(
        "model.moe.aux_loss: switch is one loss over every MoE block of a forward, which a pipeline splits over "
        "stages; use seq (per block and sequence) or none with parallel.pp > 1");
  }
  if (plan.kind == ScheduleKind::kInterleaved1F1B && plan.m % plan.p != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.pipeline.schedule: interleaved_1f1b needs the micro-batches per pipeline (data.global_batch_size / "
        "(micro_batch_size x dp) = ", plan.m, ") to be a multiple of pp = ", plan.p));
  }
  auto sched = make_schedule(plan.kind, plan.p, plan.m, plan.v);
  if (!sched.ok()) return annotate(sched.status(), "parallel.pipeline");
  RETURN_IF_ERROR(annotate(validate_schedule(*sched), "parallel.pipeline"));
  plan.schedule = *std::move(sched);
  return plan;
}

void ModelStage::begin_step(std::vector<const Batch*> micro, double denominator, double aux_weight, bool keep) {
  CHECK(acts_.empty()) << "a pipeline step began with activations of the last one alive";
  micro_ = std::move(micro);
  denominator_ = denominator;
  aux_weight_ = aux_weight;
  keep_ = keep;
  live_ = 0;
  loss = loss_sum = aux = 0;
  loads = model_.empty_moe_stats();
  act_bytes = 0;
  f_s = b_s = w_s = 0;
  f_n = b_n = w_n = 0;
}

int64_t ModelStage::boundary_elems(int micro) const {
  const Batch& b = *micro_[static_cast<size_t>(micro)];
  return b.B * b.T * model_.config().d_model;
}

void ModelStage::forward(int micro, int chunk, const float* input, float* output) {
  Timer t;
  Activations& acts = acts_[{micro, chunk}];
  loss += model_.forward(*micro_[static_cast<size_t>(micro)], acts, denominator_, input, output, aux_weight_, chunk);
  loss_sum += acts.loss_sum;
  aux += acts.aux_loss;
  for (const MoeStats& s : model_.moe_stats(acts))
    for (MoeStats& l : loads)
      if (l.block == s.block) {
        for (size_t e = 0; e < s.load.size(); ++e) l.load[e] += s.load[e];
        l.dropped += s.dropped;
      }
  if (keep_) {
    act_bytes = std::max(act_bytes, activation_bytes(acts));
    ++live_;
  } else {
    acts_.erase({micro, chunk});
  }
  f_s += t.seconds();
  ++f_n;
}

void ModelStage::backward_input(int micro, int chunk, const float* d_output, float* d_input, bool whole) {
  Timer t;
  auto it = acts_.find({micro, chunk});
  CHECK(it != acts_.end()) << "pipeline backward of micro-batch " << micro << " chunk " << chunk << " before its forward";
  model_.backward_input(it->second, d_output, d_input);
  --live_;
  if (whole) {
    model_.backward_weight(it->second);
    acts_.erase(it);
  }
  b_s += t.seconds();
  ++b_n;
}

void ModelStage::backward_weight(int micro, int chunk) {
  Timer t;
  auto it = acts_.find({micro, chunk});
  CHECK(it != acts_.end()) << "pipeline W of micro-batch " << micro << " chunk " << chunk << " before its B";
  model_.backward_weight(it->second);
  acts_.erase(it);
  w_s += t.seconds();
  ++w_n;
}

Status reduce_tied_embedding(Transformer& model, Communicator* pp) {
  if (pp == nullptr || pp->size() == 1 || !model.config().tie_embeddings) return OkStatus();
  const StageSpec& st = model.stage();
  if (!st.has_embedding && !st.has_head) return OkStatus();
  Param* embed = model.find_param("embed");
  CHECK(embed != nullptr && embed->grad.defined()) << "tied embedding without a gradient";
  const int64_t n = embed->grad.numel();
  const int peer = st.has_embedding ? pp->size() - 1 : 0;
  constexpr int kTag = 32000;  // above every pipeline message tag of a step
  std::vector<float> theirs(static_cast<size_t>(n));
  auto recv = pp->irecv(theirs.data(), n * static_cast<int64_t>(sizeof(float)), peer, kTag);
  auto send = pp->isend(embed->g(), n * static_cast<int64_t>(sizeof(float)), peer, kTag);
  RETURN_IF_ERROR(recv->wait());
  RETURN_IF_ERROR(send->wait());
  add_inplace_f32(embed->g(), theirs.data(), n);  // a + b here, b + a there: the same floats
  return OkStatus();
}

}  // namespace strata
