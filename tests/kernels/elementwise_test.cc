// Elementwise ops against double-precision loops on odd sizes (the vector body, the scalar tail
// and both together), in-place use, the vectorised exp of kernels/cpu/vec.h, and SiLU/SwiGLU
// backward against both the analytic derivative and finite differences of the forward.
//
// Tolerances: add, mul, scale, fill and copy are single correctly rounded fp32 operations, so they
// must equal the double computation rounded to fp32 exactly. axpy is one fma (checked to 1 ulp,
// since rounding a double fma to fp32 can differ from a single fp32 rounding). The SiLU family
// goes through exp_f32 (<= 2 ulp) and a handful of roundings: 1e-6 relative plus 1e-7 absolute
// (near the zeros of silu' the relative error is unbounded, the absolute one is not).
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/vec.h"  // exp_f32 (internal, tested here because every exp goes through it)
#include "kernels/ops.h"

namespace strata {
namespace {

const int64_t kSizes[] = {0, 1, 3, 7, 8, 9, 17, 63, 64, 65, 129, 1000};

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double dsilu(double x) {
  const double s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

void expect_close(float got, double want, const char* what, int64_t i) {
  EXPECT_NEAR(got, want, 1e-6 * std::fabs(want) + 1e-7) << what << " at " << i;
}

TEST(ElementwiseTest, ArithmeticIsCorrectlyRounded) {
  std::mt19937 rng(42);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const std::vector<float> a = random_vec(rng, n), b = random_vec(rng, n);
    std::vector<float> out(n, -7.0f);
    add_f32(out.data(), a.data(), b.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], static_cast<float>(double(a[i]) + b[i]));
    mul_f32(out.data(), a.data(), b.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], static_cast<float>(double(a[i]) * b[i]));
    fill_f32(out.data(), 2.5f, n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], 2.5f);
    copy_f32(out.data(), a.data(), n);
    EXPECT_EQ(out, a);

    std::vector<float> y = b;
    add_inplace_f32(y.data(), a.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], static_cast<float>(double(b[i]) + a[i]));
    y = b;
    scale_f32(y.data(), -0.3f, n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], static_cast<float>(double(b[i]) * -0.3f));
    y = b;
    axpy_f32(y.data(), 1.7f, a.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(b[i]) + double(1.7f) * a[i];
      ASSERT_NEAR(y[i], want, std::ldexp(std::fabs(want), -23) + 1e-30) << i;
    }
  }
}

TEST(ElementwiseTest, OutputMayAliasAnInputExactly) {
  std::mt19937 rng(1);
  const int64_t n = 37;
  const std::vector<float> a = random_vec(rng, n), b = random_vec(rng, n);
  std::vector<float> want(n), got = a;
  add_f32(want.data(), a.data(), b.data(), n);
  add_f32(got.data(), got.data(), b.data(), n);
  EXPECT_EQ(got, want);
  silu_forward_f32(want.data(), a.data(), n);
  got = a;
  silu_forward_f32(got.data(), got.data(), n);
  EXPECT_EQ(got, want);
  copy_f32(got.data(), got.data(), n);
  EXPECT_EQ(got, want);
}

TEST(ElementwiseTest, ExpIsWithinTwoUlpAndHandlesSpecials) {
  // 2^20 evenly spaced points over [-103, 88.7] plus small magnitudes around 0, against the
  // double exp; below FLT_MIN the error is measured against FLT_MIN, as denormal results carry
  // fewer significant bits.
  double worst = 0;
  float worst_x = 0;
  auto check = [&](float x) {
    const double want = std::exp(static_cast<double>(x));
    const double err = std::fabs(cpu::exp_f32(x) - want) /
                       std::max(want, double(std::numeric_limits<float>::min()));
    if (err > worst) worst = err, worst_x = x;
  };
  const int n = 1 << 20;
  for (int i = 0; i <= n; ++i) check(-103.0f + (88.7f + 103.0f) * static_cast<float>(i) / n);
  for (float x = 1e-8f; x < 1.0f; x *= 1.001f) {
    check(x);
    check(-x);
  }
  EXPECT_LE(worst, 2.0 * std::ldexp(1.0, -23))
      << "max relative error " << worst << " at " << worst_x;

  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(cpu::exp_f32(0.0f), 1.0f);
  EXPECT_EQ(cpu::exp_f32(-inf), 0.0f);
  EXPECT_EQ(cpu::exp_f32(-200.0f), 0.0f);
  EXPECT_EQ(cpu::exp_f32(inf), inf);
  EXPECT_EQ(cpu::exp_f32(89.0f), inf);
  EXPECT_TRUE(std::isfinite(cpu::exp_f32(88.72f)));
  EXPECT_NEAR(cpu::exp_f32(88.72f), std::exp(double(88.72f)), 2.4e-7 * std::exp(double(88.72f)));
  EXPECT_TRUE(std::isnan(cpu::exp_f32(std::numeric_limits<float>::quiet_NaN())));
}

TEST(ElementwiseTest, SiluAndSwigluForwardMatchDouble) {
  std::mt19937 rng(7);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const std::vector<float> x = random_vec(rng, n, -8.0f, 8.0f), up = random_vec(rng, n);
    std::vector<float> out(n);
    silu_forward_f32(out.data(), x.data(), n);
    for (int64_t i = 0; i < n; ++i) expect_close(out[i], silu(x[i]), "silu", i);
    swiglu_forward_f32(out.data(), x.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) expect_close(out[i], silu(x[i]) * up[i], "swiglu", i);
  }
}

TEST(ElementwiseTest, SiluSaturatesWithoutNaN) {
  const std::vector<float> x = {-1000.0f, -100.0f, -88.0f, 0.0f, 30.0f, 100.0f, 1000.0f};
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(n), dx(n), ones(n, 1.0f);
  silu_forward_f32(y.data(), x.data(), n);
  silu_backward_f32(dx.data(), ones.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(std::isfinite(y[i]) && std::isfinite(dx[i])) << x[i];
    expect_close(y[i], silu(x[i]), "silu", i);
    expect_close(dx[i], dsilu(x[i]), "dsilu", i);
  }
}

TEST(ElementwiseTest, SiluAndSwigluBackwardMatchDouble) {
  std::mt19937 rng(8);
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    const std::vector<float> gate = random_vec(rng, n, -8.0f, 8.0f);
    const std::vector<float> up = random_vec(rng, n), dout = random_vec(rng, n);
    std::vector<float> dx(n, 99.0f), dgate(n, 99.0f), dup(n, 99.0f);  // overwritten, not added
    silu_backward_f32(dx.data(), dout.data(), gate.data(), n);
    swiglu_backward_f32(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      expect_close(dx[i], dout[i] * dsilu(gate[i]), "silu dx", i);
      expect_close(dgate[i], double(dout[i]) * up[i] * dsilu(gate[i]), "swiglu dgate", i);
      expect_close(dup[i], dout[i] * silu(gate[i]), "swiglu dup", i);
    }
  }
}

TEST(ElementwiseTest, SwigluBackwardMatchesFiniteDifferences) {
  // Central differences of the fp32 forward, element by element (each output depends on one
  // input). With h = 1e-2 the truncation error is ~h^2 |f'''| / 6 < 1e-4 and the fp32 rounding
  // error ~eps |f| / h < 1e-5, so 1e-3 (relative to max(1, |grad|)) is a safe bound that still
  // catches a wrong formula (those are off by O(1)).
  std::mt19937 rng(9);
  const int64_t n = 65;
  const float h = 1e-2f;
  const std::vector<float> gate = random_vec(rng, n, -6.0f, 6.0f), up = random_vec(rng, n);
  const std::vector<float> dout = random_vec(rng, n);
  std::vector<float> dgate(n), dup(n), dx(n);
  swiglu_backward_f32(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n);
  silu_backward_f32(dx.data(), dout.data(), gate.data(), n);

  auto shifted = [&](const std::vector<float>& v, float d) {
    std::vector<float> s = v;
    for (float& e : s) e += d;
    return s;
  };
  const std::vector<float> gp = shifted(gate, h), gm = shifted(gate, -h);
  const std::vector<float> upp = shifted(up, h), upm = shifted(up, -h);
  std::vector<float> fp(n), fm(n), sp(n), sm(n), up_p(n), up_m(n);
  swiglu_forward_f32(fp.data(), gp.data(), up.data(), n);
  swiglu_forward_f32(fm.data(), gm.data(), up.data(), n);
  swiglu_forward_f32(up_p.data(), gate.data(), upp.data(), n);
  swiglu_forward_f32(up_m.data(), gate.data(), upm.data(), n);
  silu_forward_f32(sp.data(), gp.data(), n);
  silu_forward_f32(sm.data(), gm.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    // The shifted inputs differ from gate +- h by rounding: divide by the real step.
    const double step_g = double(gp[i]) - gm[i], step_u = double(upp[i]) - upm[i];
    const double fd_gate = dout[i] * (double(fp[i]) - fm[i]) / step_g;
    const double fd_up = dout[i] * (double(up_p[i]) - up_m[i]) / step_u;
    const double fd_silu = dout[i] * (double(sp[i]) - sm[i]) / step_g;
    EXPECT_NEAR(dgate[i], fd_gate, 1e-3 * std::max(1.0, std::fabs(fd_gate))) << i;
    EXPECT_NEAR(dup[i], fd_up, 1e-3 * std::max(1.0, std::fabs(fd_up))) << i;
    EXPECT_NEAR(dx[i], fd_silu, 1e-3 * std::max(1.0, std::fabs(fd_silu))) << i;
  }
}

TEST(ElementwiseTest, BiasRowsAndTheirColumnSums) {
  std::mt19937 rng(11);
  for (int64_t rows : {0, 1, 5, 33}) {
    for (int64_t cols : {0, 1, 7, 65}) {
      const std::vector<float> y0 = random_vec(rng, rows * cols), b = random_vec(rng, cols);
      std::vector<float> y = y0;
      bias_add_f32(y.data(), b.data(), rows, cols);
      for (int64_t i = 0; i < rows * cols; ++i)  // one correctly rounded add each
        EXPECT_EQ(y[i], static_cast<float>(double(y0[i]) + b[i % cols])) << rows << "x" << cols << " at " << i;
      // Column sums accumulate onto db, rows in order: the float sum of a plain loop, bit for bit.
      const std::vector<float> db0 = random_vec(rng, cols);
      std::vector<float> db = db0;
      bias_backward_f32(db.data(), y0.data(), rows, cols);
      for (int64_t c = 0; c < cols; ++c) {
        float want = db0[c];
        double exact = db0[c];
        for (int64_t r = 0; r < rows; ++r) {
          want += y0[r * cols + c];
          exact += y0[r * cols + c];
        }
        EXPECT_EQ(db[c], want) << rows << "x" << cols << " column " << c;
        EXPECT_NEAR(db[c], exact, 1e-5 * (rows + 1)) << rows << "x" << cols << " column " << c;
      }
    }
  }
}

TEST(ElementwiseTest, SigmoidBackwardIsTheDerivativeFromTheOutput) {
  std::mt19937 rng(12);
  for (int64_t n : kSizes) {
    const std::vector<float> x = random_vec(rng, n, -6.0f, 6.0f), dy = random_vec(rng, n);
    std::vector<float> y(n), dx(n);
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(sigmoid(x[i]));
    sigmoid_backward_f32(dx.data(), dy.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i)  // three fp32 roundings of the exact product from this y
      EXPECT_NEAR(dx[i], dy[i] * double(y[i]) * (1.0 - y[i]), 4e-7 * std::fabs(dx[i]) + 1e-12) << i;
    sigmoid_backward_f32(dx.data(), dy.data(), dx.data(), 0);  // empty: a no-op
  }
}

}  // namespace
}  // namespace strata
