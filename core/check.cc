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
  std::fprintf(stderr, "[rank %d] %s:%d: %s%s%s\n", log_rank(), file_, line_, what_.c_str(),
               hint.empty() ? "" : ": ", hint.c_str());
  std::fflush(stderr);
  if (g_fatal) g_fatal();
  std::abort();
}
}  // namespace internal
}  // namespace strata
