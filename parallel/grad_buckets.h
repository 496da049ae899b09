// GradBuckets: the gradients of a data-parallel rank packed into a few flat fp32 buffers
// ("buckets"), reduced over the dp group one bucket at a time (DESIGN.md "The parallel layout").
//
// Construction moves every gradient into its bucket: each Tensor* passed in is replaced by a view
// of the bucket's buffer (same shape, values copied), so layers keep accumulating into
// param.grad and the buffer IS the gradient, with no packing copy before the reduction (as
// Megatron's contiguous grad buffer). Tensors go into buckets in the order given (the trainer
// passes them in backward order, last layer first); a bucket closes once it holds bucket_bytes,
// and is padded with zeros to a multiple of the group size so that it splits into equal shards.
//
// Reductions start in bucket order on every rank (MPI matches collectives by order): a bucket
// whose tensors are all marked ready starts only after every earlier bucket has started. With
// overlap, the backward of a step's last micro-batch marks tensors ready as their layers finish
// and calls poll() between layers (Open MPI makes no progress on its own); finish() starts
// whatever has not started and waits for everything.
//
//   kAllReduce:     every rank ends with the sum of the bucket over the group.
//   kReduceScatter: rank r ends with shard r of the sum, (padded / size,) in shard(b) (ZeRO-1);
//                   the bucket buffer itself is left unspecified.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace strata {

class GradBuckets {
 public:
  enum class Mode { kAllReduce, kReduceScatter };

  // One bucket: tensors [first, first + count) of the list, back to back from element 0.
  struct Bucket {
    Tensor buffer;                 // (padded,) fp32
    Tensor shard;                  // kReduceScatter: (padded / size,) this rank's reduced block
    int64_t used = 0;              // elements that hold gradients; the rest is zero padding
    size_t first = 0, count = 0;   // tensors of the list in this bucket
    std::vector<int64_t> offsets;  // (count,) element offset of each tensor in the buffer
    int64_t ready = 0;             // tensors marked ready this round
    bool started = false;
    std::unique_ptr<CommHandle> inflight;
  };

  // grads: every gradient, in the order buckets fill. comm: the dp group (its size pads the
  // buckets); kept by pointer.
  GradBuckets(const std::vector<Tensor*>& grads, int64_t bucket_bytes, Communicator* comm, Mode mode);

  // Zeroes every buffer and forgets what was marked ready (start of an update).
  void zero();
  // The gradient whose data starts at `grad` is final for this round; starts every bucket that is
  // complete and whose predecessors have started. Unknown pointers are ignored.
  void mark_ready(const float* grad);
  // Lets in-flight reductions progress.
  void poll();
  // Starts every bucket not yet started, in order, and waits for all of them.
  Status finish();

  const std::vector<Bucket>& buckets() const { return buckets_; }
  std::vector<Bucket>& buckets() { return buckets_; }
  Mode mode() const { return mode_; }
  // Bucket reductions started while some gradient was not yet marked ready, i.e. while the
  // backward was still running (overlapped with it), last round. The last bucket to fill never is.
  int64_t started_early() const { return started_early_; }

 private:
  void start_ready_prefix();
  void start(Bucket& b);

  Communicator* comm_;
  Mode mode_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, int64_t>> where_;         // per tensor: (bucket, offset)
  std::vector<std::pair<const float*, size_t>> by_data_;  // sorted (grad data pointer, tensor)
  size_t next_to_start_ = 0;
  int64_t started_early_ = 0;
  int64_t ready_total_ = 0;  // tensors marked ready this round
  bool finishing_ = false;
};

}  // namespace strata
