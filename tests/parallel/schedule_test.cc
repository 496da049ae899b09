// parallel/schedule.h without compute: every schedule for p in {2, 4} and m in {p, 2p} (and
// 2p + 1 where the schedule allows it) validates, its simulated bubble equals REFERENCE.md
// section 4's closed form, and it holds the activations its design promises; validation
// catches a broken order, a mismatched message and a deadlock.
#include "parallel/pipeline.h"
#include "parallel/schedule.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace strata {
namespace {

struct Costs {
  double F, B, W;
};

struct Case {
  ScheduleKind kind;
  int p, m, v;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int p : {2, 4}) {
    for (int m : {p, 2 * p, 2 * p + 1}) {
      out.push_back({ScheduleKind::kGpipe, p, m, 1});
      out.push_back({ScheduleKind::k1F1B, p, m, 1});
      out.push_back({ScheduleKind::kZbH1, p, m, 1});
      if (m % p == 0) out.push_back({ScheduleKind::kInterleaved1F1B, p, m, 2});
    }
  }
  return out;
}

std::string name(const Case& c) {
  return std::string(schedule_name(c.kind)) + " p=" + std::to_string(c.p) + " m=" + std::to_string(c.m) +
         " v=" + std::to_string(c.v);
}

TEST(Schedule, EveryScheduleValidates) {
  for (const Case& c : cases()) {
    auto s = make_schedule(c.kind, c.p, c.m, c.v);
    ASSERT_TRUE(s.ok()) << name(c) << ": " << s.status().message();
    EXPECT_TRUE(validate_schedule(*s).ok()) << name(c) << ": " << validate_schedule(*s).message();
  }
}

TEST(Schedule, SimulatedBubblesEqualTheClosedForms) {
  // Equal costs for every schedule; unequal ones where the closed form holds for any costs.
  for (const Case& c : cases()) {
    std::vector<Costs> costs = {{1, 1, 1}};
    if (c.kind != ScheduleKind::kZbH1) costs.push_back({1, 2, 0.5});
    for (const Costs& k : costs) {
      auto s = make_schedule(c.kind, c.p, c.m, c.v);
      ASSERT_TRUE(s.ok());
      const ScheduleSim sim = simulate_schedule(*s, k.F, k.B, k.W);
      const double want = schedule_bubble_formula(c.kind, c.p, c.v, k.F, k.B, k.W);
      EXPECT_NEAR(sim.bubble, want, 1e-9) << name(c) << " F=" << k.F << " B=" << k.B << " W=" << k.W << "\n"
                                          << format_schedule(*s, k.F, k.B, k.W, 0.5);
      EXPECT_NEAR(sim.bubble_ratio, want / (c.m * (k.F + k.B + k.W) + want), 1e-9) << name(c);
    }
  }
}

TEST(Schedule, ActivationPeaks) {
  for (const Case& c : cases()) {
    auto s = make_schedule(c.kind, c.p, c.m, c.v);
    ASSERT_TRUE(s.ok());
    const ScheduleSim sim = simulate_schedule(*s, 1, 1, 1);
    for (int r = 0; r < c.p; ++r) {
      switch (c.kind) {
        case ScheduleKind::kGpipe: EXPECT_EQ(sim.activation_peak[r], c.m) << name(c) << " rank " << r; break;
        case ScheduleKind::k1F1B:  // 1F1B: p - r in flight (fewer with fewer micro-batches)
          EXPECT_EQ(sim.activation_peak[r], std::min(c.p - r, c.m)) << name(c) << " rank " << r;
          break;
        case ScheduleKind::kZbH1:  // ZB-H1 keeps 1F1B's memory
          EXPECT_LE(sim.activation_peak[r], std::min(c.p - r, c.m)) << name(c) << " rank " << r;
          break;
        case ScheduleKind::kInterleaved1F1B:  // Megatron's warm-up plus the one in flight
          EXPECT_EQ(sim.activation_peak[r], std::min((c.p - r - 1) * 2 + (c.v - 1) * c.p + 1, c.m * c.v))
              << name(c) << " rank " << r;
          break;
      }
    }
  }
}

TEST(Schedule, ZbH1BeatsOneFOneB) {
  auto one = make_schedule(ScheduleKind::k1F1B, 4, 8);
  auto zb = make_schedule(ScheduleKind::kZbH1, 4, 8);
  ASSERT_TRUE(one.ok() && zb.ok());
  EXPECT_LT(simulate_schedule(*zb, 1, 1, 1).bubble, simulate_schedule(*one, 1, 1, 1).bubble);
}

TEST(Schedule, RefusesBadShapes) {
  EXPECT_FALSE(make_schedule(ScheduleKind::k1F1B, 0, 4).ok());
  EXPECT_FALSE(make_schedule(ScheduleKind::k1F1B, 2, 4, 2).ok());
  auto s = make_schedule(ScheduleKind::kInterleaved1F1B, 4, 6, 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.status().message()).find("multiple of p = 4"), std::string::npos);
}

TEST(Schedule, ValidationCatchesBrokenSchedules) {
  auto base = make_schedule(ScheduleKind::k1F1B, 2, 2);
  ASSERT_TRUE(base.ok());
  {  // B before its F on rank 1
    Schedule s = *base;
    std::vector<PipeOp>& ops = s.ranks[1];
    for (size_t i = 0; i < ops.size(); ++i)
      if (ops[i].kind == PipeOpKind::kF && ops[i].micro == 0) {
        ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    EXPECT_NE(std::string(validate_schedule(s).message()).find("rank 1"), std::string::npos);
  }
  {  // rank 0 sends micro-batch 1 where rank 1 expects 0
    Schedule s = *base;
    for (PipeOp& op : s.ranks[0])
      if (op.kind == PipeOpKind::kSend) {
        op.micro = 1 - op.micro;
        break;
      }
    EXPECT_NE(std::string(validate_schedule(s).message()).find("does not match"), std::string::npos);
  }
  {  // rank 1 waits for the gradient of micro-batch 0 before doing the forward that makes it
    Schedule s;
    s.kind = ScheduleKind::k1F1B;
    s.p = 2;
    s.m = 1;
    s.ranks = {{{PipeOpKind::kF, 0, 0, -1, false}, {PipeOpKind::kSend, 0, 0, 1, false},
                {PipeOpKind::kRecv, 0, 0, 1, true}, {PipeOpKind::kB, 0, 0, -1, false}},
               {{PipeOpKind::kRecv, 0, 0, 0, true}, {PipeOpKind::kRecv, 0, 0, 0, false},
                {PipeOpKind::kF, 0, 0, -1, false}, {PipeOpKind::kB, 0, 0, -1, false},
                {PipeOpKind::kSend, 0, 0, 0, true}}};
    const std::string msg(validate_schedule(s).message());
    EXPECT_FALSE(msg.empty());
  }
}

TEST(Schedule, PrintsATimeline) {
  auto s = make_schedule(ScheduleKind::k1F1B, 2, 2);
  ASSERT_TRUE(s.ok());
  const std::string text = format_schedule(*s, 1, 1, 1);
  EXPECT_NE(text.find("rank 0: F0 F1 B0 B1"), std::string::npos) << text;
  EXPECT_NE(text.find("bubble"), std::string::npos);
}

TEST(Pipeline, BalancesStagesByCost) {
  // Equal blocks split evenly; a head as costly as two blocks moves two blocks off the last stage.
  EXPECT_EQ(balance_stages({1, 1, 1, 1}, 2, 0, 0), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(balance_stages({1, 1, 1, 1, 1, 1}, 2, 0, 2), (std::vector<int64_t>{4, 2}));
  // Every stage gets a block even when one block dominates.
  EXPECT_EQ(balance_stages({10, 1, 1}, 3, 0, 0), (std::vector<int64_t>{1, 1, 1}));
  // A costly MoE block in the middle: stages 0 and 1 take [1, 1] and [4], stage 2 [1, 1].
  EXPECT_EQ(balance_stages({1, 1, 4, 1, 1}, 3, 0, 0), (std::vector<int64_t>{2, 1, 2}));
}

TEST(Pipeline, ForwardOnlyScheduleCarriesActivations) {
  const Schedule s = forward_only_schedule(2, 2, 2);
  // Rank 0 runs chunks 0 and 1 (virtual stages 0, 2); rank 1 virtual stages 1, 3.
  std::string r0, r1;
  for (const PipeOp& op : s.ranks[0]) r0 += std::to_string(static_cast<int>(op.kind)) + std::to_string(op.chunk) + " ";
  for (const PipeOp& op : s.ranks[1]) r1 += std::to_string(static_cast<int>(op.kind)) + std::to_string(op.chunk) + " ";
  // kF = 0, kSend = 3, kRecv = 4
  EXPECT_EQ(r0, "00 30 41 01 31 00 30 41 01 31 ");
  EXPECT_EQ(r1, "40 00 30 41 01 40 00 30 41 01 ");
}

}  // namespace
}  // namespace strata
