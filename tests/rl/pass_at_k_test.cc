// Tests of the unbiased pass@k estimator (rl/pass_at_k.h): against brute-force enumeration of every
// k-subset for small n, closed forms (k = 1 is c/n), stability at large n, and the argument checks.
#include "rl/pass_at_k.h"

#include <gtest/gtest.h>

#include <cmath>

namespace strata {
namespace {

// Share of the k-subsets of n samples (the first c correct) holding at least one correct sample.
double brute_force(int n, int c, int k) {
  int64_t subsets = 0, hits = 0;
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    if (__builtin_popcount(mask) != k) continue;
    ++subsets;
    hits += (mask & ((1u << c) - 1)) != 0;
  }
  return static_cast<double>(hits) / static_cast<double>(subsets);
}

TEST(PassAtK, MatchesBruteForceEnumeration) {
  for (int n = 1; n <= 12; ++n) {
    for (int c = 0; c <= n; ++c) {
      for (int k = 1; k <= n; ++k) {
        auto p = pass_at_k(n, c, k);
        ASSERT_TRUE(p.ok()) << p.status();
        EXPECT_NEAR(*p, brute_force(n, c, k), 1e-12) << "n=" << n << " c=" << c << " k=" << k;
      }
    }
  }
}

TEST(PassAtK, ClosedForms) {
  EXPECT_DOUBLE_EQ(*pass_at_k(10, 3, 1), 0.3);  // pass@1 = c / n
  EXPECT_EQ(*pass_at_k(10, 0, 5), 0.0);
  EXPECT_EQ(*pass_at_k(10, 10, 1), 1.0);
  EXPECT_EQ(*pass_at_k(10, 6, 5), 1.0);  // n - c < k: every 5-subset holds a correct one
  EXPECT_DOUBLE_EQ(*pass_at_k(5, 1, 5), 1.0);
}

TEST(PassAtK, StableForLargeN) {
  // C(2000, 1000) overflows a double; the product form does not. pass@1 must still be c/n.
  auto p1 = pass_at_k(2000, 7, 1);
  ASSERT_TRUE(p1.ok());
  EXPECT_NEAR(*p1, 7.0 / 2000.0, 1e-15);
  auto p = pass_at_k(2000, 1, 1000);
  ASSERT_TRUE(p.ok());
  EXPECT_NEAR(*p, 0.5, 1e-12);  // one correct sample lands in half the 1000-subsets
  auto q = pass_at_k(2000, 1000, 1000);
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(std::isfinite(*q));
  EXPECT_GT(*q, 0.999999);
  EXPECT_LE(*q, 1.0);
}

TEST(PassAtK, ArgumentChecks) {
  EXPECT_FALSE(pass_at_k(4, 1, 5).ok());  // n < k
  EXPECT_FALSE(pass_at_k(4, 1, 0).ok());
  EXPECT_FALSE(pass_at_k(4, 5, 2).ok());
  EXPECT_FALSE(pass_at_k(4, -1, 2).ok());
  EXPECT_FALSE(pass_at_k(0, 0, 1).ok());
  EXPECT_NE(pass_at_k(4, 1, 5).status().message().find("fewer than k=5"), std::string::npos);
}

TEST(PassAtK, MeanOverProblems) {
  auto m = mean_pass_at_k({{10, 3}, {10, 0}, {10, 10}}, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_DOUBLE_EQ(*m, (0.3 + 0.0 + 1.0) / 3.0);
  auto m2 = mean_pass_at_k({{4, 1}, {6, 2}}, 2);
  ASSERT_TRUE(m2.ok());
  EXPECT_NEAR(*m2, (brute_force(4, 1, 2) + brute_force(6, 2, 2)) / 2.0, 1e-12);
  EXPECT_FALSE(mean_pass_at_k({}, 1).ok());
  auto bad = mean_pass_at_k({{10, 1}, {2, 1}}, 3);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("problem 1"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace strata
