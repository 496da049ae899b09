// CHECK macros for broken invariants and failed CUDA/NCCL/MPI calls: they print the rank,
// file:line, the failed condition (with both values for CHECK_EQ and friends) and an optional
// hint streamed after the macro, then end the process through the fatal handler (the parallel
// layer installs one that calls MPI_Abort, so one rank's failure ends the whole job, not a hang).
//
//   CHECK(ptr != nullptr) << "allocator returned null for " << bytes << " bytes";
//   CHECK_EQ(a.shape(), b.shape()) << "gemm operands";
//
// User input never reaches a CHECK: it returns a Status (core/status.h).
#pragma once

#include <sstream>
#include <string>

namespace strata {

// Called after the message is printed; must not return. Default: std::abort().
using FatalHandler = void (*)();
void set_fatal_handler(FatalHandler handler);

namespace internal {

// Collects the hint streamed after a failing CHECK and dies in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const std::string& what);
  [[noreturn]] ~CheckFailure();
  template <typename T>
  CheckFailure& operator<<(const T& v) {
    hint_ << v;
    return *this;
  }

 private:
  const char* file_;
  int line_;
  std::string what_;
  std::ostringstream hint_;
};

// Lets `CHECK(c) << x;` be a single expression statement that costs nothing when c holds.
struct Voidify {
  void operator&(const CheckFailure&) {}
};

template <typename A, typename B>
std::string check_op_message(const char* expr, const A& a, const B& b) {
  std::ostringstream os;
  os << expr << " (" << a << " vs " << b << ")";
  return os.str();
}

}  // namespace internal
}  // namespace strata

#define CHECK(cond)                      \
  (cond) ? (void)0                       \
         : ::strata::internal::Voidify() & \
               ::strata::internal::CheckFailure(__FILE__, __LINE__, "CHECK failed: " #cond)

#define STRATA_CHECK_OP(op, a, b)                                                            \
  ((a)op(b)) ? (void)0                                                                       \
             : ::strata::internal::Voidify() &                                               \
                   ::strata::internal::CheckFailure(                                         \
                       __FILE__, __LINE__,                                                   \
                       ::strata::internal::check_op_message("CHECK failed: " #a " " #op " " #b, \
                                                            (a), (b)))

#define CHECK_EQ(a, b) STRATA_CHECK_OP(==, a, b)
#define CHECK_NE(a, b) STRATA_CHECK_OP(!=, a, b)
#define CHECK_LT(a, b) STRATA_CHECK_OP(<, a, b)
#define CHECK_LE(a, b) STRATA_CHECK_OP(<=, a, b)
#define CHECK_GT(a, b) STRATA_CHECK_OP(>, a, b)
#define CHECK_GE(a, b) STRATA_CHECK_OP(>=, a, b)

// Unconditional failure for unreachable code: FATAL() << "unknown dtype " << d;
#define FATAL() ::strata::internal::Voidify() & ::strata::internal::CheckFailure(__FILE__, __LINE__, "FATAL")
