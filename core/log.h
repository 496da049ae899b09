// Rank-aware logging. Rank 0 prints INFO to the console; every rank can also write all of its
// lines to its own file (the run directory's rank-XXXXX.log, set by the trainer). Warnings and
// errors from any rank reach stderr, prefixed with the rank so interleaved output stays readable.
//
//   LOG(INFO) << "step " << step << " loss " << loss;
//   LOG(WARN) << "grad norm is NaN; skipping step";
//
// The rank and sink are process identity, set once at start-up (set_log_rank after MPI_Init).
// write_fatal is the one output path of the fatal handlers (CHECK failures, uncaught exceptions,
// fatal signals): write(2) only, so it is safe inside a signal handler.
#pragma once

#include <cstddef>
#include <sstream>
#include <string>

namespace strata {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_log_rank(int rank);
int log_rank();
void set_log_level(LogLevel level);
LogLevel log_level();
// Appends every line this rank logs (any level >= the threshold) to `path`; "" closes the file.
bool set_log_file(const std::string& path);
// Parses "debug|info|warn|error"; returns false on anything else.
bool parse_log_level(const std::string& name, LogLevel* out);

// Writes `n` bytes of `text` (one or more whole lines) to stderr and appends them to this rank's
// log file, if one is open. No locks, no allocation: async-signal-safe.
void write_fatal(const char* text, size_t n);
// The log file's descriptor, or -1 without one (the fatal signal handler appends a stack to it).
int log_file_fd();

namespace internal {
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  template <typename T>
  LogLine& operator<<(const T& v) {
    os_ << v;
    return *this;
  }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream os_;
};
}  // namespace internal
}  // namespace strata

#define STRATA_LOG_DEBUG ::strata::LogLevel::kDebug
#define STRATA_LOG_INFO ::strata::LogLevel::kInfo
#define STRATA_LOG_WARN ::strata::LogLevel::kWarn
#define STRATA_LOG_ERROR ::strata::LogLevel::kError
#define LOG(level) ::strata::internal::LogLine(STRATA_LOG_##level, __FILE__, __LINE__)
