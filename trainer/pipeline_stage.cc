#include "trainer/pipeline_stage.h"

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/timer.h"
#include "kernels/ops.h"
#include "model/flops.h"
#include "trainer/run_common.h"

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
    // GRPO's micro-batches per step depend on the samples (dynamic sampling, lengths): each step
    // builds its schedule; this one (m = p) only validates the layout.
    plan.m = plan.p;
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

void ModelStage::begin_step(std::vector<StageMicro> micro, double denominator, bool keep) {
  CHECK(acts_.empty()) << "a pipeline step began with activations of the last one alive";
  micro_ = std::move(micro);
  denominator_ = denominator;
  optimizer_ = nullptr;
  last_grad_micro_.clear();
  keep_ = keep;
  live_ = 0;
  loss = loss_sum = aux = 0;
  loads = model_.empty_moe_stats();
  act_bytes = 0;
  f_s = b_s = w_s = 0;
  f_n = b_n = w_n = 0;
}

void ModelStage::overlap_grad_reduce(DistributedOptimizer* optimizer, const Schedule& s, int rank) {
  optimizer_ = optimizer;
  split_w_ = s.split_w;
  last_grad_micro_.clear();
  for (const PipeOp& op : s.ranks[static_cast<size_t>(rank)])
    if (op.kind == (s.split_w ? PipeOpKind::kW : PipeOpKind::kB)) last_grad_micro_[op.chunk] = op.micro;
}

void ModelStage::report_chunk(int chunk) {
  const bool tied_elsewhere = model_.config().tie_embeddings && !(model_.stage().has_embedding && model_.stage().has_head);
  const Param* embed = model_.find_param("embed");
  for (const std::vector<Param*>& seg : model_.grad_segments(chunk))
    for (const Param* p : seg)
      if (p->grad.defined() && !(tied_elsewhere && p == embed)) optimizer_->grads_ready(p->grad.f32());
  optimizer_->poll();
}

void ModelStage::poll() {
  if (optimizer_ != nullptr) optimizer_->poll();
}

int64_t ModelStage::boundary_elems(int micro) const {
  const Batch& b = *micro_[static_cast<size_t>(micro)].batch;
  return b.B * b.T * model_.config().d_model;
}

void ModelStage::forward(int micro, int chunk, const float* input, float* output) {
  Timer t;
  Activations& acts = acts_[{micro, chunk}];
  const StageMicro& mb = micro_[static_cast<size_t>(micro)];
  loss += model_.forward(*mb.batch, acts, denominator_, input, output, mb.aux_weight, chunk);
  loss_sum += acts.loss_sum;
  aux += acts.aux_loss;
  if (mb.counted) add_moe_stats(loads, model_.moe_stats(acts));
  if (on_head_forward && output == nullptr) on_head_forward(micro, acts);
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
  const auto last = last_grad_micro_.find(chunk);
  const bool finishes = optimizer_ != nullptr && last != last_grad_micro_.end() && last->second == micro;
  model_.backward_input(it->second, d_output, d_input);
  --live_;
  if (whole) {
    model_.backward_weight(it->second);
    acts_.erase(it);
    if (finishes && !split_w_) report_chunk(chunk);
  } else {
    model_.release_after_backward_input(it->second);  // its W needs only the GEMM inputs
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
  const auto last = last_grad_micro_.find(chunk);
  if (optimizer_ != nullptr && split_w_ && last != last_grad_micro_.end() && last->second == micro) report_chunk(chunk);
  w_s += t.seconds();
  ++w_n;
}

void PipelineDecoder::start(int64_t B, int64_t capacity) {
  // 2p micro-batches: the forward-only bubble (p-1)/(m+p-1) against GEMMs still big enough
  // (quickstart GRPO at pp = 2: m = p 4.8k, 2p 6.7k, 4p 6.5k rollout tokens/s).
  const int64_t m = std::min<int64_t>(2 * plan_.p, B);
  row_begin_.assign(1, 0);
  caches_.clear();
  for (int64_t k = 0; k < m; ++k) {
    row_begin_.push_back(B * (k + 1) / m);
    caches_.push_back(model_.make_kv_caches(row_begin_[k + 1] - row_begin_[k], capacity));
  }
}

namespace {

// The forward-only pipeline's view of one decode step: micro-batch k is rows
// [row_begin[k], row_begin[k + 1]) of the step's tokens.
class DecodeStage : public PipelineStage {
 public:
  DecodeStage(Transformer& model, std::vector<std::vector<KVCache>>& caches, const std::vector<int64_t>& row_begin,
              const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
              const std::vector<int32_t>& key_start, int64_t T_new, Tensor& logits)
      : model_(model), caches_(caches), row_begin_(row_begin), tokens_(tokens), positions_(positions),
        key_start_(key_start), T_new_(T_new), logits_(logits) {}
  int64_t boundary_elems(int micro) const override { return rows(micro) * T_new_ * model_.config().d_model; }
  void forward(int micro, int chunk, const float* input, float* output) override {
    const int64_t r0 = row_begin_[static_cast<size_t>(micro)], n = rows(micro);
    auto slice = [&](const std::vector<int32_t>& v, int64_t per_row) {
      return std::vector<int32_t>(v.begin() + r0 * per_row, v.begin() + (r0 + n) * per_row);
    };
    const std::vector<int32_t> tok = tokens_.empty() ? std::vector<int32_t>() : slice(tokens_, T_new_);
    Tensor out = model_.decode_chunk(caches_[static_cast<size_t>(micro)], chunk, tok, slice(positions_, T_new_),
                                     slice(key_start_, 1), n, T_new_, /*last_only=*/true, input, output);
    if (out.defined()) {
      const int64_t V = model_.config().vocab_size;
      if (!logits_.defined()) logits_ = f32_matrix(row_begin_.back(), V);
      copy_f32(logits_.f32() + r0 * V, out.f32(), n * V);
    }
  }
  void backward_input(int, int, const float*, float*, bool) override { CHECK(false) << "decoding has no backward"; }
  void backward_weight(int, int) override { CHECK(false) << "decoding has no backward"; }
  int live_activations() const override { return 0; }
  void set_progress(std::function<void()> fn) override { model_.set_progress(std::move(fn)); }

 private:
  int64_t rows(int micro) const { return row_begin_[static_cast<size_t>(micro) + 1] - row_begin_[static_cast<size_t>(micro)]; }
  Transformer& model_;
  std::vector<std::vector<KVCache>>& caches_;
  const std::vector<int64_t>& row_begin_;
  const std::vector<int32_t>& tokens_;
  const std::vector<int32_t>& positions_;
  const std::vector<int32_t>& key_start_;
  int64_t T_new_;
  Tensor& logits_;
};

}  // namespace

Tensor PipelineDecoder::step(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                             const std::vector<int32_t>& key_start, int64_t B, int64_t T_new) {
  CHECK_EQ(B, row_begin_.back()) << "decode step of another batch than start()";
  Tensor logits;
  DecodeStage stage(model_, caches_, row_begin_, tokens, positions, key_start, T_new, logits);
  const Schedule s = forward_only_schedule(plan_.p, static_cast<int>(caches_.size()), plan_.v);
  const StatusOr<PipelineRun> run = run_pipeline(s, pp_rank_, stage, pp_);
  CHECK(run.ok()) << "pipeline decode: " << run.status().message();
  return logits;
}

void PipelineDecoder::share(std::vector<int32_t>& tokens) {
  const Status st =
      pp_->broadcast(tokens.data(), static_cast<int64_t>(tokens.size() * sizeof(int32_t)), plan_.p - 1);
  CHECK(st.ok()) << "pipeline decode: sharing sampled tokens: " << st.message();
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
