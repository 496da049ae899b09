#include "parallel/mpi_env.h"

#include <execinfo.h>
#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "core/check.h"
#include "core/log.h"

namespace strata {
namespace {

// Set once a fatal message has been printed (CHECK, uncaught exception, signal), so the SIGABRT
// that std::abort raises afterwards does not print a second, misleading one.
std::atomic<bool> g_reported{false};
// Whether lines start "rank R:" (the process is an MPI rank) or "strata:" (a plain run).
std::atomic<bool> g_under_mpi{false};

constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

// The signal handler runs here, so a stack overflow can still be reported (main thread only).
alignas(16) char g_alt_stack[64 * 1024];

// A fixed-size line built without allocation: usable inside a signal handler.
class FatalLine {
 public:
  FatalLine& add(const char* s) {
    while (*s && n_ < sizeof buf_ - 1) buf_[n_++] = *s++;
    return *this;
  }
  FatalLine& add_int(long v) {
    char tmp[24];
    int k = 0;
    const bool neg = v < 0;
    unsigned long u = neg ? 0UL - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
    do {
      tmp[k++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u > 0);
    if (neg) tmp[k++] = '-';
    while (k > 0 && n_ < sizeof buf_ - 1) buf_[n_++] = tmp[--k];
    return *this;
  }
  FatalLine& add_hex(uintptr_t v) {
    add("0x");
    char tmp[20];
    int k = 0;
    do {
      tmp[k++] = "0123456789abcdef"[v & 15];
      v >>= 4;
    } while (v > 0);
    while (k > 0 && n_ < sizeof buf_ - 1) buf_[n_++] = tmp[--k];
    return *this;
  }
  FatalLine& prefix() {
    if (g_under_mpi.load()) return add("rank ").add_int(log_rank()).add(": ");
    return add("strata: ");
  }
  // Ends the line and writes it to stderr and the rank's log.
  void write() {
    buf_[n_++] = '\n';
    write_fatal(buf_, n_);
  }

 private:
  char buf_[1024];
  size_t n_ = 0;
};

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV (Segmentation fault)";
    case SIGBUS: return "SIGBUS (Bus error)";
    case SIGFPE: return "SIGFPE (Floating point exception)";
    case SIGILL: return "SIGILL (Illegal instruction)";
    case SIGABRT: return "SIGABRT (Aborted)";
  }
  return "(unknown signal)";
}

// The stack of the failing thread, appended to the rank's log only: the console keeps one line.
void write_stack_to_log() {
  const int fd = log_file_fd();
  if (fd < 0) return;
  void* frames[64];
  const int n = backtrace(frames, 64);
  static const char kHead[] = "stack (addr2line -C -f -e <binary> <offset> resolves a frame):\n";
  if (::write(fd, kHead, sizeof kHead - 1) < 0) return;
  backtrace_symbols_fd(frames, n, fd);
}

void restore_default(int sig) {
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

[[noreturn]] void end_job(int code) {
  g_reported = true;
  if (MpiEnv::active()) MPI_Abort(MPI_COMM_WORLD, code);  // mpirun ends every other rank
  restore_default(SIGABRT);
  std::abort();
}

// The CHECK failure handler (core/check.h): the message is already printed.
void on_check_failure() { end_job(1); }

void on_terminate() {
  if (!g_reported.exchange(true)) {
    std::string what = "std::terminate called without an active exception";
    if (std::exception_ptr e = std::current_exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        what = std::string("uncaught exception: ") + ex.what();
      } catch (...) {
        what = "uncaught exception of a type not derived from std::exception";
      }
    }
    FatalLine line;
    line.prefix().add(what.c_str()).write();
    write_stack_to_log();  // GCC does not unwind an uncaught exception: this is the throw site
  }
  end_job(1);
}

void on_fatal_signal(int sig, siginfo_t* info, void*) {
  if (!g_reported.exchange(true)) {
    FatalLine line;
    line.prefix().add("fatal signal ").add(signal_name(sig));
    if ((sig == SIGSEGV || sig == SIGBUS) && info != nullptr && info->si_code > 0) {  // from the kernel
      line.add(" at address ").add_hex(reinterpret_cast<uintptr_t>(info->si_addr));
    }
    line.write();
    write_stack_to_log();
  }
  // The default action ends the process by this signal (blocked until the handler returns), so
  // mpirun reports it and ends the other ranks.
  restore_default(sig);
  raise(sig);
}

}  // namespace

void install_fatal_handlers() {
  g_under_mpi = MpiEnv::active();
  set_fatal_handler(on_check_failure);
  std::set_terminate(on_terminate);
  {  // the first backtrace() loads libgcc (it allocates): do it now, not inside a handler
    void* frame[1];
    (void)backtrace(frame, 1);
  }
  stack_t ss = {};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = sizeof g_alt_stack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa = {};
  sa.sa_sigaction = on_fatal_signal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int sig : kFatalSignals) sigaction(sig, &sa, nullptr);
}

MpiEnv::MpiEnv(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    CHECK_GE(provided, MPI_THREAD_FUNNELED) << "the MPI library lacks MPI_THREAD_FUNNELED";
    owns_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  set_log_rank(rank_);
  install_fatal_handlers();  // after MPI_Init: replaces Open MPI's signal handlers
}

bool MpiEnv::launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID", "MPI_LOCALNRANKS"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

void MpiEnv::abort_all(int code) const {
  // The failing command printed its error; say which rank ends the job, on stderr and in its log.
  FatalLine line;
  line.prefix().add("failed (exit code ").add_int(code).add("); ending every rank of the job");
  line.write();
  g_reported = true;
  MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

bool MpiEnv::active() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

MpiEnv::~MpiEnv() {
  // The CHECK handler stays: once MPI is finalised it ends this process alone.
  if (owns_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  g_under_mpi = false;
}

}  // namespace strata
