// gemm_f32 (OpenBLAS) against gemm_reference_f32 (triple loop, double accumulation): all four
// transpose cases, alpha/beta variants, leading dimensions larger than the matrix, odd and
// degenerate sizes, BLAS's beta == 0 semantics, both thread counts; then the Tensor overload.
//
// Tolerance: fp32 accumulation of K products has a worst-case relative error near K * eps
// (eps = 2^-24 ~ 6e-8), about 2e-5 for K = 300, and a typical one near sqrt(K) * eps ~ 1e-6 for
// random signs. The check is on the Frobenius norm of the whole difference (relative to the
// norm of the reference), which averages out single-element cancellation: 1e-5 leaves a 10x
// margin over the typical error yet catches any indexing or transpose mistake (those give O(1)).
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace strata {
namespace {

constexpr double kGemmTol = 1e-5;
constexpr float kSentinel = 12345.0f;  // fills padding that gemm must not touch

std::vector<float> random_vec(std::mt19937& rng, int64_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// ||got - want|| / ||want|| over the (M, N) block of two ldc-strided buffers.
double rel_error(const std::vector<float>& got, const std::vector<float>& want, int64_t M,
                 int64_t N, int64_t ldc) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      const double g = got[i * ldc + j], w = want[i * ldc + j];
      diff += (g - w) * (g - w);
      norm += w * w;
    }
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

struct GemmCase {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  int64_t pad;  // extra elements per stored row of A, B and C
};

// Runs one case through gemm_f32 and the reference on identical inputs; checks the result and
// that the padding columns of C are untouched.
void check_case(std::mt19937& rng, const GemmCase& c) {
  SCOPED_TRACE(testing::Message() << "ta=" << c.ta << " tb=" << c.tb << " M=" << c.M << " N=" << c.N
                                  << " K=" << c.K << " alpha=" << c.alpha << " beta=" << c.beta
                                  << " pad=" << c.pad);
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  const int64_t lda = std::max<int64_t>(1, a_cols + c.pad);
  const int64_t ldb = std::max<int64_t>(1, b_cols + c.pad);
  const int64_t ldc = std::max<int64_t>(1, c.N + c.pad);
  const std::vector<float> A = random_vec(rng, a_rows * lda);
  const std::vector<float> B = random_vec(rng, b_rows * ldb);
  std::vector<float> C = random_vec(rng, c.M * ldc);
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = c.N; j < ldc; ++j) C[i * ldc + j] = kSentinel;
  }
  std::vector<float> want = C;
  gemm_f32(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc);
  gemm_reference_f32(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta,
                     want.data(), ldc);
  EXPECT_LT(rel_error(C, want, c.M, c.N, ldc), kGemmTol);
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = c.N; j < ldc; ++j) ASSERT_EQ(C[i * ldc + j], kSentinel) << i << "," << j;
  }
}

class GemmTest : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(GemmTest, ReferenceMatchesHandComputedProduct) {
  // [1 2; 3 4] @ [5 6; 7 8] = [19 22; 43 50]; alpha 2, beta 1 onto ones.
  const float A[] = {1, 2, 3, 4}, B[] = {5, 6, 7, 8};
  float C[] = {1, 1, 1, 1};
  gemm_reference_f32(false, false, 2, 2, 2, 2.0f, A, 2, B, 2, 1.0f, C, 2);
  EXPECT_EQ(C[0], 39);
  EXPECT_EQ(C[1], 45);
  EXPECT_EQ(C[2], 87);
  EXPECT_EQ(C[3], 101);
  // A^T @ B^T = (B A)^T: [[1 3],[2 4]] @ [[5 7],[6 8]] = [23 31; 34 46].
  float D[4];
  gemm_reference_f32(true, true, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, D, 2);
  EXPECT_EQ(D[0], 23);
  EXPECT_EQ(D[1], 31);
  EXPECT_EQ(D[2], 34);
  EXPECT_EQ(D[3], 46);
}

TEST_F(GemmTest, AllTransposesOddSizesMatchReference) {
  std::mt19937 rng(1234);
  const int64_t sizes[] = {1, 3, 17, 63, 65, 129};
  std::uniform_int_distribution<int> pick(0, 5);
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      // Every size appears in every position once, plus random combinations.
      for (int s = 0; s < 6; ++s) {
        check_case(rng, {ta == 1, tb == 1, sizes[s], sizes[(s + 2) % 6], sizes[(s + 4) % 6], 1.0f,
                         0.0f, 0});
      }
      for (int r = 0; r < 6; ++r) {
        check_case(rng, {ta == 1, tb == 1, sizes[pick(rng)], sizes[pick(rng)], sizes[pick(rng)],
                         1.0f, 0.0f, 0});
      }
    }
  }
}

TEST_F(GemmTest, AlphaBetaAndLeadingDimensions) {
  std::mt19937 rng(99);
  const float alphas[] = {1.0f, 0.5f, -2.0f};
  const float betas[] = {0.0f, 1.0f, -0.25f};
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      for (float alpha : alphas) {
        for (float beta : betas) {
          // pad > 0: the operands are submatrices of wider row-major buffers.
          check_case(rng, {ta == 1, tb == 1, 33, 19, 47, alpha, beta, 5});
          check_case(rng, {ta == 1, tb == 1, 8, 65, 16, alpha, beta, 1});
        }
      }
    }
  }
}

TEST_F(GemmTest, LongInnerDimension) {
  std::mt19937 rng(7);
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) check_case(rng, {ta == 1, tb == 1, 64, 48, 300, 1.0f, 1.0f, 3});
  }
}

TEST_F(GemmTest, BothThreadCountsMatchReference) {
  std::mt19937 rng(5);
  for (int threads : {1, 2}) {
    set_blas_threads(threads);
    EXPECT_EQ(blas_threads(), threads);
    // Large enough that OpenBLAS actually splits the work over threads.
    check_case(rng, {false, true, 256, 192, 160, 1.0f, 0.0f, 0});
    check_case(rng, {true, false, 160, 256, 192, 1.0f, 1.0f, 0});
  }
}

TEST_F(GemmTest, BetaZeroOverwritesNaN) {
  // BLAS semantics: with beta == 0, C is output only; NaN or Inf already there must not survive
  // as 0 * NaN would. Covers the OpenBLAS path, the K == 0 path and the alpha == 0 path.
  std::mt19937 rng(11);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t M = 17, N = 9, K = 5;
  const std::vector<float> A = random_vec(rng, M * K), B = random_vec(rng, K * N);
  for (int64_t k : {K, int64_t{0}}) {
    for (float alpha : {1.0f, 0.0f}) {
      std::vector<float> C(M * N, nan);
      C[3] = std::numeric_limits<float>::infinity();
      std::vector<float> want(M * N, nan);
      gemm_f32(false, false, M, N, k, alpha, A.data(), std::max<int64_t>(1, k), B.data(), N, 0.0f,
               C.data(), N);
      gemm_reference_f32(false, false, M, N, k, alpha, A.data(), std::max<int64_t>(1, k), B.data(),
                         N, 0.0f, want.data(), N);
      for (int64_t i = 0; i < M * N; ++i) {
        ASSERT_TRUE(std::isfinite(C[i])) << "k=" << k << " alpha=" << alpha << " i=" << i;
        ASSERT_TRUE(std::isfinite(want[i])) << "reference, k=" << k << " i=" << i;
      }
      EXPECT_LT(rel_error(C, want, M, N, N), kGemmTol);
    }
  }
}

TEST_F(GemmTest, DegenerateSizes) {
  std::mt19937 rng(3);
  // M == 0 or N == 0: nothing is written (C here is a sentinel buffer that must not change).
  std::vector<float> C(8, kSentinel);
  const std::vector<float> A = random_vec(rng, 8), B = random_vec(rng, 8);
  gemm_f32(false, false, 0, 4, 2, 1.0f, A.data(), 2, B.data(), 4, 0.0f, C.data(), 4);
  gemm_f32(false, false, 2, 0, 2, 1.0f, A.data(), 2, B.data(), 1, 0.0f, C.data(), 1);
  for (float c : C) EXPECT_EQ(c, kSentinel);
  gemm_f32(false, false, 0, 0, 0, 1.0f, nullptr, 1, nullptr, 1, 0.0f, nullptr, 1);

  // K == 0: C = beta * C, for every transpose case and with padding left alone.
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      std::vector<float> c = {1, 2, kSentinel, 3, 4, kSentinel};  // (2, 2), ldc 3
      gemm_f32(ta == 1, tb == 1, 2, 2, 0, 1.0f, nullptr, ta ? 2 : 1, nullptr, tb ? 1 : 2, 2.0f,
               c.data(), 3);
      EXPECT_EQ(c, (std::vector<float>{2, 4, kSentinel, 6, 8, kSentinel}));
      gemm_f32(ta == 1, tb == 1, 2, 2, 0, 1.0f, nullptr, ta ? 2 : 1, nullptr, tb ? 1 : 2, 0.0f,
               c.data(), 3);
      EXPECT_EQ(c, (std::vector<float>{0, 0, kSentinel, 0, 0, kSentinel}));
    }
  }
  // The 1-sized edges go through OpenBLAS's vector paths.
  check_case(rng, {false, false, 1, 1, 1, 1.0f, 0.0f, 0});
  check_case(rng, {false, false, 1, 129, 65, 1.0f, 1.0f, 0});
  check_case(rng, {true, true, 129, 1, 65, 1.0f, 1.0f, 2});
  check_case(rng, {true, false, 65, 63, 1, -1.0f, 0.5f, 1});
}

TEST_F(GemmTest, TensorOverloadFlattensLeadingDimensions) {
  // The linear layer's three products on (B, T, C) activations: y = x W^T, dx = dy W,
  // dW += dy^T x.
  std::mt19937 rng(21);
  const int64_t B = 2, T = 5, Cin = 7, Cout = 3;
  Tensor x = Tensor::from_f32({B, T, Cin}, random_vec(rng, B * T * Cin));
  Tensor w = Tensor::from_f32({Cout, Cin}, random_vec(rng, Cout * Cin));
  Tensor y = Tensor::zeros({B, T, Cout}, DType::kF32);
  gemm(x, false, w, true, y);
  std::vector<float> want(B * T * Cout);
  gemm_reference_f32(false, true, B * T, Cout, Cin, 1.0f, x.f32(), Cin, w.f32(), Cin, 0.0f,
                     want.data(), Cout);
  EXPECT_LT(rel_error(std::vector<float>(y.f32(), y.f32() + y.numel()), want, B * T, Cout, Cout),
            kGemmTol);

  Tensor dx = Tensor::zeros({B, T, Cin}, DType::kF32);
  gemm(y, false, w, false, dx);
  std::vector<float> want_dx(B * T * Cin);
  gemm_reference_f32(false, false, B * T, Cin, Cout, 1.0f, y.f32(), Cout, w.f32(), Cin, 0.0f,
                     want_dx.data(), Cin);
  EXPECT_LT(
      rel_error(std::vector<float>(dx.f32(), dx.f32() + dx.numel()), want_dx, B * T, Cin, Cin),
      kGemmTol);

  Tensor dw = Tensor::from_f32({Cout, Cin}, random_vec(rng, Cout * Cin));
  std::vector<float> want_dw(dw.f32(), dw.f32() + dw.numel());
  gemm(y, true, x, false, dw, 1.0f, 1.0f);
  gemm_reference_f32(true, false, Cout, Cin, B * T, 1.0f, y.f32(), Cout, x.f32(), Cin, 1.0f,
                     want_dw.data(), Cin);
  EXPECT_LT(rel_error(std::vector<float>(dw.f32(), dw.f32() + dw.numel()), want_dw, Cout, Cin, Cin),
            kGemmTol);
}

TEST_F(GemmTest, TensorOverloadEmptyInnerDimension) {
  // (4, 0) @ (0, 3): K == 0, so C = beta * C = 0 with beta 0.
  Tensor a = Tensor::zeros({4, 0}, DType::kF32);
  Tensor b = Tensor::zeros({0, 3}, DType::kF32);
  Tensor c = Tensor::from_f32({4, 3}, std::vector<float>(12, 7.0f));
  gemm(a, false, b, false, c);
  for (int64_t i = 0; i < c.numel(); ++i) EXPECT_EQ(c.f32()[i], 0.0f);
}

TEST_F(GemmTest, TensorOverloadRejectsMismatchedShapes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  Tensor a = Tensor::zeros({4, 3}, DType::kF32);
  Tensor b = Tensor::zeros({5, 6}, DType::kF32);
  Tensor c = Tensor::zeros({4, 6}, DType::kF32);
  EXPECT_DEATH(gemm(a, false, b, false, c), "inner dimensions differ.*\\(4, 3\\).*\\(5, 6\\)");
  Tensor b2 = Tensor::zeros({3, 6}, DType::kF32);
  Tensor c2 = Tensor::zeros({4, 5}, DType::kF32);
  EXPECT_DEATH(gemm(a, false, b2, false, c2), "C\\(4, 5\\) is not \\(M, N\\) = \\(4, 6\\)");
  Tensor bad = Tensor::zeros({3, 6}, DType::kBF16);
  EXPECT_DEATH(gemm(a, false, bad, false, c), "takes f32");
}

}  // namespace
}  // namespace strata
