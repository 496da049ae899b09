#include "trainer/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <stdexcept>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/check.h"
#include "core/log.h"

namespace strata {
namespace {

constexpr char kVariable[] = "STRATA_FAULT_INJECT";
constexpr char kForm[] = "expected rank=R,step=S,kind=error|throw|check|segv|hang";

std::optional<FaultKind> kind_of(absl::string_view name) {
  if (name == "error") return FaultKind::kError;
  if (name == "throw") return FaultKind::kThrow;
  if (name == "check") return FaultKind::kCheck;
  if (name == "segv") return FaultKind::kSegv;
  if (name == "hang") return FaultKind::kHang;
  return std::nullopt;
}

// The parsed variable: nullopt when unset or empty, an error when malformed.
const StatusOr<std::optional<FaultSpec>>& spec_from_environment() {
  static const StatusOr<std::optional<FaultSpec>> spec = []() -> StatusOr<std::optional<FaultSpec>> {
    const char* value = std::getenv(kVariable);
    if (value == nullptr || *value == '\0') return std::optional<FaultSpec>();
    StatusOr<FaultSpec> parsed = parse_fault_spec(value);
    if (!parsed.ok()) return annotate(parsed.status(), absl::StrCat(kVariable, "=\"", value, "\""));
    return std::optional<FaultSpec>(*parsed);
  }();
  return spec;
}

}  // namespace

StatusOr<FaultSpec> parse_fault_spec(const std::string& text) {
  FaultSpec spec;
  bool has_rank = false, has_step = false, has_kind = false;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("\"", item, "\" is not key=value; ", kForm));
    }
    const absl::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "rank" || key == "step") {
      int64_t n = 0;
      if (!absl::SimpleAtoi(value, &n) || n < 0) {
        return absl::InvalidArgumentError(absl::StrCat(key, ": expected an integer >= 0, got \"", value, "\""));
      }
      (key == "rank" ? spec.rank : spec.step) = n;
      (key == "rank" ? has_rank : has_step) = true;
    } else if (key == "kind") {
      std::optional<FaultKind> kind = kind_of(value);
      if (!kind) {
        return absl::InvalidArgumentError(
            absl::StrCat("kind: \"", value, "\" is not one of error, throw, check, segv, hang"));
      }
      spec.kind = *kind;
      has_kind = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown key \"", key, "\"; ", kForm));
    }
  }
  if (!has_rank || !has_step || !has_kind) {
    return absl::InvalidArgumentError(absl::StrCat("missing ", !has_rank ? "rank" : !has_step ? "step" : "kind",
                                                   "; ", kForm));
  }
  return spec;
}

Status inject_fault(const FaultSpec& spec, int64_t rank, int64_t step) {
  if (rank != spec.rank || step != spec.step) return OkStatus();
  const std::string what = absl::StrCat("injected fault on rank ", rank, " at step ", step);
  switch (spec.kind) {
    case FaultKind::kError:
      return absl::InternalError(what);
    case FaultKind::kThrow:
      throw std::runtime_error(what);
    case FaultKind::kCheck:
      CHECK(false) << what;
      break;
    case FaultKind::kSegv:
      LOG(WARN) << what << ": raising SIGSEGV";
      raise(SIGSEGV);
      break;
    case FaultKind::kHang:
      LOG(WARN) << what << ": hanging; the other ranks' next collective times out";
      for (;;) pause();  // until mpirun ends this rank
  }
  return OkStatus();
}

Status maybe_inject_fault(int64_t step) {
  const StatusOr<std::optional<FaultSpec>>& spec = spec_from_environment();
  if (!spec.ok()) return spec.status();
  if (!spec->has_value()) return OkStatus();
  return inject_fault(**spec, log_rank(), step);
}

}  // namespace strata
