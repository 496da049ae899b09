// Reductions against double-precision loops: flat sum and sum of squares (double accumulation:
// only the summation order differs from the reference, so 1e-12 relative), max-abs (exact, NaN
// propagating wherever the NaN sits: vector body, tail, first element), row sums and row maxima on
// odd column counts, and the empty cases.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace strata {
namespace {

const int64_t kSizes[] = {0, 1, 3, 7, 8, 9, 17, 63, 64, 65, 129, 4097};
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_vec(std::mt19937& rng, int64_t n) {
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

TEST(ReduceTest, SumAndSumOfSquaresMatchDouble) {
  std::mt19937 rng(3);
  for (int64_t n : kSizes) {
    const std::vector<float> x = random_vec(rng, n);
    double sum = 0, sq = 0, abs_sum = 0;
    for (float v : x) {
      sum += v;
      sq += double(v) * v;
      abs_sum += std::fabs(v);
    }
    // Bound relative to sum |x|: the signed sum may cancel to near zero.
    EXPECT_NEAR(reduce_sum_f32(x.data(), n), sum, 1e-12 * abs_sum) << n;
    EXPECT_NEAR(reduce_sum_squares_f32(x.data(), n), sq, 1e-12 * sq) << n;
  }
  EXPECT_EQ(reduce_sum_f32(nullptr, 0), 0.0);
  EXPECT_EQ(reduce_sum_squares_f32(nullptr, 0), 0.0);
}

TEST(ReduceTest, SumIsAccurateWhereFp32AccumulationIsNot) {
  // 2^24 + 1 + 1 + ... in fp32 would stay at 2^24; double accumulation does not lose the ones.
  std::vector<float> x(1001, 1.0f);
  x[0] = 16777216.0f;
  EXPECT_EQ(reduce_sum_f32(x.data(), 1001), 16777216.0 + 1000.0);
}

TEST(ReduceTest, AmaxIsExactAndPropagatesNaN) {
  std::mt19937 rng(4);
  for (int64_t n : kSizes) {
    if (n == 0) continue;
    SCOPED_TRACE(n);
    std::vector<float> x = random_vec(rng, n);
    float want = 0;
    for (float v : x) want = std::max(want, std::fabs(v));
    EXPECT_EQ(reduce_amax_f32(x.data(), n), want);
    // A negative element holds the largest magnitude.
    x[n / 2] = -7.5f;
    EXPECT_EQ(reduce_amax_f32(x.data(), n), 7.5f);
    x[n - 1] = -kInf;
    EXPECT_EQ(reduce_amax_f32(x.data(), n), kInf);
    for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
      std::vector<float> y = x;
      y[pos] = (pos % 2) ? -kNaN : kNaN;
      EXPECT_TRUE(std::isnan(reduce_amax_f32(y.data(), n))) << "NaN at " << pos;
    }
  }
  EXPECT_EQ(reduce_amax_f32(nullptr, 0), 0.0f);
}

TEST(ReduceTest, RowSumAndRowMaxMatchLoops) {
  std::mt19937 rng(5);
  const int64_t shapes[][2] = {{1, 1}, {3, 17}, {5, 8}, {2, 63}, {7, 65}, {4, 129}, {1, 1000}};
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    SCOPED_TRACE(testing::Message() << rows << "x" << cols);
    const std::vector<float> x = random_vec(rng, rows * cols);
    std::vector<float> sums(rows), maxes(rows);
    reduce_row_sum_f32(sums.data(), x.data(), rows, cols);
    reduce_row_max_f32(maxes.data(), x.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0, abs_sum = 0;
      float mx = -kInf;
      for (int64_t c = 0; c < cols; ++c) {
        sum += x[r * cols + c];
        abs_sum += std::fabs(x[r * cols + c]);
        mx = std::max(mx, x[r * cols + c]);
      }
      // A double sum rounded once to fp32: within one fp32 ulp of the reference.
      EXPECT_NEAR(sums[r], sum, std::ldexp(std::fabs(sum), -23) + 1e-12 * abs_sum) << r;
      EXPECT_EQ(maxes[r], mx) << r;
    }
  }
}

TEST(ReduceTest, RowMaxPropagatesNaNAndHandlesEmptyRows) {
  std::vector<float> x(3 * 19, 1.0f);
  x[0 * 19 + 2] = kNaN;   // vector body of row 0
  x[1 * 19 + 18] = kNaN;  // scalar tail of row 1
  x[2 * 19 + 5] = 4.0f;   // row 2 is clean
  std::vector<float> m(3);
  reduce_row_max_f32(m.data(), x.data(), 3, 19);
  EXPECT_TRUE(std::isnan(m[0]));
  EXPECT_TRUE(std::isnan(m[1]));
  EXPECT_EQ(m[2], 4.0f);

  std::vector<float> sums(2, 5.0f), maxes(2, 5.0f);
  reduce_row_sum_f32(sums.data(), nullptr, 2, 0);
  reduce_row_max_f32(maxes.data(), nullptr, 2, 0);
  EXPECT_EQ(sums, (std::vector<float>{0.0f, 0.0f}));
  EXPECT_EQ(maxes, (std::vector<float>{-kInf, -kInf}));
}

}  // namespace
}  // namespace strata
