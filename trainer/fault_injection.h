// Fault injection for the failure tests (tests/cli/failure_test.sh): the training loops call
// maybe_inject_fault(step) at the top of every step, and the environment variable
//   STRATA_FAULT_INJECT="rank=R,step=S,kind=K"
// makes rank R fail in one of the ways a real run can, just before step S (S steps are done):
//   error  returns an Internal status "injected fault on rank R at step S"
//   throw  throws std::runtime_error with that text (an uncaught exception)
//   check  fails a CHECK with that text
//   segv   raises SIGSEGV
//   hang   sleeps forever: the other ranks' next collective times out (parallel.timeout_s)
// Unset or empty: nothing happens, at the cost of one comparison per step. A malformed value is an
// InvalidArgument error naming the variable, returned at the first step on every rank.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace strata {

enum class FaultKind { kError, kThrow, kCheck, kSegv, kHang };

struct FaultSpec {
  int64_t rank = 0;  // the rank that fails (log_rank(), the MPI world rank)
  int64_t step = 0;  // the loop step before which it fails (0 = before the first step)
  FaultKind kind = FaultKind::kError;
};

// Parses "rank=R,step=S,kind=K" (keys in any order, all three required).
StatusOr<FaultSpec> parse_fault_spec(const std::string& text);

// Fails as `spec` says when (rank, step) match it; returns OK otherwise.
Status inject_fault(const FaultSpec& spec, int64_t rank, int64_t step);

// The loops' hook: reads STRATA_FAULT_INJECT once, then inject_fault(spec, log_rank(), step).
Status maybe_inject_fault(int64_t step);

}  // namespace strata
