// Fault injection's spec parser and its error kind; the other kinds end the process and are
// exercised under mpirun by tests/cli/failure_test.sh.
#include "trainer/fault_injection.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace strata {
namespace {

using ::testing::HasSubstr;

TEST(FaultInjection, ParsesEveryKindInAnyKeyOrder) {
  StatusOr<FaultSpec> s = parse_fault_spec("kind=hang,step=7,rank=3");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->rank, 3);
  EXPECT_EQ(s->step, 7);
  EXPECT_EQ(s->kind, FaultKind::kHang);
  for (const char* k : {"error", "throw", "check", "segv", "hang"}) {
    EXPECT_TRUE(parse_fault_spec(std::string("rank=0,step=0,kind=") + k).ok()) << k;
  }
}

TEST(FaultInjection, RefusesMalformedSpecsByName) {
  auto message = [](const std::string& text) { return std::string(parse_fault_spec(text).status().message()); };
  EXPECT_THAT(message("rank=1,step=2"), HasSubstr("missing kind"));
  EXPECT_THAT(message("rank=1,step=2,kind=explode"), HasSubstr("\"explode\" is not one of error"));
  EXPECT_THAT(message("rank=x,step=2,kind=error"), HasSubstr("rank: expected an integer >= 0, got \"x\""));
  EXPECT_THAT(message("rank=1,step=2,kind=error,when=now"), HasSubstr("unknown key \"when\""));
  EXPECT_THAT(message("rank1"), HasSubstr("\"rank1\" is not key=value"));
  EXPECT_EQ(parse_fault_spec("rank=1").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FaultInjection, ActsOnlyOnItsRankAndStep) {
  const FaultSpec spec = *parse_fault_spec("rank=1,step=2,kind=error");
  EXPECT_TRUE(inject_fault(spec, 0, 2).ok());
  EXPECT_TRUE(inject_fault(spec, 1, 1).ok());
  EXPECT_TRUE(inject_fault(spec, 1, 3).ok());
  Status st = inject_fault(spec, 1, 2);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(st.message(), "injected fault on rank 1 at step 2");
}

TEST(FaultInjection, ThrowKindThrows) {
  const FaultSpec spec = *parse_fault_spec("rank=0,step=0,kind=throw");
  EXPECT_THROW((void)inject_fault(spec, 0, 0), std::runtime_error);
}

}  // namespace
}  // namespace strata
