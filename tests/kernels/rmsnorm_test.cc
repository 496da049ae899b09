// RMSNorm forward and backward against double-precision loops on odd shapes; backward also
// against central finite differences of the fp32 forward; dw accumulating onto what it held;
// in-place use (y = x, dx = dy); identical results on one thread or two.
//
// Tolerances: the kernel rounds rstd once (the sum of squares is in double) and then makes two
// fp32 products, so y is within ~3 roundings (2e-7) of the double value: 1e-6 relative. dx is a
// difference of two terms, r w dy and x (r^3/C) sum(w dy x), each within a few roundings: the
// bound is 1e-6 times the sum of their magnitudes. dw sums rows in double: 1e-6 relative to
// the sum of the magnitudes of its terms.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace strata {
namespace {

const int64_t kShapes[][2] = {{1, 1}, {3, 7}, {2, 8}, {4, 64}, {5, 65}, {3, 257}, {2, 1000}};

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// 1 / sqrt(mean(x^2) + eps) of one row, in double.
double ref_rstd(const float* x, int64_t C, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < C; ++i) ss += double(x[i]) * x[i];
  return 1.0 / std::sqrt(ss / C + eps);
}

class RmsNormTest : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(RmsNormTest, ForwardMatchesDouble) {
  std::mt19937 rng(20);
  for (float eps : {1e-6f, 1e-5f}) {
    for (const auto& s : kShapes) {
      const int64_t rows = s[0], C = s[1];
      SCOPED_TRACE(testing::Message() << rows << "x" << C << " eps " << eps);
      const std::vector<float> x = random_vec(rng, rows * C, -3.0f, 3.0f);
      const std::vector<float> w = random_vec(rng, C, 0.5f, 1.5f);
      std::vector<float> y(rows * C), rstd(rows);
      rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, eps);
      for (int64_t r = 0; r < rows; ++r) {
        const double rs = ref_rstd(&x[r * C], C, eps);
        ASSERT_NEAR(rstd[r], rs, 1e-6 * rs) << "row " << r;
        for (int64_t c = 0; c < C; ++c) {
          const double want = double(x[r * C + c]) * rs * w[c];
          ASSERT_NEAR(y[r * C + c], want, 1e-6 * std::fabs(want) + 1e-12) << r << "," << c;
        }
      }
    }
  }
}

TEST_F(RmsNormTest, ForwardInPlace) {
  std::mt19937 rng(21);
  const int64_t rows = 3, C = 67;
  const std::vector<float> x = random_vec(rng, rows * C, -2.0f, 2.0f);
  const std::vector<float> w = random_vec(rng, C, 0.5f, 1.5f);
  std::vector<float> y(rows * C), rstd(rows), inplace = x, rstd2(rows);
  rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, 1e-6f);
  rmsnorm_forward_f32(inplace.data(), rstd2.data(), inplace.data(), w.data(), rows, C, 1e-6f);
  EXPECT_EQ(inplace, y);
  EXPECT_EQ(rstd2, rstd);
}

TEST_F(RmsNormTest, BackwardMatchesDouble) {
  std::mt19937 rng(22);
  for (const auto& s : kShapes) {
    const int64_t rows = s[0], C = s[1];
    SCOPED_TRACE(testing::Message() << rows << "x" << C);
    const std::vector<float> x = random_vec(rng, rows * C, -3.0f, 3.0f);
    const std::vector<float> w = random_vec(rng, C, 0.5f, 1.5f);
    const std::vector<float> dy = random_vec(rng, rows * C, -1.0f, 1.0f);
    const std::vector<float> dw0 = random_vec(rng, C, -1.0f, 1.0f);  // dw accumulates onto this
    std::vector<float> y(rows * C), rstd(rows), dx(rows * C, 9.0f), dw = dw0;
    rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, 1e-6f);
    rmsnorm_backward_f32(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), rows, C);
    std::vector<double> dw_want(dw0.begin(), dw0.end()), dw_mag(C, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * C;
      const double rs = ref_rstd(&x[o], C, 1e-6f);
      double dot = 0;
      for (int64_t c = 0; c < C; ++c) dot += double(w[c]) * dy[o + c] * x[o + c];
      const double k = rs * rs * rs / C * dot;
      for (int64_t c = 0; c < C; ++c) {
        const double a = rs * w[c] * dy[o + c], b = double(x[o + c]) * k;
        ASSERT_NEAR(dx[o + c], a - b, 1e-6 * (std::fabs(a) + std::fabs(b)) + 1e-12)
            << r << "," << c;
        dw_want[c] += double(dy[o + c]) * x[o + c] * rs;
        dw_mag[c] += std::fabs(double(dy[o + c]) * x[o + c] * rs);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      ASSERT_NEAR(dw[c], dw_want[c], 1e-6 * (dw_mag[c] + std::fabs(dw0[c]))) << "dw " << c;
    }
  }
}

TEST_F(RmsNormTest, BackwardMatchesFiniteDifferences) {
  // L = sum(dy * y); dL/dx and dL/dw by central differences of the fp32 forward with h = 1e-2:
  // truncation h^2 |L'''| ~ 1e-4 (x, w of order 1), fp32 rounding of L ~ 1e-6 / h = 1e-4, so
  // 1e-3 absolute on gradients of order 0.1-1 catches any wrong term.
  std::mt19937 rng(23);
  const int64_t rows = 3, C = 13;
  const std::vector<float> x = random_vec(rng, rows * C, -2.0f, 2.0f);
  const std::vector<float> w = random_vec(rng, C, 0.5f, 1.5f);
  const std::vector<float> dy = random_vec(rng, rows * C, -1.0f, 1.0f);
  auto loss = [&](const std::vector<float>& xs, const std::vector<float>& ws) {
    std::vector<float> y(rows * C), rstd(rows);
    rmsnorm_forward_f32(y.data(), rstd.data(), xs.data(), ws.data(), rows, C, 1e-5f);
    double l = 0;
    for (int64_t i = 0; i < rows * C; ++i) l += double(dy[i]) * y[i];
    return l;
  };
  std::vector<float> y(rows * C), rstd(rows), dx(rows * C), dw(C, 0.0f);
  rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, 1e-5f);
  rmsnorm_backward_f32(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), rows, C);
  const float h = 1e-2f;
  for (int64_t i = 0; i < rows * C; ++i) {
    std::vector<float> xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (loss(xp, w) - loss(xm, w)) / (double(xp[i]) - xm[i]);
    EXPECT_NEAR(dx[i], fd, 1e-3) << "dx " << i;
  }
  for (int64_t c = 0; c < C; ++c) {
    std::vector<float> wp = w, wm = w;
    wp[c] += h;
    wm[c] -= h;
    const double fd = (loss(x, wp) - loss(x, wm)) / (double(wp[c]) - wm[c]);
    EXPECT_NEAR(dw[c], fd, 1e-3) << "dw " << c;
  }
}

TEST_F(RmsNormTest, BackwardInPlace) {
  std::mt19937 rng(24);
  const int64_t rows = 4, C = 33;
  const std::vector<float> x = random_vec(rng, rows * C, -2.0f, 2.0f);
  const std::vector<float> w = random_vec(rng, C, 0.5f, 1.5f);
  const std::vector<float> dy = random_vec(rng, rows * C, -1.0f, 1.0f);
  std::vector<float> y(rows * C), rstd(rows), dx(rows * C), dw(C, 0.0f), dw2(C, 0.0f);
  rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, 1e-6f);
  rmsnorm_backward_f32(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), rows, C);
  std::vector<float> inplace = dy;
  rmsnorm_backward_f32(inplace.data(), dw2.data(), inplace.data(), x.data(), w.data(), rstd.data(),
                       rows, C);
  EXPECT_EQ(inplace, dx);
  EXPECT_EQ(dw2, dw);
}

TEST_F(RmsNormTest, ThreadCountDoesNotChangeResults) {
  // 600 x 1000 is above the threading threshold for rows (forward, dx) and columns (dw).
  std::mt19937 rng(25);
  const int64_t rows = 600, C = 1000;
  const std::vector<float> x = random_vec(rng, rows * C, -2.0f, 2.0f);
  const std::vector<float> w = random_vec(rng, C, 0.5f, 1.5f);
  const std::vector<float> dy = random_vec(rng, rows * C, -1.0f, 1.0f);
  std::vector<float> y[2], rstd[2], dx[2], dw[2];
  for (int t = 0; t < 2; ++t) {
    set_blas_threads(t + 1);
    y[t].resize(rows * C);
    rstd[t].resize(rows);
    dx[t].resize(rows * C);
    dw[t].assign(C, 0.25f);
    rmsnorm_forward_f32(y[t].data(), rstd[t].data(), x.data(), w.data(), rows, C, 1e-6f);
    rmsnorm_backward_f32(dx[t].data(), dw[t].data(), dy.data(), x.data(), w.data(), rstd[t].data(),
                         rows, C);
  }
  EXPECT_EQ(y[0], y[1]);
  EXPECT_EQ(rstd[0], rstd[1]);
  EXPECT_EQ(dx[0], dx[1]);
  EXPECT_EQ(dw[0], dw[1]);
}

}  // namespace
}  // namespace strata
