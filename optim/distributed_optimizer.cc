#include "optim/distributed_optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/dtype.h"
#include "core/timer.h"
#include "kernels/ops.h"

namespace strata {
namespace {

// The tensors of `ts` that are not routed-expert shards.
// The dense tensors whose gradients count in the norm here (not expert shards, not copies).
std::vector<OptimTensor> dense_of(const std::vector<OptimTensor>& ts) {
  std::vector<OptimTensor> out;
  for (const OptimTensor& t : ts)
    if (!t.expert && !t.copy) out.push_back(t);
  return out;
}

// Every tensor whose gradient counts in the norm here (not copies), in order.
std::vector<OptimTensor> counted(const std::vector<OptimTensor>& ts) {
  std::vector<OptimTensor> out;
  for (const OptimTensor& t : ts)
    if (!t.copy) out.push_back(t);
  return out;
}

std::vector<OptimTensor> experts_of(const std::vector<OptimTensor>& ts) {
  std::vector<OptimTensor> out;
  for (const OptimTensor& t : ts)
    if (t.expert) out.push_back(t);
  return out;
}

std::vector<int64_t> dims_of(const Tensor& t) {
  std::vector<int64_t> d;
  for (int i = 0; i < t.shape().rank(); ++i) d.push_back(t.shape()[i]);
  return d;
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(const OptimConfig& optim, const ParallelConfig& parallel,
                                           std::vector<OptimTensor> tensors, Communicator* dp, Communicator* edp,
                                           Communicator* ep, Communicator* pp)
    : optim_(optim), tensors_(std::move(tensors)) {
  if (dp != nullptr && dp->size() > 1) dp_ = dp;
  if (ep != nullptr && ep->size() > 1) ep_ = ep;
  if (pp != nullptr && pp->size() > 1) pp_ = pp;
  zero_ = dp_ != nullptr && parallel.zero >= 1;
  overlap_ = parallel.overlap_grad_reduce;
  if (dp_ == nullptr) {
    updated_ = tensors_;
    adam_ = std::make_unique<AdamW>(optim_, updated_);
    return;
  }
  // Buckets fill in backward order: the last parameters first. With expert parallelism the
  // routed experts' gradients are reduced over edp only (not at all when edp = 1).
  std::vector<Tensor*> grads, expert_grads;
  for (size_t i = tensors_.size(); i-- > 0;) {
    if (ep_ != nullptr && tensors_[i].expert) {
      expert_grads.push_back(tensors_[i].grad);
    } else {
      grads.push_back(tensors_[i].grad);
      bucketed_.push_back(i);
    }
  }
  const int64_t bucket_bytes = static_cast<int64_t>(parallel.bucket_mb * 1024.0 * 1024.0);
  buckets_ = std::make_unique<GradBuckets>(
      grads, bucket_bytes, dp_, zero_ ? GradBuckets::Mode::kReduceScatter : GradBuckets::Mode::kAllReduce);
  if (!expert_grads.empty() && edp != nullptr && edp->size() > 1) {
    expert_buckets_ = std::make_unique<GradBuckets>(expert_grads, bucket_bytes, edp, GradBuckets::Mode::kAllReduce);
  }
  if (!zero_) {
    updated_ = tensors_;
    adam_ = std::make_unique<AdamW>(optim_, updated_);
    return;
  }
  // ZeRO-1: this rank's shard of every bucket, cut at tensor boundaries into pieces. Expert
  // tensors (expert parallelism) keep their whole local state, after the pieces.
  const int64_t r = dp_->rank();
  for (size_t bi = 0; bi < buckets_->buckets().size(); ++bi) {
    const GradBuckets::Bucket& b = buckets_->buckets()[bi];
    const int64_t chunk = b.buffer.numel() / dp_->size();
    const int64_t lo = r * chunk, hi = lo + chunk;
    for (size_t k = 0; k < b.count; ++k) {
      const size_t t = bucketed_[b.first + k];
      const int64_t off = b.offsets[k], numel = tensors_[t].value->numel();
      const int64_t begin = std::max(off, lo), end = std::min(off + numel, hi);
      if (begin >= end) continue;
      pieces_.push_back({t, begin - off, end - begin, bi, begin - lo});
      piece_values_.push_back(tensors_[t].value->view({numel}).rows(begin - off, end - off));
      piece_grads_.push_back(b.shard.rows(begin - lo, end - lo));
    }
  }
  for (size_t p = 0; p < pieces_.size(); ++p) {
    const OptimTensor& t = tensors_[pieces_[p].tensor];
    updated_.push_back({t.name, &piece_values_[p], &piece_grads_[p], t.decay});
    updated_.back().copy = t.copy;
  }
  for (const OptimTensor& t : tensors_)
    if (ep_ != nullptr && t.expert) updated_.push_back(t);
  adam_ = std::make_unique<AdamW>(optim_, updated_);
}

void DistributedOptimizer::to_device(Device device) {
  CHECK(!buckets_ && !expert_buckets_ && !zero_ && dp_ == nullptr && ep_ == nullptr && pp_ == nullptr)
      << "DistributedOptimizer::to_device: one process only so far (gradient buckets and shards stay on the CPU)";
  adam_->to_device(device);
}

void DistributedOptimizer::zero_grads() {
  if (!buckets_) {
    for (const OptimTensor& t : tensors_) t.grad->zero_();
    return;
  }
  buckets_->zero();
  if (expert_buckets_) {
    expert_buckets_->zero();
  } else if (ep_ != nullptr) {  // edp = 1: expert gradients stay where they are
    for (const OptimTensor& t : tensors_)
      if (t.expert) t.grad->zero_();
  }
}

void DistributedOptimizer::grads_ready(const float* grad) {
  if (!overlap_) return;
  if (buckets_) buckets_->mark_ready(grad);
  if (expert_buckets_) expert_buckets_->mark_ready(grad);
}

void DistributedOptimizer::poll() {
  if (!overlap_) return;
  if (buckets_) buckets_->poll();
  if (expert_buckets_) expert_buckets_->poll();
}

Status DistributedOptimizer::reduce_grads() {
  comm_seconds_ = 0.0;
  if (!buckets_) return OkStatus();
  Timer t;
  Status s = buckets_->finish();
  if (expert_buckets_) {
    Status e = expert_buckets_->finish();
    if (s.ok()) s = e;
  }
  comm_seconds_ += t.seconds();
  return s;
}

StatusOr<OptimStepResult> DistributedOptimizer::step(double lr, bool local_bad) {
  OptimStepResult out;
  // What this rank holds of the global gradient: all of it, or its shard.
  double bad = (local_bad || grads_have_nonfinite(updated_)) ? 1.0 : 0.0;
  double sumsq = 0.0;  // this stage's squared gradient norm, once the steps below have run
  if (dp_ != nullptr) {
    Timer t;
    // One small all-reduce carries the skip decision and (ZeRO-1) the squared norm of the shards.
    double v[2] = {bad, zero_ && bad == 0.0 ? grad_sum_of_squares(dense_of(updated_)) : 0.0};
    RETURN_IF_ERROR(dp_->all_reduce(v, 2, ReduceOp::kSum));
    bad = v[0];
    sumsq = v[1];
    comm_seconds_ += t.seconds();
  }
  // Every rank of a stage agrees on `bad` now, so they all take the same branches below.
  if (bad == 0.0) {
    // Dense gradients are the same on every rank of the stage (ZeRO-1: their shards' squares are
    // summed over dp already); each rank of an expert group holds other experts: add theirs.
    if (ep_ != nullptr) {
      if (!zero_) sumsq = grad_sum_of_squares(dense_of(updated_));
      double expert = grad_sum_of_squares(experts_of(updated_));
      Timer t;
      RETURN_IF_ERROR(ep_->all_reduce(&expert, 1, ReduceOp::kSum));
      comm_seconds_ += t.seconds();
      sumsq += expert;
    } else if (!zero_) {
      sumsq = grad_sum_of_squares(counted(updated_));  // clip_grad_norm's order: one process's bits
    }
  }
  if (pp_ != nullptr) {  // every stage's decision and squares
    Timer t;
    double v[2] = {bad, bad == 0.0 ? sumsq : 0.0};
    RETURN_IF_ERROR(pp_->all_reduce(v, 2, ReduceOp::kSum));
    bad = v[0];
    sumsq = v[1];
    comm_seconds_ += t.seconds();
  }
  if (bad > 0.0) return out;
  // clip_grad_norm's clipping, with the norm of the whole gradient.
  out.grad_norm = std::sqrt(sumsq);
  if (optim_.grad_clip > 0.0 && std::isfinite(out.grad_norm)) {
    const double coef = optim_.grad_clip / (out.grad_norm + 1e-6);
    if (coef < 1.0) scale_grads(updated_, coef);
  }
  adam_->step(lr);
  out.applied = true;
  if (!zero_) return out;

  // ZeRO-1: every rank sends its updated shard of each bucket and receives all of them into the
  // bucket buffer (its gradients are spent), then copies the parameters out.
  Timer t;
  std::vector<GradBuckets::Bucket>& buckets = buckets_->buckets();
  for (GradBuckets::Bucket& b : buckets) b.shard.zero_();
  for (size_t p = 0; p < pieces_.size(); ++p) {
    copy_f32(buckets[pieces_[p].bucket].shard.f32() + pieces_[p].shard_at, piece_values_[p].f32(), pieces_[p].count);
  }
  std::vector<std::unique_ptr<CommHandle>> inflight;
  for (GradBuckets::Bucket& b : buckets) inflight.push_back(dp_->iall_gather(b.shard.f32(), b.buffer.f32(), b.shard.numel()));
  for (auto& h : inflight) RETURN_IF_ERROR(h->wait());
  comm_seconds_ += t.seconds();
  for (const GradBuckets::Bucket& b : buckets) {
    for (size_t k = 0; k < b.count; ++k) {
      const OptimTensor& ot = tensors_[bucketed_[b.first + k]];
      copy_f32(ot.value->f32(), b.buffer.f32() + b.offsets[k], ot.value->numel());
    }
  }
  return out;
}

int64_t DistributedOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& [name, t] : const_cast<AdamW&>(*adam_).state_tensors()) bytes += static_cast<int64_t>(t->nbytes());
  return bytes;
}

int64_t DistributedOptimizer::grad_shard_bytes() const {
  int64_t bytes = 0;
  if (zero_)
    for (const GradBuckets::Bucket& b : buckets_->buckets()) bytes += static_cast<int64_t>(b.shard.nbytes());
  return bytes;
}

std::vector<OptimStateSlice> DistributedOptimizer::state_slices() {
  std::vector<OptimStateSlice> out;
  const std::vector<std::pair<std::string, Tensor*>> state = adam_->state_tensors();  // m, v per tensor
  for (size_t i = 0; i < state.size(); ++i) {
    OptimStateSlice s;
    s.name = state[i].first;
    s.tensor = state[i].second;
    if (zero_ && i / 2 < pieces_.size()) {
      const Piece& piece = pieces_[i / 2];
      s.global_shape = dims_of(*tensors_[piece.tensor].value);
      s.flat = true;
      s.flat_begin = piece.begin;
    } else {
      const OptimTensor& ot = updated_[i / 2];
      s.global_shape = dims_of(*s.tensor);
      s.replicated = dp_ != nullptr;
      if (ot.global_rows > 0) {  // an expert shard: its rows of the whole tensor
        s.global_shape[0] = ot.global_rows;
        s.expert = true;
        s.row_begin = ot.row_begin;
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

Status DistributedOptimizer::load_state(const FlatReader& read) {
  std::vector<float> tmp;
  for (const OptimStateSlice& s : state_slices()) {
    Tensor* dst = const_cast<Tensor*>(s.tensor);
    const int64_t n = dst->numel();
    const int64_t begin = s.flat ? s.flat_begin : s.row_begin * (n / std::max<int64_t>(dst->shape()[0], 1));
    if (dst->dtype() == DType::kF32) {
      RETURN_IF_ERROR(read(s.name, begin, n, dst->f32()));
    } else {  // bf16 moments: read as f32, round back (exact for values saved as bf16)
      tmp.resize(static_cast<size_t>(n));
      RETURN_IF_ERROR(read(s.name, begin, n, tmp.data()));
      f32_to_bf16_n(tmp.data(), dst->data<uint16_t>(), tmp.size());
    }
  }
  return OkStatus();
}

}  // namespace strata
