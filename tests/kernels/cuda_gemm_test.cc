// The cuBLASLt GEMMs of kernels/cuda/gemm.cu against the CPU (kernels/ops.h gemm_f32, quant.h,
// moe_ops.h), each on fresh random inputs:
//   - gemm_f32 and gemm_bf16: all four trans combinations, sizes 1 and odd sizes that end
//     mid-warp and mid-tile, leading dimensions larger than the minimum (the gaps must stay
//     untouched), alpha/beta other than 1/0, beta == 0 over a NaN-poisoned C, and the degenerate
//     cases (K == 0, alpha == 0 with a NaN operand, M == 0, N == 0) matched exactly;
//   - the fp8 linear GEMM with per-tensor scales (K also not a multiple of 16) and with
//     DeepSeek-V3 block scales (1x128 x, 128x128 W; T and N not multiples of 128 or 4, K / 128
//     not a multiple of 4), on block magnitudes spread over 2^+-6 so a misplaced scale shows,
//     and in the weight-gradient form where W has 1x128 tiles too (w_row_tiles); the
//     reference is the CPU's dequantised operands through gemm_f32;
//   - the grouped linear forward / backward_input / backward_weight against their CPU twins,
//     with empty groups first, in the middle and last (their dW rows must stay as they were).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/moe_ops.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

using gputest::DeviceArray;
using gputest::fresh_seed;
using gputest::randn;
using gputest::rel_err;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct GemmShape {
  int64_t M, N, K;
};

const GemmShape kGemmShapes[] = {{1, 1, 1},    {1, 17, 129},  {17, 129, 300},
                                 {129, 300, 17}, {300, 1, 129}, {64, 128, 256}};

std::string describe(const char* op, bool ta, bool tb, const GemmShape& s, int64_t lda,
                     int64_t ldb, int64_t ldc, float alpha, float beta) {
  std::ostringstream os;
  os << op << " trans_a=" << ta << " trans_b=" << tb << " M=" << s.M << " N=" << s.N
     << " K=" << s.K << " lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << " alpha=" << alpha
     << " beta=" << beta;
  return os.str();
}

// One padded GEMM problem on the host: A stored (M, K) or (K, M), B (K, N) or (N, K), C (M, N),
// each with a leading dimension a few elements past the minimum. For beta == 0 C is all NaN.
struct GemmCase {
  bool ta = false, tb = false;
  GemmShape s{};
  int64_t lda = 0, ldb = 0, ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
  std::vector<float> A, B, C;

  GemmCase(bool ta_, bool tb_, GemmShape s_, float alpha_, float beta_, std::mt19937& rng)
      : ta(ta_), tb(tb_), s(s_), alpha(alpha_), beta(beta_) {
    lda = (ta ? s.M : s.K) + 3;
    ldb = (tb ? s.K : s.N) + 5;
    ldc = s.N + 7;
    A = randn(static_cast<size_t>((ta ? s.K : s.M) * lda), rng);
    B = randn(static_cast<size_t>((tb ? s.N : s.K) * ldb), rng);
    C = beta == 0.0f ? std::vector<float>(static_cast<size_t>(s.M * ldc), kNaN)
                     : randn(static_cast<size_t>(s.M * ldc), rng);
  }
  // C after the CPU's gemm_f32 on (A, B) as given.
  std::vector<float> reference(const std::vector<float>& a, const std::vector<float>& b) const {
    std::vector<float> c = C;
    gemm_f32(ta, tb, s.M, s.N, s.K, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
    return c;
  }
};

GPU_TEST(CudaGemm, F32AllTransposesAndPaddedLeadingDimensions) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (const GemmShape& s : kGemmShapes) {
    for (int t = 0; t < 4; ++t) {
      for (const auto& [alpha, beta] : {std::pair{1.25f, -0.5f}, std::pair{1.0f, 0.0f}}) {
        const GemmCase c(t & 1, t & 2, s, alpha, beta, rng);
        DeviceArray<float> A(c.A), B(c.B), C(c.C);
        cuda::gemm_f32(c.ta, c.tb, s.M, s.N, s.K, alpha, A.data(), c.lda, B.data(), c.ldb, beta,
                       C.data(), c.ldc);
        EXPECT_CLOSE(C.download(), c.reference(c.A, c.B), gputest::kFp32GemmBound,
                     describe("gemm_f32", c.ta, c.tb, s, c.lda, c.ldb, c.ldc, alpha, beta));
      }
    }
  }
}

GPU_TEST(CudaGemm, F32DegenerateSizes) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t M = 5, N = 7, ldc = 9;
  // K == 0: C = beta * C; beta == 0 overwrites NaN with zeros; beta == 1 leaves C.
  for (float beta : {0.5f, 0.0f, 1.0f}) {
    const std::vector<float> c0 = beta == 0.0f ? std::vector<float>(M * ldc, kNaN)
                                               : randn(M * ldc, rng);
    DeviceArray<float> C(c0);
    cuda::gemm_f32(false, false, M, N, 0, 1.0f, nullptr, 1, nullptr, N, beta, C.data(), ldc);
    std::vector<float> ref = c0;
    gemm_f32(false, false, M, N, 0, 1.0f, nullptr, 1, nullptr, N, beta, ref.data(), ldc);
    EXPECT_CLOSE(C.download(), ref, gputest::kExactBound, "gemm_f32 K=0 beta=" << beta);
  }
  // alpha == 0: A and B are not read (a NaN in A must not reach C).
  {
    const int64_t K = 33;
    std::vector<float> a = randn(M * K, rng), b = randn(K * N, rng), c0 = randn(M * ldc, rng);
    a[3] = kNaN;
    DeviceArray<float> A(a), B(b), C(c0);
    cuda::gemm_f32(false, false, M, N, K, 0.0f, A.data(), K, B.data(), N, 0.25f, C.data(), ldc);
    std::vector<float> ref = c0;
    gemm_f32(false, false, M, N, K, 0.0f, a.data(), K, b.data(), N, 0.25f, ref.data(), ldc);
    EXPECT_CLOSE(C.download(), ref, gputest::kExactBound, "gemm_f32 alpha=0");
  }
  // M == 0 or N == 0: nothing is written.
  for (const auto& [m, n] : {std::pair<int64_t, int64_t>{0, 5}, std::pair<int64_t, int64_t>{3, 0}}) {
    const int64_t K = 4, ld = 8;
    const std::vector<float> a = randn(8 * ld, rng), b = randn(8 * ld, rng), c0 = randn(8 * ld, rng);
    DeviceArray<float> A(a), B(b), C(c0);
    cuda::gemm_f32(false, false, m, n, K, 1.0f, A.data(), ld, B.data(), ld, 0.0f, C.data(), ld);
    EXPECT_CLOSE(C.download(), c0, gputest::kExactBound, "gemm_f32 M=" << m << " N=" << n);
  }
}

GPU_TEST(CudaGemm, Bf16AllTransposesAgainstRoundedFp32) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (const GemmShape& s : kGemmShapes) {
    for (int t = 0; t < 4; ++t) {
      for (const auto& [alpha, beta] : {std::pair{0.75f, 0.25f}, std::pair{1.0f, 0.0f}}) {
        const GemmCase c(t & 1, t & 2, s, alpha, beta, rng);
        // Operands rounded to bf16 on the host; the CPU reference multiplies the rounded values.
        std::vector<uint16_t> a_bits(c.A.size()), b_bits(c.B.size());
        std::vector<float> a_rounded(c.A.size()), b_rounded(c.B.size());
        for (size_t i = 0; i < c.A.size(); ++i) {
          a_bits[i] = f32_to_bf16(c.A[i]);
          a_rounded[i] = bf16_to_f32(a_bits[i]);
        }
        for (size_t i = 0; i < c.B.size(); ++i) {
          b_bits[i] = f32_to_bf16(c.B[i]);
          b_rounded[i] = bf16_to_f32(b_bits[i]);
        }
        DeviceArray<uint16_t> A(a_bits), B(b_bits);
        DeviceArray<float> C(c.C);
        cuda::gemm_bf16(c.ta, c.tb, s.M, s.N, s.K, alpha, A.data(), c.lda, B.data(), c.ldb, beta,
                        C.data(), c.ldc);
        EXPECT_CLOSE(C.download(), c.reference(a_rounded, b_rounded), gputest::kBf16GemmBound,
                     describe("gemm_bf16", c.ta, c.tb, s, c.lda, c.ldb, c.ldc, alpha, beta));
      }
    }
  }
}

// ---- fp8 -------------------------------------------------------------------------------------

struct LinearShape {
  int64_t T, K, N;
};

// y (T, N) = xd (T, K) wd^T on the CPU.
std::vector<float> linear_reference(const std::vector<float>& xd, const std::vector<float>& wd,
                                    int64_t T, int64_t K, int64_t N) {
  std::vector<float> y(static_cast<size_t>(T * N));
  gemm_f32(false, true, T, N, K, 1.0f, xd.data(), K, wd.data(), K, 0.0f, y.data(), N);
  return y;
}

float e4m3_scale(float amax) { return fp8_scale(amax, DType::kF8E4M3, false); }

GPU_TEST(CudaGemm, Fp8TensorScaled) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const LinearShape shapes[] = {{1, 128, 1},    {5, 16, 3},     {17, 256, 33},
                                {130, 384, 200}, {300, 512, 129}, {33, 100, 65}};
  for (const LinearShape& s : shapes) {
    const std::vector<float> x = randn(static_cast<size_t>(s.T * s.K), rng, 3.0f);
    const std::vector<float> w = randn(static_cast<size_t>(s.N * s.K), rng, 0.05f);
    std::vector<uint8_t> xc(x.size()), wc(w.size());
    float xs = 0.0f, ws = 0.0f;
    quantize_tensor(x.data(), xc.data(), s.T * s.K, e4m3_scale, DType::kF8E4M3, &xs);
    quantize_tensor(w.data(), wc.data(), s.N * s.K, e4m3_scale, DType::kF8E4M3, &ws);
    std::vector<float> xd(x.size()), wd(w.size());
    dequantize_tensor(xc.data(), xs, xd.data(), s.T * s.K, DType::kF8E4M3);
    dequantize_tensor(wc.data(), ws, wd.data(), s.N * s.K, DType::kF8E4M3);

    DeviceArray<uint8_t> X(xc), W(wc);
    DeviceArray<float> XS(std::vector<float>{xs}), WS(std::vector<float>{ws});
    DeviceArray<float> Y(static_cast<size_t>(s.T * s.N));
    Y.poison();
    cuda::gemm_fp8_tensor(Y.data(), X.data(), XS.data(), W.data(), WS.data(), s.T, s.K, s.N);
    EXPECT_CLOSE(Y.download(), linear_reference(xd, wd, s.T, s.K, s.N), gputest::kFp8GemmBound,
                 "gemm_fp8_tensor T=" << s.T << " K=" << s.K << " N=" << s.N);
  }
}

// Values whose magnitude changes from tile to tile (powers of two in [2^-6, 2^6]), so every
// scale matters: (R, C) with tiles of tile_rows x 128.
std::vector<float> tiled_magnitudes(int64_t R, int64_t C, int64_t tile_rows, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-6, 6);
  const int64_t tr = (R + tile_rows - 1) / tile_rows, tc = (C + 127) / 128;
  std::vector<float> mag(static_cast<size_t>(tr * tc));
  for (float& m : mag) m = std::ldexp(1.0f, exponent(rng));
  std::vector<float> v(static_cast<size_t>(R * C));
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      v[r * C + c] = normal(rng) * mag[(r / tile_rows) * tc + c / 128];
    }
  }
  return v;
}

// One block-scaled fp8 GEMM against the CPU: x in 1x128 tiles, W in 128x128 blocks or, with
// w_row_tiles, in 1x128 tiles as well.
void check_fp8_block(const LinearShape& s, bool w_row_tiles, std::mt19937& rng) {
  const QuantTile w_tile = w_row_tiles ? kTile1x128 : kTile128x128;
  const std::vector<float> x = tiled_magnitudes(s.T, s.K, 1, rng);
  const std::vector<float> w = tiled_magnitudes(s.N, s.K, w_tile.rows, rng);
  std::vector<uint8_t> xc(x.size()), wc(w.size());
  std::vector<float> xs(static_cast<size_t>(quant_tile_count(s.T, s.K, kTile1x128)));
  std::vector<float> ws(static_cast<size_t>(quant_tile_count(s.N, s.K, w_tile)));
  quantize_tiles(x.data(), xc.data(), xs.data(), s.T, s.K, kTile1x128, DType::kF8E4M3, false);
  quantize_tiles(w.data(), wc.data(), ws.data(), s.N, s.K, w_tile, DType::kF8E4M3, false);
  std::vector<float> xd(x.size()), wd(w.size());
  dequantize_tiles(xc.data(), xs.data(), xd.data(), s.T, s.K, kTile1x128, DType::kF8E4M3);
  dequantize_tiles(wc.data(), ws.data(), wd.data(), s.N, s.K, w_tile, DType::kF8E4M3);

  DeviceArray<uint8_t> X(xc), W(wc);
  DeviceArray<float> XS(xs), WS(ws);
  DeviceArray<float> Y(static_cast<size_t>(s.T * s.N));
  Y.poison();
  cuda::gemm_fp8_block(Y.data(), X.data(), XS.data(), W.data(), WS.data(), s.T, s.K, s.N,
                       w_row_tiles);
  EXPECT_CLOSE(Y.download(), linear_reference(xd, wd, s.T, s.K, s.N), gputest::kFp8GemmBound,
               "gemm_fp8_block T=" << s.T << " K=" << s.K << " N=" << s.N
                                   << " w_row_tiles=" << w_row_tiles);
}

GPU_TEST(CudaGemm, Fp8BlockScaled) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  // K / 128 of 1, 2, 3, 4 and 5 (cuBLASLt pads the weight scale rows to a multiple of 4); T of 1,
  // 3 and 257 (not multiples of 4); N below, across and not at 128-row block edges.
  const LinearShape shapes[] = {{1, 128, 1},     {3, 128, 5},     {17, 256, 33},
                                {130, 384, 200}, {257, 640, 300}, {64, 512, 130}};
  for (const LinearShape& s : shapes) check_fp8_block(s, false, rng);
}

// The weight-gradient form: both operands in 1x128 tiles (N of 67 and 5: not multiples of 4).
GPU_TEST(CudaGemm, Fp8BlockScaledRowTiledWeights) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const LinearShape shapes[] = {{1, 128, 1}, {3, 256, 5}, {130, 256, 67}, {64, 384, 128},
                                {200, 640, 96}};
  for (const LinearShape& s : shapes) check_fp8_block(s, true, rng);
}

// ---- grouped linear ----------------------------------------------------------------------------

struct GroupedCase {
  int64_t K, N;
  std::vector<int64_t> offsets;  // (G + 1,)
};

GPU_TEST(CudaGemm, GroupedLinearForwardBackward) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const GroupedCase cases[] = {{33, 17, {0, 0, 7, 7, 40, 41}},          // empty first and middle
                               {256, 128, {0, 100, 100, 356}},            // empty middle
                               {64, 96, {0, 1, 130, 130}}};               // empty last
  for (const GroupedCase& c : cases) {
    const int64_t G = static_cast<int64_t>(c.offsets.size()) - 1, rows = c.offsets.back();
    const int64_t K = c.K, N = c.N;
    const int64_t* off = c.offsets.data();
    const std::string what = "G=" + std::to_string(G) + " rows=" + std::to_string(rows) +
                             " K=" + std::to_string(K) + " N=" + std::to_string(N);
    const std::vector<float> x = randn(static_cast<size_t>(rows * K), rng);
    const std::vector<float> dy = randn(static_cast<size_t>(rows * N), rng);
    const std::vector<float> W = randn(static_cast<size_t>(G * N * K), rng, 0.1f);
    const std::vector<float> dW0 = randn(static_cast<size_t>(G * N * K), rng);
    DeviceArray<float> dX(x), dDY(dy), dWt(W), dDW(dW0);

    // forward: y = x W^T per group (every row belongs to a group, so all are written).
    DeviceArray<float> dY(static_cast<size_t>(rows * N));
    dY.poison();
    cuda::grouped_linear_forward_f32(dY.data(), dX.data(), dWt.data(), off, G, K, N);
    std::vector<float> y(static_cast<size_t>(rows * N), 0.0f);
    grouped_linear_forward_f32(y.data(), x.data(), W.data(), off, G, K, N);
    EXPECT_CLOSE(dY.download(), y, gputest::kFp32GemmBound, "grouped forward " << what);

    // backward_input: dx = dy W per group, overwritten.
    DeviceArray<float> dDX(static_cast<size_t>(rows * K));
    dDX.poison();
    cuda::grouped_linear_backward_input_f32(dDX.data(), dDY.data(), dWt.data(), off, G, K, N);
    std::vector<float> dx(static_cast<size_t>(rows * K), 0.0f);
    grouped_linear_backward_input_f32(dx.data(), dy.data(), W.data(), off, G, K, N);
    EXPECT_CLOSE(dDX.download(), dx, gputest::kFp32GemmBound, "grouped backward_input " << what);

    // backward_weight: dW += dy^T x per group; empty groups keep their dW exactly.
    cuda::grouped_linear_backward_weight_f32(dDW.data(), dDY.data(), dX.data(), off, G, K, N);
    std::vector<float> dW = dW0;
    grouped_linear_backward_weight_f32(dW.data(), dy.data(), x.data(), off, G, K, N);
    const std::vector<float> got = dDW.download();
    EXPECT_CLOSE(got, dW, gputest::kFp32GemmBound, "grouped backward_weight " << what);
    for (int64_t g = 0; g < G; ++g) {
      if (off[g + 1] != off[g]) continue;
      const std::vector<float> got_g(got.begin() + g * N * K, got.begin() + (g + 1) * N * K);
      const std::vector<float> want_g(dW0.begin() + g * N * K, dW0.begin() + (g + 1) * N * K);
      EXPECT_CLOSE(got_g, want_g, gputest::kExactBound,
                   "grouped backward_weight, empty group " << g << " " << what);
    }
  }
}

}  // namespace
}  // namespace strata
