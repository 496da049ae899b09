// The NCCL backend of Communicator (parallel/communicator.h), for GPU buffers. Every pointer
// passed to it is device memory on the communicator's GPU (cudaMalloc'd); counts are elements of
// the call's type as in communicator.h (bytes for all_to_all_v, send/recv and broadcast).
// The MPI backend (mpi_world_communicator) is the one for CPU buffers.
//
// Ordering: each communicator runs its work on its own CUDA stream, created as a blocking stream,
// so it waits for work the caller put on the legacy default stream; work on other (non-blocking)
// streams must be finished or synchronised by the caller first. A blocking call returns once the
// GPU work is complete; a handle's test()/wait() say when the buffers may be touched again.
// Operations in flight on several communicators at once must be started in the same order on
// every rank (NCCL's rule; the GPU cannot run them in an arbitrary interleaving).
//
// Point-to-point: NCCL has no tags. Sends and receives between a pair of ranks match in the order
// they are issued, and the tag only appears in error messages. Each isend/irecv is its own NCCL
// operation on the stream and holds it until its peer takes part, so two ranks that both send
// first and receive second deadlock (until the deadline): pair one rank's send with the other's
// receive in issue order. A rank may send to itself (a device copy, matched in order).
//
// Timeouts and failures mirror the MPI backend: every call is issued non-blocking (an NCCL
// communicator created with blocking = 0) and polled against the deadline with
// ncclCommGetAsyncError and the operation's CUDA event. A timeout returns DeadlineExceeded naming
// the collective, its sequence number and the communicator ("all_reduce #12 on dp [0,1,2,3]
// timed out after 5s"); a timeout or an NCCL error aborts the NCCL communicator (ncclCommAbort),
// after which every call on it returns FailedPrecondition naming the first failure. NCCL cannot
// say which rank never arrived.
#pragma once

#include <memory>

#include "core/status.h"
#include "parallel/communicator.h"

namespace strata {

// MPI_COMM_WORLD as an NCCL communicator named "world": rank 0 creates the ncclUniqueId and
// broadcasts it over MPI_COMM_WORLD, and each rank uses GPU `device` (one GPU per rank: NCCL
// refuses two ranks on one GPU). Every rank of MPI_COMM_WORLD calls it. MPI must be initialised
// (e.g. by MpiEnv). timeout_s: per call, and for the communicator's creation.
// Errors: FailedPrecondition when the build has no CUDA, no GPU is usable, or MPI is not
// initialised; InvalidArgument for a device index out of range; DeadlineExceeded when the other
// ranks do not join within timeout_s.
StatusOr<std::unique_ptr<Communicator>> nccl_world_communicator(double timeout_s, int device);

}  // namespace strata
