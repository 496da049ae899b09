// The CUDA elementwise, reduction, softmax, RMSNorm, RoPE and cross-entropy ops of
// kernels/cuda/ops_cuda.h against their CPU references (kernels/ops.h), test-backend-ops style:
// fresh random inputs per run (the seed is printed with a failure), odd sizes that end mid-warp
// and mid-block, sizes 0 and 1, outputs poisoned before the GPU writes them. Fills and copies
// must match exactly, max-abs and row maxima too (they are order-free); everything else within
// kFp32Bound (relative L2). The special cases of ops.h are covered: NaN in max-abs and row
// maxima, empty and fully -inf softmax rows, +inf and NaN rows, masked cross-entropy rows and an
// out-of-range target, dw accumulated onto a non-zero dw, and in-place aliasing where allowed.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

using gputest::DeviceArray;
using gputest::kExactBound;
using gputest::kFp32Bound;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Flat sizes: empty, one, mid-warp, mid-block, and beyond the flat reductions' grid cap.
const int64_t kSizes[] = {0, 1, 7, 33, 257, 4097, (int64_t{1} << 20) + 3};

struct Shape {
  int64_t rows, cols;
};

std::vector<float> copy_of(const std::vector<float>& x) { return x; }

// ---- elementwise ----------------------------------------------------------------------------

GPU_TEST(CudaElementwiseTest, FillAndCopyAreExact) {
  for (int64_t n : kSizes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " n " << n);
    std::mt19937 rng(seed);
    const float value = gputest::randn(1, rng)[0];
    const std::vector<float> x = gputest::randn(n, rng);
    std::vector<float> filled(n);
    fill_f32(filled.data(), value, n);

    DeviceArray<float> d_x(x), d_out(n);
    d_out.poison();
    cuda::fill_f32(d_out.data(), value, n);
    EXPECT_CLOSE(d_out.download(), filled, kExactBound, "fill_f32");
    d_out.poison();
    cuda::copy_f32(d_out.data(), d_x.data(), n);
    EXPECT_CLOSE(d_out.download(), x, kExactBound, "copy_f32");
    cuda::copy_f32(d_x.data(), d_x.data(), n);  // in place: nothing to do
    EXPECT_CLOSE(d_x.download(), x, kExactBound, "copy_f32 in place");
  }
}

GPU_TEST(CudaElementwiseTest, ArithmeticMatchesCpu) {
  for (int64_t n : kSizes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " n " << n);
    std::mt19937 rng(seed);
    const std::vector<float> a = gputest::randn(n, rng, 2.0f), b = gputest::randn(n, rng, 2.0f);
    const float s = gputest::randn(1, rng)[0], alpha = gputest::randn(1, rng)[0];
    std::vector<float> sum(n), prod(n), acc = copy_of(a), scaled = copy_of(a), axpy = copy_of(a);
    add_f32(sum.data(), a.data(), b.data(), n);
    mul_f32(prod.data(), a.data(), b.data(), n);
    add_inplace_f32(acc.data(), b.data(), n);
    scale_f32(scaled.data(), s, n);
    axpy_f32(axpy.data(), alpha, b.data(), n);

    DeviceArray<float> d_a(a), d_b(b), d_out(n);
    d_out.poison();
    cuda::add_f32(d_out.data(), d_a.data(), d_b.data(), n);
    EXPECT_CLOSE(d_out.download(), sum, kFp32Bound, "add_f32");
    d_out.poison();
    cuda::mul_f32(d_out.data(), d_a.data(), d_b.data(), n);
    EXPECT_CLOSE(d_out.download(), prod, kFp32Bound, "mul_f32");
    {
      DeviceArray<float> d_y(a);
      cuda::add_inplace_f32(d_y.data(), d_b.data(), n);
      EXPECT_CLOSE(d_y.download(), acc, kFp32Bound, "add_inplace_f32");
    }
    {
      DeviceArray<float> d_y(a);  // out aliasing an input
      cuda::add_f32(d_y.data(), d_y.data(), d_b.data(), n);
      EXPECT_CLOSE(d_y.download(), sum, kFp32Bound, "add_f32 in place");
    }
    {
      DeviceArray<float> d_y(a);
      cuda::scale_f32(d_y.data(), s, n);
      EXPECT_CLOSE(d_y.download(), scaled, kFp32Bound, "scale_f32");
    }
    {
      DeviceArray<float> d_y(a);
      cuda::axpy_f32(d_y.data(), alpha, d_b.data(), n);
      EXPECT_CLOSE(d_y.download(), axpy, kFp32Bound, "axpy_f32");
    }
  }
}

// Pre-activations spread over sigmoid's whole range, with its saturated ends when there is room.
std::vector<float> activation_input(int64_t n, std::mt19937& rng) {
  std::vector<float> x = gputest::randn(n, rng, 4.0f);
  const float ends[] = {-100.0f, 100.0f, 0.0f, -87.0f, 30.0f};
  for (int64_t i = 0; i < n && i < 5; ++i) x[i * (n / 5)] = ends[i];
  return x;
}

GPU_TEST(CudaElementwiseTest, SiluForwardBackwardMatchCpu) {
  for (int64_t n : kSizes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " n " << n);
    std::mt19937 rng(seed);
    const std::vector<float> x = activation_input(n, rng), dout = gputest::randn(n, rng);
    std::vector<float> y(n), dx(n);
    silu_forward_f32(y.data(), x.data(), n);
    silu_backward_f32(dx.data(), dout.data(), x.data(), n);

    DeviceArray<float> d_x(x), d_dout(dout), d_out(n);
    d_out.poison();
    cuda::silu_forward_f32(d_out.data(), d_x.data(), n);
    EXPECT_CLOSE(d_out.download(), y, kFp32Bound, "silu_forward_f32");
    d_out.poison();
    cuda::silu_backward_f32(d_out.data(), d_dout.data(), d_x.data(), n);
    EXPECT_CLOSE(d_out.download(), dx, kFp32Bound, "silu_backward_f32");
    {
      DeviceArray<float> d_xy(x);
      cuda::silu_forward_f32(d_xy.data(), d_xy.data(), n);
      EXPECT_CLOSE(d_xy.download(), y, kFp32Bound, "silu_forward_f32 in place");
    }
    {
      DeviceArray<float> d_g(dout);  // dx aliasing dout
      cuda::silu_backward_f32(d_g.data(), d_g.data(), d_x.data(), n);
      EXPECT_CLOSE(d_g.download(), dx, kFp32Bound, "silu_backward_f32 in place");
    }
  }
}

GPU_TEST(CudaElementwiseTest, SwigluForwardBackwardMatchCpu) {
  for (int64_t n : kSizes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " n " << n);
    std::mt19937 rng(seed);
    const std::vector<float> gate = activation_input(n, rng), up = gputest::randn(n, rng, 2.0f);
    const std::vector<float> dout = gputest::randn(n, rng);
    std::vector<float> out(n), dgate(n), dup(n);
    swiglu_forward_f32(out.data(), gate.data(), up.data(), n);
    swiglu_backward_f32(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n);

    DeviceArray<float> d_gate(gate), d_up(up), d_dout(dout), d_a(n), d_b(n);
    d_a.poison();
    cuda::swiglu_forward_f32(d_a.data(), d_gate.data(), d_up.data(), n);
    EXPECT_CLOSE(d_a.download(), out, kFp32Bound, "swiglu_forward_f32");
    d_a.poison();
    d_b.poison();
    cuda::swiglu_backward_f32(d_a.data(), d_b.data(), d_dout.data(), d_gate.data(), d_up.data(),
                              n);
    EXPECT_CLOSE(d_a.download(), dgate, kFp32Bound, "swiglu_backward_f32 dgate");
    EXPECT_CLOSE(d_b.download(), dup, kFp32Bound, "swiglu_backward_f32 dup");
    // In place: dgate over gate, dup over up.
    DeviceArray<float> d_g2(gate), d_u2(up);
    cuda::swiglu_backward_f32(d_g2.data(), d_u2.data(), d_dout.data(), d_g2.data(), d_u2.data(),
                              n);
    EXPECT_CLOSE(d_g2.download(), dgate, kFp32Bound, "swiglu_backward_f32 dgate in place");
    EXPECT_CLOSE(d_u2.download(), dup, kFp32Bound, "swiglu_backward_f32 dup in place");
  }
}

GPU_TEST(CudaElementwiseTest, BiasRowsSigmoidBackwardAreBitwiseTheCpus) {
  const Shape shapes[] = {{0, 5}, {3, 0}, {1, 1}, {7, 33}, {1000, 130}, {4, 70001}};
  for (const Shape& s : shapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " cols " << s.cols);
    std::mt19937 rng(seed);
    const int64_t n = s.rows * s.cols;
    const std::vector<float> y0 = gputest::randn(n, rng), b = gputest::randn(s.cols, rng);
    const std::vector<float> db0 = gputest::randn(s.cols, rng);
    std::vector<float> y = y0, db = db0;
    bias_add_f32(y.data(), b.data(), s.rows, s.cols);
    bias_backward_f32(db.data(), y0.data(), s.rows, s.cols);
    DeviceArray<float> d_y(y0), d_b(b), d_db(db0), d_y0(y0);
    cuda::bias_add_f32(d_y.data(), d_b.data(), s.rows, s.cols);
    cuda::bias_backward_f32(d_db.data(), d_y0.data(), s.rows, s.cols);
    EXPECT_EQ(d_y.download(), y) << "bias_add_f32: one add per element";
    EXPECT_EQ(d_db.download(), db) << "bias_backward_f32: rows summed in order";

    const std::vector<float> p = gputest::uniform(n, rng, 0.0f, 1.0f), dy = gputest::randn(n, rng);
    std::vector<float> dx(n);
    sigmoid_backward_f32(dx.data(), dy.data(), p.data(), n);
    DeviceArray<float> d_p(p), d_dy(dy), d_dx(n);
    d_dx.poison();
    cuda::sigmoid_backward_f32(d_dx.data(), d_dy.data(), d_p.data(), n);
    EXPECT_EQ(d_dx.download(), dx) << "sigmoid_backward_f32: the same two products";
  }
}

// ---- reductions -----------------------------------------------------------------------------

GPU_TEST(CudaReduceTest, FlatSumsAndAmaxMatchCpu) {
  for (int64_t n : kSizes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " n " << n);
    std::mt19937 rng(seed);
    std::vector<float> x = gputest::randn(n, rng, 3.0f);
    double sum_abs = 0.0;
    for (float v : x) sum_abs += std::fabs(v);
    DeviceArray<float> d_x(x);
    // Both sides accumulate in double, in different orders: they agree to double rounding,
    // far inside the fp32 bound (scaled by sum |x|, since a signed sum may cancel).
    const double sum = reduce_sum_f32(x.data(), n), sumsq = reduce_sum_squares_f32(x.data(), n);
    EXPECT_NEAR(cuda::reduce_sum_f32(d_x.data(), n), sum, 1e-9 * sum_abs) << "reduce_sum_f32";
    EXPECT_NEAR(cuda::reduce_sum_squares_f32(d_x.data(), n), sumsq, 1e-9 * sumsq)
        << "reduce_sum_squares_f32";
    EXPECT_EQ(cuda::reduce_amax_f32(d_x.data(), n), reduce_amax_f32(x.data(), n))
        << "reduce_amax_f32";
    if (n == 0) {
      EXPECT_EQ(cuda::reduce_amax_f32(d_x.data(), n), 0.0f);
      continue;
    }
    // -inf somewhere: max-abs is +inf. Then a NaN elsewhere as well: NaN wins.
    x[rng() % n] = -kInf;
    d_x.upload(x);
    EXPECT_EQ(cuda::reduce_amax_f32(d_x.data(), n), kInf) << "reduce_amax_f32 with -inf";
    x[rng() % n] = kNaN;
    d_x.upload(x);
    EXPECT_TRUE(std::isnan(reduce_amax_f32(x.data(), n)));
    EXPECT_TRUE(std::isnan(cuda::reduce_amax_f32(d_x.data(), n))) << "reduce_amax_f32 with NaN";
  }
}

GPU_TEST(CudaReduceTest, RowSumAndRowMaxMatchCpu) {
  const Shape shapes[] = {{0, 5}, {3, 0}, {1, 1}, {7, 33}, {130, 1000}, {4, 70001}};
  for (const Shape& s : shapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " cols " << s.cols);
    std::mt19937 rng(seed);
    std::vector<float> x = gputest::randn(s.rows * s.cols, rng, 3.0f);
    if (s.rows >= 3 && s.cols >= 2) {
      x[1 * s.cols + rng() % s.cols] = kNaN;                         // row 1: NaN propagates
      for (int64_t i = 0; i < s.cols; ++i) x[2 * s.cols + i] = -kInf;  // row 2: all -inf
    }
    std::vector<float> sums(s.rows), maxes(s.rows);
    reduce_row_sum_f32(sums.data(), x.data(), s.rows, s.cols);
    reduce_row_max_f32(maxes.data(), x.data(), s.rows, s.cols);

    DeviceArray<float> d_x(x), d_out(s.rows);
    d_out.poison();
    cuda::reduce_row_sum_f32(d_out.data(), d_x.data(), s.rows, s.cols);
    EXPECT_CLOSE(d_out.download(), sums, kFp32Bound, "reduce_row_sum_f32");
    d_out.poison();
    cuda::reduce_row_max_f32(d_out.data(), d_x.data(), s.rows, s.cols);
    EXPECT_CLOSE(d_out.download(), maxes, kExactBound, "reduce_row_max_f32");
  }
}

// ---- softmax --------------------------------------------------------------------------------

// Random logits with ops.h's special rows where there is room: row 0 entirely -inf, row 1 partly
// -inf, row 2 holding +inf, row 3 holding NaN.
std::vector<float> softmax_input(const Shape& s, std::mt19937& rng, float scale) {
  std::vector<float> x = gputest::randn(s.rows * s.cols, rng, scale);
  if (s.cols == 0) return x;
  if (s.rows >= 2) {
    for (int64_t i = 0; i < s.cols; ++i) x[i] = -kInf;
    for (int64_t i = 0; i < s.cols; i += 3) x[s.cols + i] = -kInf;
  }
  if (s.rows >= 4) {
    x[2 * s.cols + rng() % s.cols] = kInf;
    x[3 * s.cols + rng() % s.cols] = kNaN;
  }
  return x;
}

const Shape kSoftmaxShapes[] = {{0, 10}, {4, 0},    {1, 1},    {3, 17},
                                {6, 65}, {7, 1000}, {5, 4099}, {5, 262147}};

GPU_TEST(CudaSoftmaxTest, ForwardMatchesCpu) {
  for (float scale : {2.0f, 100.0f}) {  // ordinary logits, and gaps far beyond exp's range
    for (const Shape& s : kSoftmaxShapes) {
      const uint32_t seed = gputest::fresh_seed();
      SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " cols "
                                      << s.cols << " scale " << scale);
      std::mt19937 rng(seed);
      const std::vector<float> x = softmax_input(s, rng, scale);
      const int64_t n = s.rows * s.cols;
      std::vector<float> y(n), logy(n);
      softmax_forward_f32(y.data(), x.data(), s.rows, s.cols);
      log_softmax_forward_f32(logy.data(), x.data(), s.rows, s.cols);

      DeviceArray<float> d_x(x), d_y(n);
      d_y.poison();
      cuda::softmax_forward_f32(d_y.data(), d_x.data(), s.rows, s.cols);
      EXPECT_CLOSE(d_y.download(), y, kFp32Bound, "softmax_forward_f32");
      d_y.poison();
      cuda::log_softmax_forward_f32(d_y.data(), d_x.data(), s.rows, s.cols);
      EXPECT_CLOSE(d_y.download(), logy, kFp32Bound, "log_softmax_forward_f32");
      {
        DeviceArray<float> d_xy(x);
        cuda::softmax_forward_f32(d_xy.data(), d_xy.data(), s.rows, s.cols);
        EXPECT_CLOSE(d_xy.download(), y, kFp32Bound, "softmax_forward_f32 in place");
      }
      {
        DeviceArray<float> d_xy(x);
        cuda::log_softmax_forward_f32(d_xy.data(), d_xy.data(), s.rows, s.cols);
        EXPECT_CLOSE(d_xy.download(), logy, kFp32Bound, "log_softmax_forward_f32 in place");
      }
    }
  }
}

GPU_TEST(CudaSoftmaxTest, BackwardMatchesCpu) {
  for (const Shape& s : kSoftmaxShapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " cols " << s.cols);
    std::mt19937 rng(seed);
    const std::vector<float> x = softmax_input(s, rng, 2.0f);
    const std::vector<float> dy = gputest::randn(s.rows * s.cols, rng);
    const int64_t n = s.rows * s.cols;
    // Both sides start from the CPU forward's outputs: fully -inf rows give y = 0 (softmax) and
    // y = -inf (log-softmax), whose backward passes nothing and dy unchanged.
    std::vector<float> y(n), logy(n), dx(n), dlogx(n);
    softmax_forward_f32(y.data(), x.data(), s.rows, s.cols);
    log_softmax_forward_f32(logy.data(), x.data(), s.rows, s.cols);
    softmax_backward_f32(dx.data(), dy.data(), y.data(), s.rows, s.cols);
    log_softmax_backward_f32(dlogx.data(), dy.data(), logy.data(), s.rows, s.cols);

    DeviceArray<float> d_y(y), d_logy(logy), d_dy(dy), d_dx(n);
    d_dx.poison();
    cuda::softmax_backward_f32(d_dx.data(), d_dy.data(), d_y.data(), s.rows, s.cols);
    EXPECT_CLOSE(d_dx.download(), dx, kFp32Bound, "softmax_backward_f32");
    d_dx.poison();
    cuda::log_softmax_backward_f32(d_dx.data(), d_dy.data(), d_logy.data(), s.rows, s.cols);
    EXPECT_CLOSE(d_dx.download(), dlogx, kFp32Bound, "log_softmax_backward_f32");
    {
      DeviceArray<float> d_g(dy);  // dx aliasing dy
      cuda::softmax_backward_f32(d_g.data(), d_g.data(), d_y.data(), s.rows, s.cols);
      EXPECT_CLOSE(d_g.download(), dx, kFp32Bound, "softmax_backward_f32 in place");
    }
    {
      DeviceArray<float> d_g(dy);
      cuda::log_softmax_backward_f32(d_g.data(), d_g.data(), d_logy.data(), s.rows, s.cols);
      EXPECT_CLOSE(d_g.download(), dlogx, kFp32Bound, "log_softmax_backward_f32 in place");
    }
  }
}

// ---- RMSNorm --------------------------------------------------------------------------------

const Shape kNormShapes[] = {{0, 8}, {1, 1}, {3, 7}, {17, 64}, {33, 1000}, {5, 4099}, {1000, 33}};

GPU_TEST(CudaRmsnormTest, ForwardMatchesCpu) {
  for (const Shape& s : kNormShapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " C " << s.cols);
    std::mt19937 rng(seed);
    const int64_t rows = s.rows, C = s.cols;
    const std::vector<float> x = gputest::randn(rows * C, rng, 2.0f);
    const std::vector<float> w = gputest::uniform(C, rng, 0.5f, 1.5f);
    const float eps = 1e-6f;
    std::vector<float> y(rows * C), rstd(rows);
    rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, eps);

    DeviceArray<float> d_x(x), d_w(w), d_y(rows * C), d_rstd(rows);
    d_y.poison();
    d_rstd.poison();
    cuda::rmsnorm_forward_f32(d_y.data(), d_rstd.data(), d_x.data(), d_w.data(), rows, C, eps);
    EXPECT_CLOSE(d_y.download(), y, kFp32Bound, "rmsnorm_forward_f32 y");
    EXPECT_CLOSE(d_rstd.download(), rstd, kFp32Bound, "rmsnorm_forward_f32 rstd");
    DeviceArray<float> d_xy(x);  // y aliasing x
    d_rstd.poison();
    cuda::rmsnorm_forward_f32(d_xy.data(), d_rstd.data(), d_xy.data(), d_w.data(), rows, C, eps);
    EXPECT_CLOSE(d_xy.download(), y, kFp32Bound, "rmsnorm_forward_f32 in place");
    EXPECT_CLOSE(d_rstd.download(), rstd, kFp32Bound, "rmsnorm_forward_f32 rstd (in place)");
  }
}

GPU_TEST(CudaRmsnormTest, BackwardMatchesCpuAndAccumulatesDw) {
  for (const Shape& s : kNormShapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " C " << s.cols);
    std::mt19937 rng(seed);
    const int64_t rows = s.rows, C = s.cols;
    const std::vector<float> x = gputest::randn(rows * C, rng, 2.0f);
    const std::vector<float> w = gputest::uniform(C, rng, 0.5f, 1.5f);
    const std::vector<float> dy = gputest::randn(rows * C, rng);
    const std::vector<float> dw0 = gputest::randn(C, rng);  // dw accumulates onto this
    std::vector<float> y(rows * C), rstd(rows);
    rmsnorm_forward_f32(y.data(), rstd.data(), x.data(), w.data(), rows, C, 1e-5f);
    std::vector<float> dx(rows * C), dw = copy_of(dw0);
    rmsnorm_backward_f32(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), rows,
                         C);

    DeviceArray<float> d_x(x), d_w(w), d_dy(dy), d_rstd(rstd), d_dx(rows * C), d_dw(dw0);
    d_dx.poison();
    cuda::rmsnorm_backward_f32(d_dx.data(), d_dw.data(), d_dy.data(), d_x.data(), d_w.data(),
                               d_rstd.data(), rows, C);
    EXPECT_CLOSE(d_dx.download(), dx, kFp32Bound, "rmsnorm_backward_f32 dx");
    EXPECT_CLOSE(d_dw.download(), dw, kFp32Bound, "rmsnorm_backward_f32 dw (accumulated)");
    DeviceArray<float> d_g(dy), d_dw2(dw0);  // dx aliasing dy
    cuda::rmsnorm_backward_f32(d_g.data(), d_dw2.data(), d_g.data(), d_x.data(), d_w.data(),
                               d_rstd.data(), rows, C);
    EXPECT_CLOSE(d_g.download(), dx, kFp32Bound, "rmsnorm_backward_f32 dx in place");
    EXPECT_CLOSE(d_dw2.download(), dw, kFp32Bound, "rmsnorm_backward_f32 dw (dx in place)");
  }
}

// ---- RoPE -----------------------------------------------------------------------------------

// Hugging Face's default inverse frequencies, theta = 10000.
std::vector<float> inv_freq_for(int64_t D) {
  std::vector<float> f(D / 2);
  for (int64_t i = 0; i < D / 2; ++i) {
    f[i] = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(D));
  }
  return f;
}

GPU_TEST(CudaRopeTest, TablesMatchCpu) {
  const Shape shapes[] = {{0, 4}, {1, 2}, {7, 6}, {33, 130}, {4096, 64}};  // (max_pos, D)
  for (const Shape& s : shapes) {
    const int64_t max_pos = s.rows, D = s.cols, n = max_pos * (D / 2);
    SCOPED_TRACE(testing::Message() << "max_pos " << max_pos << " D " << D);
    const std::vector<float> inv_freq = inv_freq_for(D);
    std::vector<float> cos(n), sin(n);
    rope_tables_f32(cos.data(), sin.data(), inv_freq.data(), max_pos, D);

    DeviceArray<float> d_inv(inv_freq), d_cos(n), d_sin(n);
    d_cos.poison();
    d_sin.poison();
    cuda::rope_tables_f32(d_cos.data(), d_sin.data(), d_inv.data(), max_pos, D);
    EXPECT_CLOSE(d_cos.download(), cos, kFp32Bound, "rope_tables_f32 cos");
    EXPECT_CLOSE(d_sin.download(), sin, kFp32Bound, "rope_tables_f32 sin");
  }
}

GPU_TEST(CudaRopeTest, ApplyForwardAndInverseMatchCpu) {
  struct RopeShape {
    int64_t rows, H, D;
  };
  const RopeShape shapes[] = {{0, 4, 8}, {5, 0, 8}, {1, 1, 2}, {9, 3, 64}, {257, 8, 128},
                              {31, 5, 6}};
  constexpr int64_t kMaxPos = 512;
  for (const RopeShape& s : shapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " rows " << s.rows << " H " << s.H
                                    << " D " << s.D);
    std::mt19937 rng(seed);
    const int64_t half = s.D / 2, n = s.rows * s.H * s.D;
    const std::vector<float> inv_freq = inv_freq_for(s.D);
    std::vector<float> cos(kMaxPos * half), sin(kMaxPos * half);
    rope_tables_f32(cos.data(), sin.data(), inv_freq.data(), kMaxPos, s.D);
    std::vector<int32_t> pos(s.rows);
    for (int32_t& p : pos) p = static_cast<int32_t>(rng() % kMaxPos);
    const std::vector<float> x = gputest::randn(n, rng);
    DeviceArray<float> d_cos(cos), d_sin(sin);
    DeviceArray<int32_t> d_pos(pos);
    for (bool inverse : {false, true}) {
      std::vector<float> ref = copy_of(x);
      rope_apply_f32(ref.data(), pos.data(), cos.data(), sin.data(), s.rows, s.H, s.D, inverse);
      DeviceArray<float> d_x(x);
      cuda::rope_apply_f32(d_x.data(), d_pos.data(), d_cos.data(), d_sin.data(), s.rows, s.H, s.D,
                           inverse);
      EXPECT_CLOSE(d_x.download(), ref, kFp32Bound,
                   (inverse ? "rope_apply_f32 inverse" : "rope_apply_f32 forward"));
    }
  }
}

// ---- cross-entropy --------------------------------------------------------------------------

// Targets in [0, V) with about a quarter masked (-1 or -100), row 1 always masked.
std::vector<int32_t> ce_targets(int64_t N, int64_t V, std::mt19937& rng) {
  std::vector<int32_t> t(N);
  for (int64_t r = 0; r < N; ++r) {
    const uint32_t u = rng();
    t[r] = u % 4 == 0 ? (u % 8 == 0 ? -100 : -1) : static_cast<int32_t>(rng() % V);
  }
  if (N >= 2) t[1] = -1;
  return t;
}

const Shape kCeShapes[] = {{0, 5}, {1, 1}, {7, 5}, {33, 1000}, {16, 50257}, {4, 131073}};

GPU_TEST(CudaCrossEntropyTest, ForwardMatchesCpu) {
  for (const Shape& s : kCeShapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " N " << s.rows << " V " << s.cols);
    std::mt19937 rng(seed);
    const int64_t N = s.rows, V = s.cols;
    const std::vector<float> logits = gputest::randn(N * V, rng, 3.0f);
    const std::vector<int32_t> targets = ce_targets(N, V, rng);
    std::vector<float> losses(N), lse(N);
    const double total =
        cross_entropy_forward_f32(losses.data(), lse.data(), logits.data(), targets.data(), N, V);

    DeviceArray<float> d_logits(logits), d_losses(N), d_lse(N);
    DeviceArray<int32_t> d_targets(targets);
    d_losses.poison();
    d_lse.poison();
    const double gpu_total = cuda::cross_entropy_forward_f32(
        d_losses.data(), d_lse.data(), d_logits.data(), d_targets.data(), N, V);
    EXPECT_CLOSE(d_losses.download(), losses, kFp32Bound, "cross_entropy_forward_f32 losses");
    EXPECT_CLOSE(d_lse.download(), lse, kFp32Bound, "cross_entropy_forward_f32 lse");
    EXPECT_LE(std::fabs(gpu_total - total), kFp32Bound * std::fabs(total))
        << "cross_entropy_forward_f32 loss sum: gpu " << gpu_total << " cpu " << total;
    const std::vector<float> got_losses = d_losses.download(), got_lse = d_lse.download();
    for (int64_t r = 0; r < N; ++r) {
      if (targets[r] >= 0) continue;
      EXPECT_EQ(got_losses[r], 0.0f) << "masked row " << r;
      EXPECT_EQ(got_lse[r], 0.0f) << "masked row " << r;
    }
  }
}

GPU_TEST(CudaCrossEntropyTest, BackwardMatchesCpu) {
  for (const Shape& s : kCeShapes) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " N " << s.rows << " V " << s.cols);
    std::mt19937 rng(seed);
    const int64_t N = s.rows, V = s.cols;
    const std::vector<float> logits = gputest::randn(N * V, rng, 3.0f);
    const std::vector<int32_t> targets = ce_targets(N, V, rng);
    const std::vector<float> row_scale = gputest::randn(N, rng);  // signed, as policy gradients
    std::vector<float> losses(N), lse(N);
    cross_entropy_forward_f32(losses.data(), lse.data(), logits.data(), targets.data(), N, V);
    int64_t count = 0;
    for (int32_t t : targets) count += t >= 0;
    const float scale = 1.0f / static_cast<float>(count > 0 ? count : 1);

    DeviceArray<float> d_logits(logits), d_lse(lse), d_row_scale(row_scale), d_d(N * V);
    DeviceArray<int32_t> d_targets(targets);
    for (bool scaled_rows : {false, true}) {
      const float* rs = scaled_rows ? row_scale.data() : nullptr;
      const float* d_rs = scaled_rows ? d_row_scale.data() : nullptr;
      std::vector<float> dlogits(N * V);
      cross_entropy_backward_f32(dlogits.data(), logits.data(), targets.data(), lse.data(), scale,
                                 N, V, rs);
      d_d.poison();
      cuda::cross_entropy_backward_f32(d_d.data(), d_logits.data(), d_targets.data(), d_lse.data(),
                                       scale, N, V, d_rs);
      EXPECT_CLOSE(d_d.download(), dlogits, kFp32Bound,
                   (scaled_rows ? "cross_entropy_backward_f32 row_scale"
                                : "cross_entropy_backward_f32"));
      DeviceArray<float> d_inplace(logits);  // dlogits aliasing logits
      cuda::cross_entropy_backward_f32(d_inplace.data(), d_inplace.data(), d_targets.data(),
                                       d_lse.data(), scale, N, V, d_rs);
      EXPECT_CLOSE(d_inplace.download(), dlogits, kFp32Bound,
                   "cross_entropy_backward_f32 in place");
    }
  }
}

GPU_TEST(CudaCrossEntropyTest, TokenLogprobsMatchCpu) {
  for (float temperature : {1.0f, 0.7f}) {
    for (const Shape& s : kCeShapes) {
      const uint32_t seed = gputest::fresh_seed();
      SCOPED_TRACE(testing::Message() << "seed " << seed << " N " << s.rows << " V " << s.cols
                                      << " temperature " << temperature);
      std::mt19937 rng(seed);
      const int64_t N = s.rows, V = s.cols;
      const std::vector<float> logits = gputest::randn(N * V, rng, 3.0f);
      const std::vector<int32_t> targets = ce_targets(N, V, rng);
      std::vector<float> out(N);
      token_logprobs_f32(out.data(), logits.data(), targets.data(), temperature, N, V);

      DeviceArray<float> d_logits(logits), d_out(N);
      DeviceArray<int32_t> d_targets(targets);
      d_out.poison();
      cuda::token_logprobs_f32(d_out.data(), d_logits.data(), d_targets.data(), temperature, N, V);
      EXPECT_CLOSE(d_out.download(), out, kFp32Bound, "token_logprobs_f32");
    }
  }
}

GPU_TEST(CudaCrossEntropyDeathTest, TargetOutOfRangeIsACheckFailure) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the child starts afresh: no inherited CUDA
  const int64_t N = 4, V = 5;
  const std::vector<float> logits(N * V, 0.5f);
  const std::vector<int32_t> targets = {0, -1, 7, 9};  // rows 2 and 3 out of range: row 2 named
  DeviceArray<float> d_logits(logits), d_losses(N), d_lse(N);
  DeviceArray<int32_t> d_targets(targets);
  EXPECT_DEATH(cuda::cross_entropy_forward_f32(d_losses.data(), d_lse.data(), d_logits.data(),
                                               d_targets.data(), N, V),
               "cross_entropy: target of row 2");
}

}  // namespace
}  // namespace strata
