// LinearGemm on the GPU against LinearGemm on the CPU under every precision the GPU runs: fp32,
// bf16, and fp8 blockwise with fp32 and power-of-two scales, at shapes whose dimensions are all
// multiples of 128 (Hopper fp8 GEMMs with block scales, transposed backward operands) and shapes
// that are not (the CPU's emulation on the GPU). Forward, backward_input and the accumulated
// backward_weight, the weight cache across a weights epoch, and non-finite inputs reported
// through events() as on the CPU.
#include <tuple>
#include <vector>

#include "kernels/precision/linear.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

using gputest::DeviceArray;

PrecisionConfig precision(PrecisionMode mode, bool pow2) {
  PrecisionConfig p;
  p.mode = mode;
  p.fp8.recipe = Fp8Recipe::kBlockwise;
  p.fp8.scale_format = pow2 ? Fp8ScaleFormat::kPow2 : Fp8ScaleFormat::kFp32;
  return p;
}

void check_linear(PrecisionMode mode, bool pow2, int64_t T, int64_t K, int64_t N, double bound) {
  const uint32_t seed = gputest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " mode " << static_cast<int>(mode) << " pow2 " << pow2
                                  << " T " << T << " K " << K << " N " << N);
  std::mt19937 rng(seed);
  const std::vector<float> x = gputest::randn(T * K, rng), W = gputest::randn(N * K, rng, 0.05f);
  const std::vector<float> dy = gputest::randn(T * N, rng, 0.01f), dW0 = gputest::randn(N * K, rng, 0.001f);
  int64_t epoch = 1;
  const PrecisionConfig cfg = precision(mode, pow2);
  LinearGemm cpu(cfg, "mlp", "cpu.w", &epoch);
  LinearGemm gpu(cfg, "mlp", "gpu.w", &epoch, Device::cuda());

  std::vector<float> y(T * N), dx(T * K), dW = dW0;
  SavedInput saved_cpu, saved_gpu;
  cpu.forward(y.data(), x.data(), W.data(), T, K, N, &saved_cpu);
  cpu.backward_input(dx.data(), dy.data(), W.data(), T, K, N);
  cpu.backward_weight(dW.data(), dy.data(), saved_cpu, T, K, N);

  DeviceArray<float> d_x(x), d_W(W), d_dy(dy), d_dW(dW0), d_y(T * N), d_dx(T * K);
  for (int pass = 0; pass < 2; ++pass) {  // the second forward reuses the cached weight
    d_y.poison();
    gpu.forward(d_y.data(), d_x.data(), d_W.data(), T, K, N, &saved_gpu);
    EXPECT_CLOSE(d_y.download(), y, bound, "forward, pass " << pass);
  }
  d_dx.poison();
  gpu.backward_input(d_dx.data(), d_dy.data(), d_W.data(), T, K, N);
  gpu.backward_weight(d_dW.data(), d_dy.data(), saved_gpu, T, K, N);
  EXPECT_CLOSE(d_dx.download(), dx, bound, "backward_input");
  EXPECT_CLOSE(d_dW.download(), dW, bound, "backward_weight (accumulated)");

  // A new epoch with new weights: the cache must not serve the old ones.
  const std::vector<float> W2 = gputest::randn(N * K, rng, 0.05f);
  ++epoch;
  cpu.forward(y.data(), x.data(), W2.data(), T, K, N);
  d_W.upload(W2);
  gpu.forward(d_y.data(), d_x.data(), d_W.data(), T, K, N);
  EXPECT_CLOSE(d_y.download(), y, bound, "forward after a weight update");
}

GPU_TEST(CudaLinearTest, Fp32Bf16AndFp8BlockwiseMatchTheCpu) {
  for (auto [T, K, N] : {std::tuple<int64_t, int64_t, int64_t>{256, 384, 512}, {100, 72, 200}, {1, 128, 128}}) {
    check_linear(PrecisionMode::kFp32, false, T, K, N, gputest::kFp32GemmBound);
    check_linear(PrecisionMode::kBf16, false, T, K, N, gputest::kBf16GemmBound);
    const bool aligned = T % 128 == 0 && K % 128 == 0 && N % 128 == 0;
    for (bool pow2 : {false, true})
      check_linear(PrecisionMode::kFp8, pow2, T, K, N, aligned ? gputest::kFp8GemmBound : gputest::kFp32GemmBound);
  }
}

GPU_TEST(CudaLinearTest, NonFiniteInputIsReportedAsOnTheCpu) {
  const int64_t T = 128, K = 256, N = 128;
  std::mt19937 rng(gputest::fresh_seed());
  std::vector<float> x = gputest::randn(T * K, rng);
  const std::vector<float> W = gputest::randn(N * K, rng, 0.05f);
  x[777] = NAN;
  LinearGemm cpu(precision(PrecisionMode::kFp8, false), "mlp", "layers.0.mlp.w_up");
  LinearGemm gpu(precision(PrecisionMode::kFp8, false), "mlp", "layers.0.mlp.w_up", nullptr, Device::cuda());
  std::vector<float> y(T * N);
  cpu.forward(y.data(), x.data(), W.data(), T, K, N);
  DeviceArray<float> d_x(x), d_W(W), d_y(T * N);
  gpu.forward(d_y.data(), d_x.data(), d_W.data(), T, K, N);
  EXPECT_EQ(gpu.events().nonfinite, cpu.events().nonfinite);
  EXPECT_EQ(gpu.events().first, cpu.events().first);
}

// Refusals need no GPU: they happen when the layer is built.
TEST(CudaLinearDeathTest, RefusesWhatOnlyTheCpuRunsNamingTheSetting) {
  PrecisionConfig delayed = precision(PrecisionMode::kFp8, false);
  delayed.fp8.recipe = Fp8Recipe::kTensorwiseDelayed;
  EXPECT_DEATH(LinearGemm(delayed, "mlp", "layers.0.mlp.w_up", nullptr, Device::cuda()),
               "layers.0.mlp.w_up: fp8 recipe tensorwise_delayed runs on the CPU only");
  PrecisionConfig cached = precision(PrecisionMode::kFp8, false);
  cached.fp8.cache_activations = true;
  EXPECT_DEATH(LinearGemm(cached, "mlp", "w", nullptr, Device::cuda()), "cache_activations runs on the CPU only");
  // Kept out of fp8 (the head runs in bf16), the same settings are fine.
  LinearGemm head(delayed, "head", "head", nullptr, Device::cuda());
  EXPECT_EQ(head.mode(), PrecisionMode::kBf16);
}
}  // namespace
}  // namespace strata
