// Fused softmax + cross-entropy and target log-probabilities against double-precision loops:
// masked rows, the returned sum, logits of 1e4 (finite results, loss still exact), the gradient
// against the double formula and against central finite differences, in-place backward,
// temperatures, and identical results on one thread or two.
//
// Tolerances: the loss is formed in double as (m - x_t) + log(sum) with the sum over fp32 exps
// (2 ulp each): within ~3e-7 of the double value plus its fp32 rounding, so 1e-6 (1 + |loss|).
// The gradient recomputes softmax as exp(x - lse) with lse rounded to fp32, so each probability
// carries a relative error up to ulp(lse)/2 + 2 ulp of exp: about 1e-6 for |lse| ~ 10, and
// ulp(lse)/2 in general (5e-4 at lse = 1e4, where the test allows 1e-3).
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace strata {
namespace {

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// Targets in [0, V), with every third row masked (-1) when mask is set.
std::vector<int32_t> random_targets(std::mt19937& rng, int64_t N, int64_t V, bool mask) {
  std::uniform_int_distribution<int32_t> u(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) t[r] = mask && r % 3 == 1 ? -1 : u(rng);
  return t;
}

// Double log-sum-exp of one row of z.
double ref_lse(const double* z, int64_t V) {
  double m = -INFINITY;
  for (int64_t i = 0; i < V; ++i) m = std::max(m, z[i]);
  double s = 0;
  for (int64_t i = 0; i < V; ++i) s += std::exp(z[i] - m);
  return m + std::log(s);
}

std::vector<double> to_double(const float* x, int64_t n) { return std::vector<double>(x, x + n); }

class CrossEntropyTest : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

const int64_t kShapes[][2] = {{1, 1}, {3, 7}, {4, 65}, {5, 1000}, {2, 32003}};

TEST_F(CrossEntropyTest, ForwardMatchesDouble) {
  std::mt19937 rng(40);
  for (const auto& s : kShapes) {
    const int64_t N = s[0], V = s[1];
    SCOPED_TRACE(testing::Message() << N << "x" << V);
    const std::vector<float> x = random_vec(rng, N * V, -10.0f, 10.0f);
    const std::vector<int32_t> t = random_targets(rng, N, V, /*mask=*/true);
    std::vector<float> losses(N, 7.0f), lse(N, 7.0f);
    const double total =
        cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), t.data(), N, V);
    double want_total = 0, stored_total = 0;
    for (int64_t r = 0; r < N; ++r) {
      stored_total += losses[r];
      if (t[r] < 0) {
        EXPECT_EQ(losses[r], 0.0f) << "masked row " << r;
        EXPECT_EQ(lse[r], 0.0f) << "masked row " << r;
        continue;
      }
      const std::vector<double> z = to_double(&x[r * V], V);
      const double l = ref_lse(z.data(), V);
      ASSERT_NEAR(lse[r], l, 1e-6 * (1 + std::fabs(l))) << r;
      ASSERT_NEAR(losses[r], l - z[t[r]], 1e-6 * (1 + std::fabs(l - z[t[r]]))) << r;
      want_total += l - z[t[r]];
    }
    EXPECT_EQ(total, stored_total);  // the sum of the stored losses, in row order
    EXPECT_NEAR(total, want_total, 1e-6 * (1 + std::fabs(want_total)));
  }
}

TEST_F(CrossEntropyTest, BackwardMatchesDouble) {
  std::mt19937 rng(41);
  for (const auto& s : kShapes) {
    const int64_t N = s[0], V = s[1];
    SCOPED_TRACE(testing::Message() << N << "x" << V);
    const std::vector<float> x = random_vec(rng, N * V, -4.0f, 4.0f);
    const std::vector<int32_t> t = random_targets(rng, N, V, /*mask=*/true);
    std::vector<float> losses(N), lse(N), dx(N * V, 9.0f);
    cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), t.data(), N, V);
    const float scale = 1.0f / 3.0f;
    cross_entropy_backward_f32(dx.data(), x.data(), t.data(), lse.data(), scale, N, V);
    for (int64_t r = 0; r < N; ++r) {
      const std::vector<double> z = to_double(&x[r * V], V);
      const double l = ref_lse(z.data(), V);
      for (int64_t i = 0; i < V; ++i) {
        if (t[r] < 0) {
          ASSERT_EQ(dx[r * V + i], 0.0f) << "masked row " << r;
          continue;
        }
        const double p = std::exp(z[i] - l);
        const double want = (p - (i == t[r] ? 1.0 : 0.0)) * scale;
        // exp's 2 ulp and the products (3e-7), lse's rounding (|l| 2^-24, doubled for margin),
        // and the rounding of p - 1 at the target.
        const double tol = (3e-7 + 1.2e-7 * std::fabs(l)) * p * scale + (i == t[r] ? 1e-7 : 0.0);
        ASSERT_NEAR(dx[r * V + i], want, tol + 1e-12) << r << "," << i;
      }
    }
  }
}

TEST_F(CrossEntropyTest, BackwardMatchesFiniteDifferences) {
  // L = sum of losses; dL/dx by central differences of the fp32 forward's returned sum, h = 1e-2:
  // truncation h^2 |L'''| < 1e-4, rounding of the fp32 losses ~1e-6 / h = 1e-4; gradients are
  // probabilities (minus 1 at the target), so 3e-4 absolute catches any wrong term.
  std::mt19937 rng(42);
  const int64_t N = 4, V = 11;
  const std::vector<float> x = random_vec(rng, N * V, -2.0f, 2.0f);
  const std::vector<int32_t> t = random_targets(rng, N, V, /*mask=*/true);
  auto loss = [&](const std::vector<float>& xs) {
    std::vector<float> losses(N), lse(N);
    return cross_entropy_forward_f32(losses.data(), lse.data(), xs.data(), t.data(), N, V);
  };
  std::vector<float> losses(N), lse(N), dx(N * V);
  cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), t.data(), N, V);
  cross_entropy_backward_f32(dx.data(), x.data(), t.data(), lse.data(), 1.0f, N, V);
  for (int64_t i = 0; i < N * V; ++i) {
    std::vector<float> xp = x, xm = x;
    xp[i] += 1e-2f;
    xm[i] -= 1e-2f;
    const double fd = (loss(xp) - loss(xm)) / (double(xp[i]) - xm[i]);
    EXPECT_NEAR(dx[i], fd, 3e-4) << "element " << i;
  }
}

TEST_F(CrossEntropyTest, HugeLogitsStayFinite) {
  // Logits near +1e4 and -1e4 in one row: exp(x) overflows anywhere but after the max shift.
  std::mt19937 rng(43);
  const int64_t N = 3, V = 257;
  std::vector<float> x = random_vec(rng, N * V, -5.0f, 5.0f);
  for (int64_t i = 0; i < N * V; ++i) x[i] += (i % V % 2 == 0 ? 1e4f : -1e4f);
  const std::vector<int32_t> t = {0, 1, 100};  // a likely, an impossible and a likely target
  std::vector<float> losses(N), lse(N), dx(N * V);
  const double total =
      cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), t.data(), N, V);
  cross_entropy_backward_f32(dx.data(), x.data(), t.data(), lse.data(), 1.0f, N, V);
  EXPECT_TRUE(std::isfinite(total));
  for (int64_t r = 0; r < N; ++r) {
    const std::vector<double> z = to_double(&x[r * V], V);
    const double l = ref_lse(z.data(), V);
    EXPECT_TRUE(std::isfinite(lse[r]) && std::isfinite(losses[r])) << r;
    // Formed in double from the exact (m - x_t): as accurate as for small logits.
    EXPECT_NEAR(losses[r], l - z[t[r]], 1e-6 * (1 + std::fabs(l - z[t[r]]))) << r;
    for (int64_t i = 0; i < V; ++i) {
      ASSERT_TRUE(std::isfinite(dx[r * V + i])) << r << "," << i;
      const double want = std::exp(z[i] - l) - (i == t[r] ? 1.0 : 0.0);
      ASSERT_NEAR(dx[r * V + i], want, 1e-3 * std::exp(z[i] - l) + 1e-12) << r << "," << i;
    }
  }
  EXPECT_GT(losses[1], 1.9e4f);  // -1e4 against +1e4: a loss of ~2e4, still finite
}

TEST_F(CrossEntropyTest, BackwardInPlace) {
  std::mt19937 rng(44);
  const int64_t N = 5, V = 67;
  const std::vector<float> x = random_vec(rng, N * V, -3.0f, 3.0f);
  const std::vector<int32_t> t = random_targets(rng, N, V, /*mask=*/true);
  std::vector<float> losses(N), lse(N), dx(N * V);
  cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), t.data(), N, V);
  cross_entropy_backward_f32(dx.data(), x.data(), t.data(), lse.data(), 0.5f, N, V);
  std::vector<float> inplace = x;
  cross_entropy_backward_f32(inplace.data(), inplace.data(), t.data(), lse.data(), 0.5f, N, V);
  EXPECT_EQ(inplace, dx);
}

TEST_F(CrossEntropyTest, TokenLogprobsWithTemperature) {
  std::mt19937 rng(45);
  const int64_t N = 7, V = 1001;
  const std::vector<float> x = random_vec(rng, N * V, -12.0f, 12.0f);
  const std::vector<int32_t> t = random_targets(rng, N, V, /*mask=*/true);
  for (float temp : {0.6f, 1.0f, 1.7f}) {
    SCOPED_TRACE(testing::Message() << "temperature " << temp);
    std::vector<float> lp(N, 7.0f);
    token_logprobs_f32(lp.data(), x.data(), t.data(), temp, N, V);
    for (int64_t r = 0; r < N; ++r) {
      if (t[r] < 0) {
        EXPECT_EQ(lp[r], 0.0f) << "masked row " << r;
        continue;
      }
      // HF divides the fp32 logits by the temperature in fp32, then takes log_softmax.
      std::vector<double> z(V);
      for (int64_t i = 0; i < V; ++i) z[i] = x[r * V + i] / temp;
      const double want = z[t[r]] - ref_lse(z.data(), V);
      EXPECT_NEAR(lp[r], want, 1e-6 * (1 + std::fabs(want))) << r;
    }
    if (temp == 1.0f) {  // at temperature 1 the log-probability is minus the loss
      std::vector<float> losses(N), lse(N);
      cross_entropy_forward_f32(losses.data(), lse.data(), x.data(), t.data(), N, V);
      for (int64_t r = 0; r < N; ++r) EXPECT_EQ(lp[r], -losses[r]) << r;
    }
  }
}

TEST_F(CrossEntropyTest, EmptyBatch) {
  EXPECT_EQ(cross_entropy_forward_f32(nullptr, nullptr, nullptr, nullptr, 0, 10), 0.0);
  cross_entropy_backward_f32(nullptr, nullptr, nullptr, nullptr, 1.0f, 0, 10);
  token_logprobs_f32(nullptr, nullptr, nullptr, 1.0f, 0, 10);
}

TEST_F(CrossEntropyTest, ThreadCountDoesNotChangeResults) {
  // 64 x 8192 is above the threading threshold.
  std::mt19937 rng(46);
  const int64_t N = 64, V = 8192;
  const std::vector<float> x = random_vec(rng, N * V, -8.0f, 8.0f);
  const std::vector<int32_t> t = random_targets(rng, N, V, /*mask=*/true);
  std::vector<float> losses[2], lse[2], dx[2], lp[2];
  double total[2];
  for (int k = 0; k < 2; ++k) {
    set_blas_threads(k + 1);
    losses[k].resize(N);
    lse[k].resize(N);
    dx[k].resize(N * V);
    lp[k].resize(N);
    total[k] = cross_entropy_forward_f32(losses[k].data(), lse[k].data(), x.data(), t.data(), N, V);
    cross_entropy_backward_f32(dx[k].data(), x.data(), t.data(), lse[k].data(), 0.01f, N, V);
    token_logprobs_f32(lp[k].data(), x.data(), t.data(), 0.8f, N, V);
  }
  EXPECT_EQ(total[0], total[1]);
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(lse[0], lse[1]);
  EXPECT_EQ(dx[0], dx[1]);
  EXPECT_EQ(lp[0], lp[1]);
}

}  // namespace
}  // namespace strata
