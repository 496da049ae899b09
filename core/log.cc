#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace strata {
namespace {
int g_rank = 0;
LogLevel g_level = LogLevel::kInfo;
std::FILE* g_file = nullptr;
std::atomic<int> g_file_fd{-1};  // g_file's descriptor, read by the fatal paths without the lock
std::mutex g_mu;

const char* level_tag(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarn: return "W";
    case LogLevel::kError: return "E";
  }
  return "?";
}
}  // namespace

void set_log_rank(int rank) { g_rank = rank; }
int log_rank() { return g_rank; }
void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

bool set_log_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_file_fd = -1;
  if (g_file) std::fclose(g_file);
  g_file = nullptr;
  if (path.empty()) return true;
  g_file = std::fopen(path.c_str(), "a");
  if (g_file) g_file_fd = fileno(g_file);
  return g_file != nullptr;
}

int log_file_fd() { return g_file_fd; }

void write_fatal(const char* text, size_t n) {
  // Every LOG line is flushed as it is written, so appending past the FILE's buffer keeps order.
  for (int fd : {STDERR_FILENO, g_file_fd.load()}) {
    if (fd < 0) continue;
    size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(fd, text + done, n - done);
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
  }
}

bool parse_log_level(const std::string& name, LogLevel* out) {
  if (name == "debug") *out = LogLevel::kDebug;
  else if (name == "info") *out = LogLevel::kInfo;
  else if (name == "warn") *out = LogLevel::kWarn;
  else if (name == "error") *out = LogLevel::kError;
  else return false;
  return true;
}

namespace internal {
LogLine::LogLine(LogLevel level, const char* file, int line) : level_(level), file_(file), line_(line) {}

LogLine::~LogLine() {
  if (level_ < g_level) return;
  std::string msg = os_.str();
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_file) {
    auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char ts[32];
    std::strftime(ts, sizeof ts, "%H:%M:%S", std::localtime(&now));
    std::fprintf(g_file, "%s %s [rank %d] %s\n", ts, level_tag(level_), g_rank, msg.c_str());
    std::fflush(g_file);
  }
  if (level_ >= LogLevel::kWarn) {
    std::fprintf(stderr, "[rank %d] %s: %s\n", g_rank, level_ == LogLevel::kWarn ? "warning" : "error",
                 msg.c_str());
  } else if (g_rank == 0) {
    std::fprintf(stdout, "%s\n", msg.c_str());
    std::fflush(stdout);
  }
}
}  // namespace internal
}  // namespace strata
