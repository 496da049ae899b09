// Communicator: a group of ranks and the collectives Strata needs over it (DESIGN.md "The
// parallel layout", "Failures"). The MPI backend works on CPU buffers; an NCCL backend for GPU
// buffers is the CUDA backend issue's.
//
// Every call can time out. MPI has no collective timeouts, so each collective is issued
// non-blocking and polled against the communicator's deadline. Each rank also tells the group's
// first rank that it arrived at collective number k (a small message tagged k), so when a
// collective times out the first rank can name the ranks that never arrived:
//   "all_reduce #12 on dp [0,1,2,3] timed out after 5s; rank 2 did not arrive"
// Other ranks report what they waited for. Non-blocking forms return a handle whose wait()
// applies the same deadline; test() polls (the overlap of gradient all-reduces with backward
// polls it between layers: Open MPI has no progress thread).
//
// Buffers are counted in elements of the call's type; all_to_all_v counts bytes. All calls of a
// communicator happen in the same order on every member (they are collectives).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace strata {

enum class ReduceOp { kSum, kMax };

// An operation in flight.
class CommHandle {
 public:
  virtual ~CommHandle() = default;
  virtual bool test() = 0;     // true once complete (then wait() returns at once)
  virtual Status wait() = 0;   // DeadlineExceeded naming the collective on timeout
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // World ranks of the members, in this communicator's rank order.
  virtual const std::vector<int64_t>& members() const = 0;
  virtual const std::string& name() const = 0;

  // In place over all members. data: (n,).
  virtual Status all_reduce(float* data, int64_t n, ReduceOp op) = 0;
  virtual Status all_reduce(double* data, int64_t n, ReduceOp op) = 0;
  virtual std::unique_ptr<CommHandle> iall_reduce(float* data, int64_t n, ReduceOp op) = 0;
  // in: (size * n,), out: (n,) = this rank's block of the reduction.
  virtual Status reduce_scatter(const float* in, float* out, int64_t n, ReduceOp op) = 0;
  virtual std::unique_ptr<CommHandle> ireduce_scatter(const float* in, float* out, int64_t n, ReduceOp op) = 0;
  // in: (n,), out: (size * n,) = every member's block in rank order.
  virtual Status all_gather(const float* in, float* out, int64_t n) = 0;
  virtual std::unique_ptr<CommHandle> iall_gather(const float* in, float* out, int64_t n) = 0;
  // Bytes: send_counts[r] from send (packed in rank order) to rank r; recv_counts[r] from r.
  virtual Status all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                              const std::vector<int64_t>& recv_counts) = 0;
  virtual Status send(const void* data, int64_t bytes, int dest, int tag) = 0;
  virtual Status recv(void* data, int64_t bytes, int src, int tag) = 0;
  virtual std::unique_ptr<CommHandle> isend(const void* data, int64_t bytes, int dest, int tag) = 0;
  virtual std::unique_ptr<CommHandle> irecv(void* data, int64_t bytes, int src, int tag) = 0;
  virtual Status broadcast(void* data, int64_t bytes, int root) = 0;
  virtual Status barrier() = 0;

  // The communicator of `world_ranks` (this rank among them), named for messages ("dp", "ep").
  // Every rank of this communicator calls it, each with its own group; groups must partition it.
  virtual StatusOr<std::unique_ptr<Communicator>> split(const std::vector<int64_t>& world_ranks,
                                                        const std::string& name) = 0;
};

// MPI_COMM_WORLD (MPI must be initialised, e.g. by MpiEnv). timeout_s: per collective.
std::unique_ptr<Communicator> mpi_world_communicator(double timeout_s);

}  // namespace strata
