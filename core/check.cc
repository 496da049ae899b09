#include "core/check.h"

#include <cstdio>
#include <cstdlib>

#include "core/log.h"

namespace strata {
namespace {
FatalHandler g_fatal = nullptr;
}

void set_fatal_handler(FatalHandler handler) { g_fatal = handler; }

namespace internal {
CheckFailure::CheckFailure(const char* file, int line, const std::string& what)
    : file_(file), line_(line), what_(what) {}

CheckFailure::~CheckFailure() {
  std::string hint = hint_.str();
  char head[64];
  std::snprintf(head, sizeof head, "[rank %d] ", log_rank());
  const std::string msg = std::string(head) + file_ + ":" + std::to_string(line_) + ": " + what_ +
                          (hint.empty() ? "" : ": ") + hint + "\n";
  std::fflush(stderr);
  write_fatal(msg.data(), msg.size());  // stderr and this rank's log file
  if (g_fatal) g_fatal();
  std::abort();
}
}  // namespace internal
}  // namespace strata
