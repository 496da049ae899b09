// Softmax and log-softmax, forward and backward, against double-precision loops on odd shapes;
// backward also against finite differences of the fp32 forward; the documented edge cases
// (all -inf rows, partly masked rows, huge logits, NaN, cols == 0); in-place use; and identical
// results whether rows run on one thread or two.
//
// Tolerances: the kernel computes x - max in fp32 (relative error eps = 6e-8 of |x - max|, so the
// exponent is off by at most eps * |x - max| in absolute terms), exp to 2 ulp and a few more
// roundings; against the double reference that bounds the error of y by about 1e-6 * y + 1e-7
// (the absolute term covers eps * d * e^-d for large gaps d). log-softmax values are O(10):
// 2e-6 * (1 + |y|).
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace strata {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const int64_t kShapes[][2] = {{1, 1},  {2, 3},  {3, 17},  {4, 63},
                              {2, 64}, {5, 65}, {3, 129}, {2, 1000}};

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// Double-precision softmax and log-softmax of one row.
std::vector<double> ref_softmax(const float* x, int64_t cols, bool log) {
  double m = -INFINITY;
  for (int64_t i = 0; i < cols; ++i) m = std::max(m, double(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < cols; ++i) sum += std::exp(double(x[i]) - m);
  std::vector<double> y(cols);
  for (int64_t i = 0; i < cols; ++i) {
    y[i] = log ? (double(x[i]) - m) - std::log(sum) : std::exp(double(x[i]) - m) / sum;
  }
  return y;
}

class SoftmaxTest : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(SoftmaxTest, ForwardMatchesDouble) {
  std::mt19937 rng(10);
  for (float range : {5.0f, 300.0f}) {  // ordinary logits, and gaps far beyond exp's range
    for (const auto& s : kShapes) {
      const int64_t rows = s[0], cols = s[1];
      SCOPED_TRACE(testing::Message() << rows << "x" << cols << " range " << range);
      const std::vector<float> x = random_vec(rng, rows * cols, -range, range);
      std::vector<float> y(rows * cols), ly(rows * cols);
      softmax_forward_f32(y.data(), x.data(), rows, cols);
      log_softmax_forward_f32(ly.data(), x.data(), rows, cols);
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<double> want = ref_softmax(&x[r * cols], cols, false);
        const std::vector<double> lwant = ref_softmax(&x[r * cols], cols, true);
        double total = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const float got = y[r * cols + c], lgot = ly[r * cols + c];
          ASSERT_NEAR(got, want[c], 1e-6 * want[c] + 1e-7) << r << "," << c;
          ASSERT_NEAR(lgot, lwant[c], 2e-6 * (1.0 + std::fabs(lwant[c]))) << r << "," << c;
          total += got;
        }
        EXPECT_NEAR(total, 1.0, 1e-6) << "row " << r;
      }
    }
  }
}

TEST_F(SoftmaxTest, BackwardMatchesDouble) {
  std::mt19937 rng(11);
  for (const auto& s : kShapes) {
    const int64_t rows = s[0], cols = s[1];
    SCOPED_TRACE(testing::Message() << rows << "x" << cols);
    const std::vector<float> x = random_vec(rng, rows * cols, -5.0f, 5.0f);
    const std::vector<float> dy = random_vec(rng, rows * cols, -1.0f, 1.0f);
    std::vector<float> y(rows * cols), ly(rows * cols), dx(rows * cols, 9.0f),
        ldx(rows * cols, 9.0f);
    softmax_forward_f32(y.data(), x.data(), rows, cols);
    log_softmax_forward_f32(ly.data(), x.data(), rows, cols);
    softmax_backward_f32(dx.data(), dy.data(), y.data(), rows, cols);
    log_softmax_backward_f32(ldx.data(), dy.data(), ly.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      // The formulas in double on the kernel's own forward output.
      const int64_t o = r * cols;
      double dot = 0, dsum = 0;
      for (int64_t c = 0; c < cols; ++c) {
        dot += double(dy[o + c]) * y[o + c];
        dsum += dy[o + c];
      }
      for (int64_t c = 0; c < cols; ++c) {
        const double want = y[o + c] * (dy[o + c] - dot);
        const double lwant = dy[o + c] - std::exp(double(ly[o + c])) * dsum;
        // dy - dot cancels: bound by the size of its terms, not of the result.
        ASSERT_NEAR(dx[o + c], want,
                    1e-6 * y[o + c] * (std::fabs(dy[o + c]) + std::fabs(dot)) + 1e-9);
        ASSERT_NEAR(ldx[o + c], lwant, 1e-6 * (std::fabs(dy[o + c]) + std::fabs(dsum)) + 1e-7);
      }
    }
  }
}

TEST_F(SoftmaxTest, BackwardMatchesFiniteDifferences) {
  // L = sum(dy * f(x)) for f = softmax and f = log_softmax; dL/dx by central differences of the
  // fp32 forward with h = 1e-2 (x in [-2, 2]): truncation ~h^2 |f'''| < 1e-4, fp32 rounding in L
  // ~eps * cols / h < 1e-4, so 1e-3 absolute (gradients are O(0.1-1)) catches any wrong formula.
  std::mt19937 rng(12);
  const int64_t rows = 3, cols = 17;
  const std::vector<float> x = random_vec(rng, rows * cols, -2.0f, 2.0f);
  const std::vector<float> dy = random_vec(rng, rows * cols, -1.0f, 1.0f);
  for (bool log : {false, true}) {
    SCOPED_TRACE(log ? "log_softmax" : "softmax");
    auto forward = [&](const std::vector<float>& in) {
      std::vector<float> out(rows * cols);
      (log ? log_softmax_forward_f32 : softmax_forward_f32)(out.data(), in.data(), rows, cols);
      return out;
    };
    auto loss = [&](const std::vector<float>& in, int64_t r) {  // row r's part of L
      const std::vector<float> out = forward(in);
      double l = 0;
      for (int64_t c = 0; c < cols; ++c) l += double(dy[r * cols + c]) * out[r * cols + c];
      return l;
    };
    const std::vector<float> y = forward(x);
    std::vector<float> dx(rows * cols);
    (log ? log_softmax_backward_f32 : softmax_backward_f32)(dx.data(), dy.data(), y.data(), rows,
                                                            cols);
    for (int64_t i = 0; i < rows * cols; ++i) {
      std::vector<float> xp = x, xm = x;
      xp[i] += 1e-2f;
      xm[i] -= 1e-2f;
      const double fd = (loss(xp, i / cols) - loss(xm, i / cols)) / (double(xp[i]) - xm[i]);
      EXPECT_NEAR(dx[i], fd, 1e-3) << "element " << i;
    }
  }
}

TEST_F(SoftmaxTest, MaskedRowsGiveNoNaN) {
  // Row 0 fully masked, row 1 partly masked, row 2 one finite entry.
  const int64_t cols = 11;
  std::vector<float> x(3 * cols, -kInf);
  for (int64_t c = 0; c < cols; c += 2) x[cols + c] = 0.1f * c;
  x[2 * cols + 9] = -3.0f;
  std::vector<float> y(3 * cols), ly(3 * cols), dx(3 * cols), ldx(3 * cols);
  std::vector<float> dy(3 * cols, 0.5f);
  softmax_forward_f32(y.data(), x.data(), 3, cols);
  log_softmax_forward_f32(ly.data(), x.data(), 3, cols);
  softmax_backward_f32(dx.data(), dy.data(), y.data(), 3, cols);
  log_softmax_backward_f32(ldx.data(), dy.data(), ly.data(), 3, cols);
  for (int64_t c = 0; c < cols; ++c) {
    EXPECT_EQ(y[c], 0.0f);
    EXPECT_EQ(ly[c], -kInf);
    EXPECT_EQ(dx[c], 0.0f);
    EXPECT_EQ(ldx[c], 0.5f);
    EXPECT_EQ(y[cols + c] == 0.0f, c % 2 == 1) << c;  // masked entries get exactly 0
    EXPECT_EQ(y[2 * cols + c], c == 9 ? 1.0f : 0.0f) << c;
  }
  const std::vector<double> want = [&] {
    std::vector<float> finite;
    for (int64_t c = 0; c < cols; c += 2) finite.push_back(x[cols + c]);
    return ref_softmax(finite.data(), static_cast<int64_t>(finite.size()), false);
  }();
  for (int64_t c = 0; c < cols; c += 2) EXPECT_NEAR(y[cols + c], want[c / 2], 1e-6 * want[c / 2]);
  for (int64_t i = 0; i < 3 * cols; ++i) {
    EXPECT_FALSE(std::isnan(y[i]) || std::isnan(ly[i]) || std::isnan(dx[i]) || std::isnan(ldx[i]))
        << i;
  }
}

TEST_F(SoftmaxTest, NaNInputGivesNaNRowAndEmptyRowsAreFine) {
  std::vector<float> x = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f, 1.0f, 2.0f, 3.0f};
  std::vector<float> y(6);
  softmax_forward_f32(y.data(), x.data(), 2, 3);
  for (int c = 0; c < 3; ++c) EXPECT_TRUE(std::isnan(y[c])) << c;
  for (int c = 3; c < 6; ++c) EXPECT_FALSE(std::isnan(y[c])) << c;
  // cols == 0 (and rows == 0): nothing to read or write.
  softmax_forward_f32(nullptr, nullptr, 4, 0);
  log_softmax_forward_f32(nullptr, nullptr, 4, 0);
  softmax_backward_f32(nullptr, nullptr, nullptr, 4, 0);
  log_softmax_backward_f32(nullptr, nullptr, nullptr, 0, 5);
}

TEST_F(SoftmaxTest, InPlaceMatchesOutOfPlace) {
  std::mt19937 rng(13);
  const int64_t rows = 3, cols = 65;
  const std::vector<float> x = random_vec(rng, rows * cols, -4.0f, 4.0f);
  const std::vector<float> dy = random_vec(rng, rows * cols, -1.0f, 1.0f);
  std::vector<float> y(rows * cols), inplace = x;
  softmax_forward_f32(y.data(), x.data(), rows, cols);
  softmax_forward_f32(inplace.data(), inplace.data(), rows, cols);
  EXPECT_EQ(inplace, y);
  log_softmax_forward_f32(y.data(), x.data(), rows, cols);
  inplace = x;
  log_softmax_forward_f32(inplace.data(), inplace.data(), rows, cols);
  EXPECT_EQ(inplace, y);
  std::vector<float> dx(rows * cols), dx_inplace = dy;
  softmax_backward_f32(dx.data(), dy.data(), y.data(), rows, cols);
  softmax_backward_f32(dx_inplace.data(), dx_inplace.data(), y.data(), rows, cols);
  EXPECT_EQ(dx_inplace, dx);
}

TEST_F(SoftmaxTest, ThreadCountDoesNotChangeResults) {
  // 300 x 1000 is above the threading threshold: rows split over two threads must give the
  // single-thread result bit for bit.
  std::mt19937 rng(14);
  const int64_t rows = 300, cols = 1000;
  const std::vector<float> x = random_vec(rng, rows * cols, -6.0f, 6.0f);
  const std::vector<float> dy = random_vec(rng, rows * cols, -1.0f, 1.0f);
  std::vector<float> y[2], ly[2], dx[2];
  for (int t = 0; t < 2; ++t) {
    set_blas_threads(t + 1);
    y[t].resize(rows * cols);
    ly[t].resize(rows * cols);
    dx[t].resize(rows * cols);
    softmax_forward_f32(y[t].data(), x.data(), rows, cols);
    log_softmax_forward_f32(ly[t].data(), x.data(), rows, cols);
    softmax_backward_f32(dx[t].data(), dy.data(), y[t].data(), rows, cols);
  }
  EXPECT_EQ(y[0], y[1]);
  EXPECT_EQ(ly[0], ly[1]);
  EXPECT_EQ(dx[0], dx[1]);
}

}  // namespace
}  // namespace strata
