// MpiEnv: the process's MPI lifetime. It initialises MPI (thread level FUNNELED: only the main
// thread calls MPI), tells logging its rank, and installs the fatal handler that turns any
// rank's CHECK failure into MPI_Abort, so one failing rank ends the whole job with its own error
// printed first instead of leaving the others hanging in a collective (DESIGN.md "Failures").
// Communicators (parallel/communicator.h) and rank groups (parallel/dims.h) are built on top of it.
//
// install_fatal_handlers (called by MpiEnv, and by main for a plain run) makes every other way a
// process can die say which rank died and why, in one line on stderr and in the rank's log:
//   rank 1: uncaught exception: <what()>          -> MPI_Abort: mpirun ends the other ranks
//   rank 1: fatal signal SIGSEGV (Segmentation fault)  -> the stack goes to the rank's log, the
//       signal is re-raised with its default action, and mpirun ends the other ranks
// Without MPI the lines start "strata:" instead of "rank R:".
#pragma once

namespace strata {

// Installs the terminate handler, the fatal-signal handlers (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGABRT) and the CHECK failure handler. Idempotent; call again after MPI_Init, which installs
// Open MPI's own signal handlers over these.
void install_fatal_handlers();

class MpiEnv {
 public:
  // Initialises MPI unless it already is (then it neither re-initialises nor finalises).
  MpiEnv(int* argc, char*** argv);
  ~MpiEnv();
  MpiEnv(const MpiEnv&) = delete;
  MpiEnv& operator=(const MpiEnv&) = delete;

  // Whether this process was started by a launcher that expects MPI (mpirun, srun, ...): the
  // strata binary initialises MPI only then, so a plain run needs no MPI runtime.
  static bool launched_by_mpi();
  // Whether MPI is initialised (by an MpiEnv or anyone else) and not yet finalised.
  static bool active();

  // Ends every rank of the job with `code` (a rank that failed must not leave the others waiting
  // in a collective).
  [[noreturn]] void abort_all(int code) const;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

 private:
  bool owns_ = false;
  int rank_ = 0;
  int world_size_ = 1;
};

}  // namespace strata
