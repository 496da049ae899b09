// The NCCL backend of Communicator (parallel/nccl_communicator.h). Every NCCL communicator is
// created non-blocking (ncclConfig_t.blocking = 0): an NCCL call may return ncclInProgress, and
// then nothing else may be called on that communicator until ncclCommGetAsyncError says it has
// settled, which we poll against the deadline. Each operation records a CUDA event on the
// communicator's stream after its work; a handle polls that event and the communicator's async
// error, so a peer that never comes is a DeadlineExceeded after timeout_s, not a hang.
// Compiled in every build; without STRATA_WITH_CUDA only the factory's refusal remains.
#include "parallel/nccl_communicator.h"

#include "absl/strings/str_cat.h"
#include "core/device.h"  // cuda_device_count, cuda_unavailable_reason

#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>
#include <mpi.h>   // the ncclUniqueId travels over MPI_COMM_WORLD
#include <nccl.h>
#include <unistd.h>  // usleep

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "core/cuda_check.h"
#include "core/log.h"
#endif

namespace strata {

#ifdef STRATA_WITH_CUDA
namespace {

// Spins a little, then sleeps between polls (ranks may share cores), until a deadline.
class Poller {
 public:
  explicit Poller(double timeout_s)
      : deadline_(std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(std::min(timeout_s, 1e7)))) {}
  // False once the deadline has passed.
  bool keep_going() {
    if (++spins_ <= 1000) return true;
    if (std::chrono::steady_clock::now() > deadline_) return false;
    usleep(50);
    return true;
  }

 private:
  std::chrono::steady_clock::time_point deadline_;
  int spins_ = 0;
};

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

size_t count(int64_t n) {
  CHECK(n >= 0) << "negative NCCL count " << n;
  return static_cast<size_t>(n);
}

// "unhandled system error: <NCCL's last message>"; call before aborting the communicator.
std::string nccl_error(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&s, ": ", last);
  return s;
}

// Completion state of one operation, shared by its handle and, for a message to self, by the
// queue that waits for its match.
struct Op {
  cudaEvent_t event = nullptr;  // recorded on the stream after the op's work; null until issued
  Status status;                // not OK: the op failed (then it is complete)
  ~Op() {
    if (event != nullptr) cudaEventDestroy(event);
  }
};

class NcclCommunicator;

class NcclHandle : public CommHandle {
 public:
  NcclHandle(NcclCommunicator* comm, std::string what, int64_t seq, std::shared_ptr<Op> op)
      : comm_(comm), what_(std::move(what)), seq_(seq), op_(std::move(op)) {}
  ~NcclHandle() override {
    if (!done_) (void)wait();
  }
  bool test() override;
  Status wait() override;

 private:
  NcclCommunicator* comm_;
  std::string what_;
  int64_t seq_;  // 0 for point-to-point (not a collective of the group)
  std::shared_ptr<Op> op_;
  bool done_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  // Takes ownership of `comm` (settled, non-blocking, on GPU `device`).
  NcclCommunicator(ncclComm_t comm, int device, std::vector<int64_t> members, std::string name, double timeout_s)
      : comm_(comm), device_(device), members_(std::move(members)), name_(std::move(name)), timeout_s_(timeout_s) {
    CHECK(ncclCommCount(comm_, &size_) == ncclSuccess) << "ncclCommCount on " << name_;
    CHECK(ncclCommUserRank(comm_, &rank_) == ncclSuccess) << "ncclCommUserRank on " << name_;
    CHECK_EQ(static_cast<size_t>(size_), members_.size()) << "NCCL communicator " << name_ << " vs its member list";
    CHECK_CUDA(cudaSetDevice(device_));
    // A blocking stream: it waits for work the caller queued on the legacy default stream.
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault));
    CHECK_CUDA(cudaMalloc(&scratch_, sizeof(float)));
    CHECK_CUDA(cudaMemsetAsync(scratch_, 0, sizeof(float), stream_));
  }
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (comm_ != nullptr) {
      // Finalize flushes what is in flight; a peer that never comes must not hang the exit.
      ncclResult_t r = ncclCommFinalize(comm_);
      Poller poll(timeout_s_);
      while (r == ncclInProgress && poll.keep_going()) {
        if (ncclCommGetAsyncError(comm_, &r) != ncclSuccess) break;
      }
      if (r == ncclSuccess) {
        ncclCommDestroy(comm_);
      } else {
        LOG(WARN) << "NCCL communicator " << name_ << " did not finalize within " << timeout_s_
                  << "s (" << ncclGetErrorString(r) << "); aborting it";
        ncclCommAbort(comm_);
      }
    }
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int64_t>& members() const override { return members_; }
  const std::string& name() const override { return name_; }

  Status all_reduce(float* data, int64_t n, ReduceOp op) override { return iall_reduce(data, n, op)->wait(); }
  Status all_reduce(double* data, int64_t n, ReduceOp op) override {
    return start("all_reduce", [&] {
             return ncclAllReduce(data, data, count(n), ncclDouble, nccl_op(op), comm_, stream_);
           })->wait();
  }
  std::unique_ptr<CommHandle> iall_reduce(float* data, int64_t n, ReduceOp op) override {
    return start("all_reduce",
                 [&] { return ncclAllReduce(data, data, count(n), ncclFloat, nccl_op(op), comm_, stream_); });
  }
  Status reduce_scatter(const float* in, float* out, int64_t n, ReduceOp op) override {
    return ireduce_scatter(in, out, n, op)->wait();
  }
  std::unique_ptr<CommHandle> ireduce_scatter(const float* in, float* out, int64_t n, ReduceOp op) override {
    return start("reduce_scatter",
                 [&] { return ncclReduceScatter(in, out, count(n), ncclFloat, nccl_op(op), comm_, stream_); });
  }
  Status all_gather(const float* in, float* out, int64_t n) override { return iall_gather(in, out, n)->wait(); }
  std::unique_ptr<CommHandle> iall_gather(const float* in, float* out, int64_t n) override {
    return start("all_gather", [&] { return ncclAllGather(in, out, count(n), ncclFloat, comm_, stream_); });
  }

  // One NCCL group of sends and receives to the other ranks; this rank's own block is a device copy.
  Status all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                      const std::vector<int64_t>& recv_counts) override {
    CHECK(static_cast<int>(send_counts.size()) == size_ && static_cast<int>(recv_counts.size()) == size_)
        << "all_to_all_v on " << name_ << ": one count per rank";
    CHECK_EQ(send_counts[rank_], recv_counts[rank_])
        << "all_to_all_v on " << name_ << ": rank " << rank_ << " sends itself a block it does not expect";
    std::vector<int64_t> send_offsets(size_), recv_offsets(size_);
    for (int r = 1; r < size_; ++r) {
      send_offsets[r] = send_offsets[r - 1] + count(send_counts[r - 1]);
      recv_offsets[r] = recv_offsets[r - 1] + count(recv_counts[r - 1]);
    }
    const auto* send_bytes = static_cast<const uint8_t*>(send);
    auto* recv_bytes = static_cast<uint8_t*>(recv);
    return start("all_to_all_v", [&] {
             if (send_counts[rank_] > 0) {
               CHECK_CUDA(cudaMemcpyAsync(recv_bytes + recv_offsets[rank_], send_bytes + send_offsets[rank_],
                                          count(send_counts[rank_]), cudaMemcpyDeviceToDevice, stream_));
             }
             ncclResult_t first = ncclGroupStart();
             auto keep = [&first](ncclResult_t r) {
               if (first == ncclSuccess) first = r;
             };
             for (int r = 0; r < size_; ++r) {
               if (r == rank_) continue;
               // A zero-byte block is skipped on both sides (the counts agree), so it needs no match.
               if (send_counts[r] > 0)
                 keep(ncclSend(send_bytes + send_offsets[r], count(send_counts[r]), ncclUint8, r, comm_, stream_));
               if (recv_counts[r] > 0)
                 keep(ncclRecv(recv_bytes + recv_offsets[r], count(recv_counts[r]), ncclUint8, r, comm_, stream_));
             }
             const ncclResult_t end = ncclGroupEnd();
             return first != ncclSuccess && first != ncclInProgress ? first : end;
           })->wait();
  }

  // NCCL has no tags: sends and receives between two ranks match in issue order.
  Status send(const void* data, int64_t bytes, int dest, int tag) override { return isend(data, bytes, dest, tag)->wait(); }
  Status recv(void* data, int64_t bytes, int src, int tag) override { return irecv(data, bytes, src, tag)->wait(); }
  std::unique_ptr<CommHandle> isend(const void* data, int64_t bytes, int dest, int tag) override {
    CHECK(dest >= 0 && dest < size_) << "send on " << name_ << " to rank " << dest << " of " << size_;
    std::string what = absl::StrCat("send to ", dest, " tag ", tag);
    if (dest == rank_) return message_to_self(std::move(what), /*is_send=*/true, data, nullptr, bytes);
    auto op = issue(what, 0, [&] { return ncclSend(data, count(bytes), ncclUint8, dest, comm_, stream_); });
    return std::make_unique<NcclHandle>(this, std::move(what), 0, std::move(op));
  }
  std::unique_ptr<CommHandle> irecv(void* data, int64_t bytes, int src, int tag) override {
    CHECK(src >= 0 && src < size_) << "recv on " << name_ << " from rank " << src << " of " << size_;
    std::string what = absl::StrCat("recv from ", src, " tag ", tag);
    if (src == rank_) return message_to_self(std::move(what), /*is_send=*/false, nullptr, data, bytes);
    auto op = issue(what, 0, [&] { return ncclRecv(data, count(bytes), ncclUint8, src, comm_, stream_); });
    return std::make_unique<NcclHandle>(this, std::move(what), 0, std::move(op));
  }

  Status broadcast(void* data, int64_t bytes, int root) override {
    CHECK(root >= 0 && root < size_) << "broadcast on " << name_ << " from rank " << root << " of " << size_;
    return start("broadcast", [&] {
             return ncclBroadcast(data, data, count(bytes), ncclUint8, root, comm_, stream_);
           })->wait();
  }
  // An all-reduce of one float: NCCL has no barrier.
  Status barrier() override {
    return start("barrier", [&] { return ncclAllReduce(scratch_, scratch_, 1, ncclFloat, ncclSum, comm_, stream_); })
        ->wait();
  }

  // ncclCommSplit with colour = the group's smallest world rank and key = this rank's position in
  // it, as the MPI backend does; the new communicator gets its own stream.
  StatusOr<std::unique_ptr<Communicator>> split(const std::vector<int64_t>& world_ranks,
                                                const std::string& name) override {
    const int64_t my_world = members_[static_cast<size_t>(rank_)];
    auto it = std::find(world_ranks.begin(), world_ranks.end(), my_world);
    if (it == world_ranks.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("split ", name, ": world rank ", my_world, " is not in [", absl::StrJoin(world_ranks, ","), "]"));
    }
    const int64_t seq = ++seq_;
    const std::string what = absl::StrCat("split into ", name);
    if (broken()) return broken_status(what, seq);
    const int colour = static_cast<int>(*std::min_element(world_ranks.begin(), world_ranks.end()));
    const int key = static_cast<int>(it - world_ranks.begin());
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t sub = nullptr;
    CHECK_CUDA(cudaSetDevice(device_));
    ncclResult_t r = ncclCommSplit(comm_, colour, key, &sub, &config);
    // The parent takes part in the split and the child is being created: wait for both to settle.
    Poller poll(timeout_s_);
    while (r == ncclInProgress || r == ncclSuccess) {
      ncclResult_t parent = ncclSuccess, child = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &parent) != ncclSuccess) parent = ncclInternalError;
      if (sub != nullptr && ncclCommGetAsyncError(sub, &child) != ncclSuccess) child = ncclInternalError;
      if (parent != ncclSuccess && parent != ncclInProgress) {
        r = parent;
      } else if (child != ncclSuccess && child != ncclInProgress) {
        r = child;
      } else if (parent == ncclSuccess && child == ncclSuccess) {
        r = ncclSuccess;
        break;
      } else if (!poll.keep_going()) {
        if (sub != nullptr) ncclCommAbort(sub);
        return time_out(what, seq, "");
      }
    }
    if (r != ncclSuccess) {
      const std::string error = nccl_error(r, sub != nullptr ? sub : comm_);
      if (sub != nullptr) ncclCommAbort(sub);
      return fail(absl::InternalError(absl::StrCat(describe(what, seq), ": NCCL error: ", error)));
    }
    CHECK(sub != nullptr) << "ncclCommSplit on " << name_ << " gave no communicator to a rank with a colour";
    int sub_size = 0, sub_rank = 0;
    ncclCommCount(sub, &sub_size);
    ncclCommUserRank(sub, &sub_rank);
    if (sub_size != static_cast<int>(world_ranks.size()) || sub_rank != key) {
      ncclCommAbort(sub);
      return absl::InvalidArgumentError(absl::StrCat(
          describe(what, seq), ": the groups do not partition ", name_, ": world rank ", my_world, " asked for [",
          absl::StrJoin(world_ranks, ","), "] as member ", key, " but NCCL formed a group of ", sub_size,
          " with it as member ", sub_rank, " (every member must pass the same list)"));
    }
    return std::unique_ptr<Communicator>(new NcclCommunicator(sub, device_, world_ranks, name, timeout_s_));
  }

  // ---- failure machinery, used by NcclHandle ----
  double timeout_s() const { return timeout_s_; }
  bool broken() const { return !broken_.ok(); }
  std::string describe(const std::string& what, int64_t seq) const {
    return absl::StrCat(what, seq > 0 ? absl::StrCat(" #", seq) : std::string(), " on ", name_, " [",
                        absl::StrJoin(members_, ","), "]");
  }
  Status broken_status(const std::string& what, int64_t seq) const {
    return absl::FailedPreconditionError(absl::StrCat(describe(what, seq),
                                                      ": the NCCL communicator was aborted after an earlier failure: ",
                                                      std::string(broken_.message())));
  }
  // The first failure aborts the NCCL communicator: after a timeout or an error, NCCL's state
  // (and what the peers have done) is unknown, so no further call may use it.
  Status fail(Status s) {
    if (!broken()) {
      broken_ = s;
      if (comm_ != nullptr) {
        cudaSetDevice(device_);  // unchecked: the failure may be a sticky CUDA error
        ncclCommAbort(comm_);
        comm_ = nullptr;
      }
    }
    return s;
  }
  Status time_out(const std::string& what, int64_t seq, const std::string& hint) {
    return fail(absl::DeadlineExceededError(absl::StrFormat(
        "%s timed out after %gs%s; the NCCL communicator was aborted", describe(what, seq), timeout_s_, hint)));
  }
  // OK while the communicator is healthy (or still settling); else the failure, and aborted.
  Status poll_async_error(const std::string& what, int64_t seq) {
    if (broken()) return broken_status(what, seq);
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) state = r;
    if (state == ncclSuccess || state == ncclInProgress) return OkStatus();
    return fail(absl::InternalError(absl::StrCat(describe(what, seq), ": NCCL error: ", nccl_error(state, comm_))));
  }

 private:
  // A collective: the next sequence number, issued now, completed through the handle.
  template <typename Call>
  std::unique_ptr<CommHandle> start(const char* what, Call&& call) {
    const int64_t seq = ++seq_;
    auto op = issue(what, seq, std::forward<Call>(call));
    return std::make_unique<NcclHandle>(this, what, seq, std::move(op));
  }

  // Issues one NCCL call (or group) and returns the op whose event follows it on the stream.
  // ncclInProgress means NCCL is still enqueuing it (e.g. connecting to peers): wait for that to
  // settle before anything else touches the communicator.
  template <typename Call>
  std::shared_ptr<Op> issue(const std::string& what, int64_t seq, Call&& call) {
    auto op = std::make_shared<Op>();
    if (broken()) {
      op->status = broken_status(what, seq);
      return op;
    }
    CHECK_CUDA(cudaSetDevice(device_));
    ncclResult_t r = call();
    Poller poll(timeout_s_);
    while (r == ncclInProgress) {
      if (!poll.keep_going()) {
        op->status = time_out(what, seq, " while NCCL was still enqueuing it");
        return op;
      }
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &r);
      if (q != ncclSuccess) r = q;
    }
    if (r != ncclSuccess) {
      op->status = fail(absl::InternalError(absl::StrCat(describe(what, seq), ": NCCL error: ", nccl_error(r, comm_))));
      return op;
    }
    record(*op);
    return op;
  }

  void record(Op& op) {
    CHECK_CUDA(cudaEventCreateWithFlags(&op.event, cudaEventDisableTiming));
    CHECK_CUDA(cudaEventRecord(op.event, stream_));
  }

  // A send to or receive from this rank: queued until its counterpart is issued, then one device
  // copy on the stream completes both. Matched in issue order, like NCCL's own messages.
  std::unique_ptr<CommHandle> message_to_self(std::string what, bool is_send, const void* send_data, void* recv_data,
                                              int64_t bytes) {
    auto op = std::make_shared<Op>();
    if (broken()) {
      op->status = broken_status(what, 0);
    } else if (is_send && !self_recvs_.empty()) {
      SelfMessage peer = std::move(self_recvs_.front());
      self_recvs_.pop_front();
      copy_to_self(peer.recv_data, peer.bytes, send_data, bytes, *op, *peer.op);
    } else if (!is_send && !self_sends_.empty()) {
      SelfMessage peer = std::move(self_sends_.front());
      self_sends_.pop_front();
      copy_to_self(recv_data, bytes, peer.send_data, peer.bytes, *peer.op, *op);
    } else {
      (is_send ? self_sends_ : self_recvs_).push_back(SelfMessage{send_data, recv_data, bytes, op});
    }
    return std::make_unique<NcclHandle>(this, std::move(what), 0, std::move(op));
  }
  void copy_to_self(void* dst, int64_t dst_bytes, const void* src, int64_t src_bytes, Op& send_op, Op& recv_op) {
    if (dst_bytes != src_bytes) {
      send_op.status = recv_op.status = absl::InvalidArgumentError(
          absl::StrCat("message to self on ", name_, ": a send of ", src_bytes, " bytes met a recv of ", dst_bytes,
                       " bytes (sends and receives match in issue order; NCCL has no tags)"));
      return;
    }
    CHECK_CUDA(cudaSetDevice(device_));
    if (dst_bytes > 0) CHECK_CUDA(cudaMemcpyAsync(dst, src, count(dst_bytes), cudaMemcpyDeviceToDevice, stream_));
    record(send_op);
    record(recv_op);
  }

  struct SelfMessage {
    const void* send_data;
    void* recv_data;
    int64_t bytes;
    std::shared_ptr<Op> op;
  };

  ncclComm_t comm_;  // null once aborted
  int device_;
  std::vector<int64_t> members_;
  std::string name_;
  double timeout_s_;
  int rank_ = 0, size_ = 1;
  int64_t seq_ = 0;
  cudaStream_t stream_ = nullptr;
  float* scratch_ = nullptr;  // (1,) on the device: the barrier's all-reduce
  Status broken_;             // the first failure; OK while usable
  std::deque<SelfMessage> self_sends_, self_recvs_;  // unmatched messages to self, in issue order
};

bool NcclHandle::test() {
  if (done_) return true;
  if (!op_->status.ok()) return done_ = true;
  if (op_->event == nullptr) {  // a message to self still waiting for its counterpart
    if (comm_->broken()) {
      op_->status = comm_->broken_status(what_, seq_);
      return done_ = true;
    }
    return false;
  }
  const cudaError_t e = cudaEventQuery(op_->event);
  if (e == cudaSuccess) {
    // After an abort NCCL's kernels end early: the event fires but the data is not there.
    if (comm_->broken()) op_->status = comm_->broken_status(what_, seq_);
    return done_ = true;
  }
  if (e != cudaErrorNotReady) {
    op_->status = comm_->fail(absl::InternalError(
        absl::StrCat(comm_->describe(what_, seq_), ": CUDA error while it ran: ", cudaGetErrorString(e))));
    return done_ = true;
  }
  Status async = comm_->poll_async_error(what_, seq_);
  if (!async.ok()) {
    op_->status = std::move(async);
    return done_ = true;
  }
  return false;
}

Status NcclHandle::wait() {
  Poller poll(comm_->timeout_s());
  while (!test()) {
    if (!poll.keep_going()) {
      const char* hint = op_->event == nullptr ? " (no matching message to self was issued)"
                                               : " (NCCL cannot tell which rank did not arrive)";
      op_->status = comm_->time_out(what_, seq_, hint);
      done_ = true;
    }
  }
  return op_->status;
}

std::string world_description(int size) {
  return size == 1 ? "world [0]" : absl::StrCat("world [0..", size - 1, "]");
}

}  // namespace
#endif  // STRATA_WITH_CUDA

StatusOr<std::unique_ptr<Communicator>> nccl_world_communicator(double timeout_s, int device) {
#ifndef STRATA_WITH_CUDA
  (void)timeout_s;
  (void)device;
  return absl::FailedPreconditionError(absl::StrCat("nccl_world_communicator: ", cuda_unavailable_reason()));
#else
  const int gpus = cuda_device_count();
  if (gpus == 0) {
    return absl::FailedPreconditionError(absl::StrCat("nccl_world_communicator: ", cuda_unavailable_reason()));
  }
  if (device < 0 || device >= gpus) {
    return absl::InvalidArgumentError(absl::StrCat("nccl_world_communicator: GPU ", device, " does not exist (", gpus,
                                                   " visible; CUDA_VISIBLE_DEVICES limits them)"));
  }
  int mpi_up = 0, mpi_down = 0;
  MPI_Initialized(&mpi_up);
  MPI_Finalized(&mpi_down);
  if (!mpi_up || mpi_down) {
    return absl::FailedPreconditionError(
        "nccl_world_communicator: MPI is not initialised (create an MpiEnv first): the ncclUniqueId travels over "
        "MPI_COMM_WORLD");
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string where = absl::StrCat(world_description(size), " (rank ", rank, ", GPU ", device, ")");
  CHECK_CUDA(cudaSetDevice(device));

  // Rank 0 sends the id and whether it has one, so no rank waits for an id that never comes.
  struct IdMessage {
    int32_t ok;
    ncclUniqueId id;
  } msg;
  std::memset(&msg, 0, sizeof(msg));
  if (rank == 0) msg.ok = ncclGetUniqueId(&msg.id) == ncclSuccess;
  MPI_Request request;
  MPI_Ibcast(&msg, static_cast<int>(sizeof(msg)), MPI_BYTE, 0, MPI_COMM_WORLD, &request);
  Poller bcast_poll(timeout_s);
  for (int flag = 0;;) {
    MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
    if (flag) break;
    if (!bcast_poll.keep_going()) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "nccl_world_communicator on %s: the ncclUniqueId from rank 0 did not arrive within %gs", where, timeout_s));
    }
  }
  if (!msg.ok) {
    return absl::InternalError(
        absl::StrCat("nccl_world_communicator on ", where, ": rank 0 could not create an ncclUniqueId",
                     rank == 0 ? absl::StrCat(": ", ncclGetLastError(nullptr)) : std::string()));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // calls return ncclInProgress instead of blocking: we poll them
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size, msg.id, rank, &config);
  Poller init_poll(timeout_s);
  while (r == ncclInProgress) {
    if (!init_poll.keep_going()) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(absl::StrFormat(
          "ncclCommInitRank on %s timed out after %gs (every rank must call nccl_world_communicator)", where,
          timeout_s));
    }
    const ncclResult_t q = ncclCommGetAsyncError(comm, &r);
    if (q != ncclSuccess) r = q;
  }
  if (r != ncclSuccess) {
    const std::string error = nccl_error(r, comm);
    if (comm != nullptr) ncclCommAbort(comm);
    return absl::InternalError(absl::StrCat("ncclCommInitRank on ", where, ": ", error));
  }
  std::vector<int64_t> members(static_cast<size_t>(size));
  for (int i = 0; i < size; ++i) members[i] = i;
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, device, std::move(members), "world", timeout_s));
#endif
}

}  // namespace strata
