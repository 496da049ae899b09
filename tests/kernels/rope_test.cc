// RoPE: the tables hold cos and sin of the fp32 angle float(p) * inv_freq (as HF's fp32 matmul
// rounds it, which differs from the exact angle by up to 2e-4 at p ~ 4000); the rotation matches
// HF's formula q * cos(emb) + rotate_half(q) * sin(emb) with emb = cat(freqs, freqs), written
// out directly in double; inverse undoes forward and is its transpose (so it is the backward);
// odd head counts and half-dimensions that are not a multiple of 8; one thread or two.
//
// Tolerances: each output is x1 c - x2 s with two fp32 products and one sum, within ~2 roundings
// of |x1 c| + |x2 s|: 3e-7 times that; forward then inverse doubles it.
#include <cmath>
#include <cstdint>
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

// HF's inv_freq in fp32: 1 / theta^(arange(0, D, 2) / D).
std::vector<float> inv_freq_hf(int64_t D, float theta) {
  std::vector<float> f(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    f[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(D));
  }
  return f;
}

std::vector<int32_t> random_pos(std::mt19937& rng, int64_t rows, int32_t max_pos) {
  std::uniform_int_distribution<int32_t> u(0, max_pos - 1);
  std::vector<int32_t> p(static_cast<size_t>(rows));
  for (int32_t& x : p) x = u(rng);
  return p;
}

class RopeTest : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(RopeTest, TablesUseTheFp32Angle) {
  const int64_t D = 64, max_pos = 4096;
  const std::vector<float> inv_freq = inv_freq_hf(D, 10000.0f);
  std::vector<float> cos(max_pos * D / 2), sin(max_pos * D / 2);
  rope_tables_f32(cos.data(), sin.data(), inv_freq.data(), max_pos, D);
  double max_angle_gap = 0;  // how far the fp32 angle is from the exact one
  for (int64_t p = 0; p < max_pos; ++p) {
    for (int64_t i = 0; i < D / 2; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      max_angle_gap = std::max(max_angle_gap, std::fabs(double(angle) - double(p) * inv_freq[i]));
      // cos and sin of that fp32 angle, correctly rounded up to 1 ulp (values <= 1: 1.2e-7).
      ASSERT_NEAR(cos[p * D / 2 + i], std::cos(double(angle)), 1.2e-7) << p << "," << i;
      ASSERT_NEAR(sin[p * D / 2 + i], std::sin(double(angle)), 1.2e-7) << p << "," << i;
    }
  }
  // The check above would not tell the fp32 angle from the exact one if they never differed.
  EXPECT_GT(max_angle_gap, 1e-5);
}

TEST_F(RopeTest, ForwardMatchesHuggingFaceFormula) {
  std::mt19937 rng(30);
  const int64_t max_pos = 300;
  const int64_t shapes[][3] = {{1, 1, 2},  {3, 2, 6},  {5, 3, 10},
                               {4, 1, 16}, {7, 3, 64}, {2, 4, 128}};
  for (const auto& s : shapes) {
    const int64_t rows = s[0], H = s[1], D = s[2], half = D / 2;
    SCOPED_TRACE(testing::Message() << "rows=" << rows << " H=" << H << " D=" << D);
    const std::vector<float> inv_freq = inv_freq_hf(D, 1000000.0f);
    std::vector<float> cos(max_pos * half), sin(max_pos * half);
    rope_tables_f32(cos.data(), sin.data(), inv_freq.data(), max_pos, D);
    const std::vector<float> x = random_vec(rng, rows * H * D, -2.0f, 2.0f);
    const std::vector<int32_t> pos = random_pos(rng, rows, max_pos);
    std::vector<float> y = x;
    rope_apply_f32(y.data(), pos.data(), cos.data(), sin.data(), rows, H, D, /*inverse=*/false);
    for (int64_t r = 0; r < rows; ++r) {
      // emb = cat(freqs, freqs): column c uses angle c mod D/2.
      std::vector<double> ce(D), se(D);
      for (int64_t c = 0; c < D; ++c) {
        ce[c] = cos[pos[r] * half + c % half];
        se[c] = sin[pos[r] * half + c % half];
      }
      for (int64_t h = 0; h < H; ++h) {
        const float* q = &x[(r * H + h) * D];
        for (int64_t c = 0; c < D; ++c) {
          const double rot = c < half ? -double(q[c + half]) : double(q[c - half]);  // rotate_half
          const double want = q[c] * ce[c] + rot * se[c];
          const double mag = std::fabs(q[c] * ce[c]) + std::fabs(rot * se[c]);
          ASSERT_NEAR(y[(r * H + h) * D + c], want, 3e-7 * mag + 1e-12)
              << r << "," << h << "," << c;
        }
      }
    }
  }
}

TEST_F(RopeTest, InverseUndoesForwardAndIsItsTranspose) {
  // inverse is the backward: with y = R x, dL/dx = R^T dy, and R^T = inverse exactly when
  // <R x, u> = <x, inverse(u)> for all x, u.
  std::mt19937 rng(31);
  const int64_t rows = 6, H = 3, D = 18, max_pos = 50;
  const std::vector<float> inv_freq = inv_freq_hf(D, 10000.0f);
  std::vector<float> cos(max_pos * D / 2), sin(max_pos * D / 2);
  rope_tables_f32(cos.data(), sin.data(), inv_freq.data(), max_pos, D);
  const std::vector<float> x = random_vec(rng, rows * H * D, -2.0f, 2.0f);
  const std::vector<float> u = random_vec(rng, rows * H * D, -1.0f, 1.0f);
  const std::vector<int32_t> pos = random_pos(rng, rows, max_pos);
  std::vector<float> rx = x, back = x, ru = u;
  rope_apply_f32(rx.data(), pos.data(), cos.data(), sin.data(), rows, H, D, false);
  back = rx;
  rope_apply_f32(back.data(), pos.data(), cos.data(), sin.data(), rows, H, D, true);
  rope_apply_f32(ru.data(), pos.data(), cos.data(), sin.data(), rows, H, D, true);
  double lhs = 0, rhs = 0, mag = 0;
  for (int64_t i = 0; i < rows * H * D; ++i) {
    const int64_t c = i % D;
    const float partner = c < D / 2 ? x[i + D / 2] : x[i - D / 2];
    EXPECT_NEAR(back[i], x[i], 6e-7 * (std::fabs(x[i]) + std::fabs(partner))) << i;
    lhs += double(rx[i]) * u[i];
    rhs += double(x[i]) * ru[i];
    mag += std::fabs(double(x[i]) * u[i]);
  }
  EXPECT_NEAR(lhs, rhs, 1e-6 * mag);
}

TEST_F(RopeTest, ThreadCountDoesNotChangeResults) {
  // 600 rows x 4 heads x 128 is above the threading threshold.
  std::mt19937 rng(32);
  const int64_t rows = 600, H = 4, D = 128, max_pos = 1024;
  const std::vector<float> inv_freq = inv_freq_hf(D, 10000.0f);
  std::vector<float> cos(max_pos * D / 2), sin(max_pos * D / 2);
  rope_tables_f32(cos.data(), sin.data(), inv_freq.data(), max_pos, D);
  const std::vector<float> x = random_vec(rng, rows * H * D, -2.0f, 2.0f);
  const std::vector<int32_t> pos = random_pos(rng, rows, max_pos);
  std::vector<float> y[2];
  for (int t = 0; t < 2; ++t) {
    set_blas_threads(t + 1);
    y[t] = x;
    rope_apply_f32(y[t].data(), pos.data(), cos.data(), sin.data(), rows, H, D, false);
  }
  EXPECT_EQ(y[0], y[1]);
}

}  // namespace
}  // namespace strata
