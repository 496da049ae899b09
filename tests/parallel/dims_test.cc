// ParallelDims (parallel/dims.h) without MPI: dp inferred from the world, readable errors for
// layouts that do not fit, coordinates that round-trip, groups that partition the world (each
// rank in exactly one group of each kind, the group sizes dp / ep / edp / pp), the default order
// putting expert groups on neighbouring ranks, and another order string moving them.
#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "parallel/dims.h"

namespace strata {
namespace {

ParallelConfig layout(int64_t dp, int64_t pp, int64_t ep, const std::string& order = "ep,edp,pp") {
  ParallelConfig c;
  c.dp = dp;
  c.pp = pp;
  c.ep = ep;
  c.order = order;
  return c;
}

TEST(ParallelDims, InfersDpAndExplainsBadLayouts) {
  auto d = ParallelDims::make(layout(-1, 2, 2), 8);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dp(), 4);
  EXPECT_EQ(d->edp(), 2);
  EXPECT_EQ(d->describe(), "world 8 = pp 2 x dp 4 (ep 2 x edp 2), order ep,edp,pp");

  auto bad_ep = ParallelDims::make(layout(4, 1, 3), 4);
  ASSERT_FALSE(bad_ep.ok());
  EXPECT_EQ(bad_ep.status().message(), "parallel.ep: ep=3 must divide dp=4");
  auto bad_pp = ParallelDims::make(layout(-1, 3, 1), 4);
  EXPECT_EQ(bad_pp.status().message(), "parallel.pp: pp=3 does not divide the world of 4 ranks");
  auto bad_dp = ParallelDims::make(layout(2, 1, 1), 4);
  EXPECT_EQ(bad_dp.status().message(),
            "parallel.dp: pp x dp = 1 x 2 = 2 ranks, but the job has 4 (set dp: -1 to infer it)");
  auto bad_order = ParallelDims::make(layout(-1, 1, 1, "pp,ep"), 4);
  EXPECT_EQ(bad_order.status().message(), "parallel.order: \"pp,ep\" is not a permutation of ep,edp,pp");
}

TEST(ParallelDims, GroupsPartitionTheWorld) {
  for (const std::string order : {"ep,edp,pp", "pp,ep,edp", "edp,pp,ep"}) {
    auto d = ParallelDims::make(layout(-1, 2, 2, order), 8);
    ASSERT_TRUE(d.ok()) << d.status();
    for (int64_t r = 0; r < 8; ++r) EXPECT_EQ(d->rank_of(d->coord(r)), r) << order;
    for (ParallelGroup g : {ParallelGroup::kDp, ParallelGroup::kEp, ParallelGroup::kEdp, ParallelGroup::kPp}) {
      std::set<std::vector<int64_t>> groups;
      for (int64_t r = 0; r < 8; ++r) {
        std::vector<int64_t> members = d->group(r, g);
        EXPECT_NE(std::find(members.begin(), members.end(), r), members.end()) << parallel_group_name(g);
        groups.insert(members);
      }
      const size_t size = g == ParallelGroup::kDp ? 4 : 2;
      size_t covered = 0;
      for (const auto& members : groups) {
        EXPECT_EQ(members.size(), size) << parallel_group_name(g) << " " << order;
        covered += members.size();
      }
      EXPECT_EQ(covered, 8u) << parallel_group_name(g) << " " << order;  // disjoint and complete
    }
  }
}

TEST(ParallelDims, DefaultOrderKeepsExpertGroupsAdjacent) {
  auto d = ParallelDims::make(layout(4, 2, 2), 8);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->group(0, ParallelGroup::kEp), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(d->group(0, ParallelGroup::kEdp), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(d->group(0, ParallelGroup::kDp), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(d->group(5, ParallelGroup::kPp), (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(d->dp_rank(6), 2);
  auto p = ParallelDims::make(layout(4, 2, 2, "pp,ep,edp"), 8);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->group(0, ParallelGroup::kPp), (std::vector<int64_t>{0, 1}));  // stages now adjacent
  EXPECT_EQ(p->group(0, ParallelGroup::kEp), (std::vector<int64_t>{0, 2}));
}

}  // namespace
}  // namespace strata
