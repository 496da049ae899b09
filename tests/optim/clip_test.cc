// optim/adamw.h, gradients: global-norm clipping (clip_grad_norm_ semantics, a fixed summation
// order whatever the thread count) and the non-finite check. Parity with torch's clip on the golden
// run is in adamw_test.cc (RunAClipAndAdamWMatchTorch).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"  // blas_threads, set_blas_threads
#include "optim/adamw.h"

namespace strata {
namespace {

// Parameters and gradients of the given sizes; gradients normal(0, scale).
struct Grads {
  std::vector<Tensor> values, grads;
  std::vector<OptimTensor> list;

  Grads(const std::vector<int64_t>& sizes, float scale, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    values.reserve(sizes.size());
    grads.reserve(sizes.size());
    for (int64_t n : sizes) {
      values.push_back(Tensor::zeros({n}, DType::kF32));
      grads.push_back(Tensor::zeros({n}, DType::kF32));
      for (int64_t i = 0; i < n; ++i) grads.back().f32()[i] = d(rng);
    }
    for (size_t i = 0; i < sizes.size(); ++i)
      list.push_back({"t" + std::to_string(i), &values[i], &grads[i], true});
  }
  double naive_norm() const {
    double s = 0;
    for (const Tensor& g : grads)
      for (int64_t i = 0; i < g.numel(); ++i) s += static_cast<double>(g.f32()[i]) * g.f32()[i];
    return std::sqrt(s);
  }
  std::vector<float> flat() const {
    std::vector<float> out;
    for (const Tensor& g : grads) out.insert(out.end(), g.f32(), g.f32() + g.numel());
    return out;
  }
};

class Clip : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(Clip, NormIsTheGlobalL2Norm) {
  Grads g({3, 64, 1000, 17}, 0.5f, 1);
  EXPECT_NEAR(clip_grad_norm(g.list, 0.0), g.naive_norm(), 1e-14 * g.naive_norm());
  EXPECT_NEAR(grad_sum_of_squares(g.list), g.naive_norm() * g.naive_norm(),
              1e-13 * g.naive_norm() * g.naive_norm());
}

TEST_F(Clip, IsANoOpBelowMaxNormOrWhenOff) {
  Grads g({5, 100}, 0.01f, 2);
  const std::vector<float> before = g.flat();
  const double norm = clip_grad_norm(g.list, 10.0);
  EXPECT_LT(norm, 10.0);
  EXPECT_EQ(g.flat(), before);
  Grads big({5, 100}, 10.0f, 2);
  const std::vector<float> big_before = big.flat();
  EXPECT_GT(clip_grad_norm(big.list, 0.0), 1.0);  // max_norm 0: report, never scale
  EXPECT_EQ(big.flat(), big_before);
}

TEST_F(Clip, ScalesAboveMaxNormLikeTorch) {
  Grads g({5, 100, 33}, 1.0f, 3);
  const std::vector<float> before = g.flat();
  const double max_norm = 1.0;
  const double norm = clip_grad_norm(g.list, max_norm);
  EXPECT_GT(norm, max_norm);
  // torch: clip_coef = max_norm / (norm + 1e-6), one fp32 multiply per element.
  const float coef = static_cast<float>(max_norm / (norm + 1e-6));
  const std::vector<float> after = g.flat();
  for (size_t i = 0; i < after.size(); ++i) ASSERT_EQ(after[i], before[i] * coef) << i;
  EXPECT_NEAR(g.naive_norm(), max_norm, 2e-6);
}

TEST_F(Clip, NormDoesNotDependOnThreads) {
  // Large enough to be split over threads; the chunked double sums fix the order.
  Grads g({(int64_t{1} << 20) + 3, 999}, 1.0f, 4);
  set_blas_threads(1);
  const double one = grad_sum_of_squares(g.list);
  set_blas_threads(2);
  const double two = grad_sum_of_squares(g.list);
  EXPECT_EQ(one, two);
}

TEST_F(Clip, NonfiniteNormLeavesGradsAlone) {
  Grads g({10, 20}, 1.0f, 5);
  g.grads[1].f32()[3] = std::numeric_limits<float>::infinity();
  const std::vector<float> before = g.flat();
  EXPECT_TRUE(std::isinf(clip_grad_norm(g.list, 1.0)));
  EXPECT_EQ(std::memcmp(g.flat().data(), before.data(), before.size() * 4), 0);
  g.grads[1].f32()[3] = std::nanf("");
  EXPECT_TRUE(std::isnan(clip_grad_norm(g.list, 1.0)));
}

TEST(GradsHaveNonfinite, FindsNanAndInfAnywhere) {
  const float kBad[] = {std::nanf(""), -std::nanf(""), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  // Positions in the 64-element blocks, at their edges and in the tail, in either tensor.
  for (size_t tensor : {size_t{0}, size_t{1}}) {
    for (int64_t pos : {int64_t{0}, int64_t{63}, int64_t{64}, int64_t{127}, int64_t{130}}) {
      for (float bad : kBad) {
        Grads g({131, 131}, 1.0f, 6);
        EXPECT_FALSE(grads_have_nonfinite(g.list));
        g.grads[tensor].f32()[pos] = bad;
        EXPECT_TRUE(grads_have_nonfinite(g.list))
            << "tensor " << tensor << " pos " << pos << " " << bad;
      }
    }
  }
}

TEST(GradsHaveNonfinite, ExtremeFiniteValuesAreFine) {
  Grads g({8, 3}, 1.0f, 7);
  const float kFine[] = {FLT_MAX, -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, -0.0f, 0.0f};
  for (int i = 0; i < 6; ++i) g.grads[i < 4 ? 0 : 1].f32()[i % 4 % 3] = kFine[i];
  EXPECT_FALSE(grads_have_nonfinite(g.list));
  EXPECT_FALSE(grads_have_nonfinite({}));
}

}  // namespace
}  // namespace strata
