// Status and StatusOr for everything a user controls (configs, data files, checkpoints, command
// lines): errors are values that carry context ("configs/x.yaml:12: parallel.ep: ..."), never
// exceptions across library boundaries. Broken invariants use CHECK (core/check.h) instead.
//
// RETURN_IF_ERROR(expr)          returns the Status of expr when it is not OK.
// ASSIGN_OR_RETURN(lhs, expr)    evaluates a StatusOr; returns its Status on error, else assigns.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace strata {

using Status = absl::Status;
template <typename T>
using StatusOr = absl::StatusOr<T>;

inline Status OkStatus() { return absl::OkStatus(); }

// Prefixes a status message with context, keeping its code: "while loading x: <message>".
inline Status annotate(const Status& s, std::string_view context) {
  if (s.ok()) return s;
  return Status(s.code(), absl::StrCat(std::string(context), ": ", std::string(s.message())));
}

}  // namespace strata

#define STRATA_CONCAT_INNER(a, b) a##b
#define STRATA_CONCAT(a, b) STRATA_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::strata::Status _strata_status = (expr);        \
    if (!_strata_status.ok()) return _strata_status; \
  } while (0)

#define STRATA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  STRATA_ASSIGN_OR_RETURN_IMPL(STRATA_CONCAT(_strata_statusor_, __LINE__), lhs, expr)
