#include "parallel/grad_buckets.h"

#include <algorithm>

#include "core/check.h"
#include "kernels/ops.h"

namespace strata {
namespace {

// Tensors start on 64-byte boundaries inside a bucket, as separately allocated tensors do.
constexpr int64_t kAlignElems = 16;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace

GradBuckets::GradBuckets(const std::vector<Tensor*>& grads, int64_t bucket_bytes, Communicator* comm, Mode mode)
    : comm_(comm), mode_(mode) {
  CHECK(comm_ != nullptr) << "GradBuckets needs the dp communicator";
  const int64_t size = comm_->size();
  const int64_t cap = std::max<int64_t>(bucket_bytes / static_cast<int64_t>(sizeof(float)), 1);
  // Plan: which tensors go together, at which offsets.
  where_.resize(grads.size());
  size_t i = 0;
  while (i < grads.size()) {
    Bucket b;
    b.first = i;
    int64_t at = 0;
    while (i < grads.size() && (b.count == 0 || at < cap)) {
      CHECK(grads[i] != nullptr && grads[i]->dtype() == DType::kF32) << "GradBuckets: fp32 gradients only";
      at = round_up(at, kAlignElems);
      b.offsets.push_back(at);
      where_[i] = {buckets_.size(), at};
      at += grads[i]->numel();
      ++b.count;
      ++i;
    }
    b.used = at;
    const int64_t padded = round_up(std::max<int64_t>(at, 1), size * kAlignElems);
    b.buffer = Tensor::zeros({padded}, DType::kF32);
    if (mode_ == Mode::kReduceScatter) b.shard = Tensor::zeros({padded / size}, DType::kF32);
    buckets_.push_back(std::move(b));
  }
  // Move every gradient into its bucket: the Tensor becomes a view of the buffer.
  for (size_t t = 0; t < grads.size(); ++t) {
    Bucket& b = buckets_[where_[t].first];
    const int64_t off = where_[t].second, n = grads[t]->numel();
    Tensor view = b.buffer.rows(off, off + n).view(grads[t]->shape());
    copy_f32(view.f32(), grads[t]->f32(), n);
    *grads[t] = view;
    by_data_.emplace_back(view.f32(), t);
  }
  std::sort(by_data_.begin(), by_data_.end());
}

void GradBuckets::zero() {
  CHECK(!finishing_ && std::none_of(buckets_.begin(), buckets_.end(), [](const Bucket& b) { return b.inflight != nullptr; }))
      << "GradBuckets::zero() while reductions are in flight";
  for (Bucket& b : buckets_) {
    b.buffer.zero_();
    b.ready = 0;
    b.started = false;
  }
  next_to_start_ = 0;
  started_early_ = 0;
  ready_total_ = 0;
}

void GradBuckets::mark_ready(const float* grad) {
  auto it = std::lower_bound(by_data_.begin(), by_data_.end(), std::make_pair(grad, size_t{0}));
  if (it == by_data_.end() || it->first != grad) return;
  Bucket& b = buckets_[where_[it->second].first];
  CHECK_LT(b.ready, static_cast<int64_t>(b.count)) << "a gradient was marked ready twice in one round";
  ++b.ready;
  ++ready_total_;
  start_ready_prefix();
  poll();
}

void GradBuckets::start_ready_prefix() {
  while (next_to_start_ < buckets_.size()) {
    Bucket& b = buckets_[next_to_start_];
    if (b.ready < static_cast<int64_t>(b.count)) return;
    start(b);
    ++next_to_start_;
  }
}

void GradBuckets::start(Bucket& b) {
  const int64_t n = b.buffer.numel();
  if (mode_ == Mode::kAllReduce) {
    b.inflight = comm_->iall_reduce(b.buffer.f32(), n, ReduceOp::kSum);
  } else {
    b.inflight = comm_->ireduce_scatter(b.buffer.f32(), b.shard.f32(), n / comm_->size(), ReduceOp::kSum);
  }
  b.started = true;
  // Overlapped: the backward still has gradients to produce when this reduction starts.
  if (!finishing_ && ready_total_ < static_cast<int64_t>(where_.size())) ++started_early_;
}

void GradBuckets::poll() {
  for (Bucket& b : buckets_)
    if (b.inflight) b.inflight->test();  // completion is collected by finish()
}

Status GradBuckets::finish() {
  finishing_ = true;
  for (; next_to_start_ < buckets_.size(); ++next_to_start_) start(buckets_[next_to_start_]);
  Status status = OkStatus();
  for (Bucket& b : buckets_) {
    if (!b.inflight) continue;
    Status s = b.inflight->wait();
    b.inflight.reset();
    if (status.ok() && !s.ok()) status = s;
  }
  finishing_ = false;
  return status;
}

}  // namespace strata
