// Training-step throughput of the linear layers on a GPU: every LinearGemm of one transformer
// block, forward + backward_input + backward_weight, under the precision policy (bf16, and fp8
// blockwise with its quantisation, transposes and block-scaled Hopper GEMMs), for a dense block
// and for a MoE block's routed experts. This is the part of a training step that fp8 changes;
// the attention core, norms and routing are not in it. One row per (config, precision):
//
//   linear  dense-8b  bf16  T=8192   612.0 TFLOP/s  MFU 61.9%   34.1k tok/s per block  (49.2 ms)
//
// FLOP = 6 T K N per linear (2 forward, 2 backward_input, 2 backward_weight); MFU is against
// the dense bf16 peak of the device (H100/H200 SXM: 989 TFLOP/s; --peak-tflops to change), the
// usual definition, so fp8 can exceed what bf16 reaches. Timing: cudaEvents around the whole
// block, 2 warm-ups, median of the timed runs; weights are new every step (a new weights epoch
// each time: the weight quantisation is counted, as in training).
//
// Without CUDA in the build or without a GPU it says why and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/gpu_common.h"
#include "core/device.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/precision/linear.h"

#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace strata {
namespace {

#ifdef STRATA_WITH_CUDA

struct LinearShape {
  const char* name;
  int64_t K, N;   // x (T, K) -> y (T, N)
  int64_t count;  // identical linears (experts of one layer)
};

struct BlockConfig {
  const char* name;
  int64_t T;  // tokens; a MoE block gives each expert T rows (every token in its 8 active experts)
  std::vector<LinearShape> linears;
};

void check(cudaError_t e, const char* what) { gpubench::check_cuda(e, "gpu_linear_bench", what); }

struct Linear {
  LinearGemm gemm;
  float *W, *dW, *x, *y, *dy, *dx;
  int64_t K, N;
};

// Median milliseconds of one block step, and its FLOP.
std::pair<double, double> time_block(const BlockConfig& b, PrecisionMode mode, int runs) {
  PrecisionConfig p;
  p.mode = mode;
  p.fp8.recipe = Fp8Recipe::kBlockwise;
  int64_t epoch = 0;
  std::vector<std::unique_ptr<Linear>> ls;
  double flop = 0;
  uint64_t seed = 1;
  for (const LinearShape& s : b.linears) {
    for (int64_t i = 0; i < s.count; ++i) {
      auto l = std::make_unique<Linear>();
      l->gemm = LinearGemm(p, "mlp", s.name, &epoch, Device::cuda());
      l->K = s.K;
      l->N = s.N;
      l->W = gpubench::random_device_f32(s.N * s.K, 0.02f, seed++);
      l->dW = gpubench::random_device_f32(s.N * s.K, 0.0f, seed++);
      l->x = gpubench::random_device_f32(b.T * s.K, 1.0f, seed++);
      l->dy = gpubench::random_device_f32(b.T * s.N, 0.01f, seed++);
      l->y = gpubench::random_device_f32(b.T * s.N, 0.0f, seed++);
      l->dx = gpubench::random_device_f32(b.T * s.K, 0.0f, seed++);
      flop += 6.0 * static_cast<double>(b.T) * s.K * s.N;
      ls.push_back(std::move(l));
    }
  }
  auto step = [&] {
    ++epoch;  // new weights every step, as after an optimizer update
    for (auto& l : ls) {
      SavedInput saved;
      l->gemm.forward(l->y, l->x, l->W, b.T, l->K, l->N, &saved);
      l->gemm.backward_input(l->dx, l->dy, l->W, b.T, l->K, l->N);
      l->gemm.backward_weight(l->dW, l->dy, saved, b.T, l->K, l->N);
    }
  };
  const double ms = gpubench::median_ms(step, 2, runs, "gpu_linear_bench");
  for (auto& l : ls)
    for (float* q : {l->W, l->dW, l->x, l->y, l->dy, l->dx}) device_free(Device::cuda(), q);
  ls.clear();
  device_empty_cache(Device::cuda());
  return {ms, flop};
}

int run(bool quick, double peak_tflops) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("gpu_linear_bench: %s, MFU against %.0f TFLOP/s dense bf16\n", prop.name, peak_tflops);
  // Llama-3-8B's block (d 4096, 8 kv heads of 128, MLP 14336) and DeepSeek-V3-like routed
  // experts (d 7168, expert width 2048, 8 of 256 experts active: 8 experts' GEMMs per token group).
  std::vector<BlockConfig> blocks = {
      {"dense-8b", quick ? 2048 : 8192,
       {{"q", 4096, 4096, 1}, {"k", 4096, 1024, 1}, {"v", 4096, 1024, 1}, {"o", 4096, 4096, 1},
        {"gate", 4096, 14336, 1}, {"up", 4096, 14336, 1}, {"down", 14336, 4096, 1}}},
      {"moe-v3", quick ? 1024 : 4096,
       {{"expert.gate", 7168, 2048, 8}, {"expert.up", 7168, 2048, 8}, {"expert.down", 2048, 7168, 8}}},
  };
  const int runs = quick ? 5 : 15;
  for (const BlockConfig& b : blocks) {
    for (PrecisionMode mode : {PrecisionMode::kBf16, PrecisionMode::kFp8}) {
      const auto [ms, flop] = time_block(b, mode, runs);
      const double tflops = flop / (ms * 1e-3) / 1e12;
      // T tokens: in the MoE block each of them goes through all 8 active experts' rows.
      const int64_t tokens = b.T;
      std::printf("linear  %-9s %-5s T=%-6lld %7.1f TFLOP/s  MFU %5.1f%%  %8.1fk tok/s per block  (%.2f ms)\n",
                  b.name, mode == PrecisionMode::kBf16 ? "bf16" : "fp8", static_cast<long long>(b.T), tflops,
                  100.0 * tflops / peak_tflops, tokens / (ms * 1e-3) / 1e3, ms);
      std::fflush(stdout);
    }
  }
  return 0;
}

#endif  // STRATA_WITH_CUDA

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
#ifdef STRATA_WITH_CUDA
  return strata::gpubench::bench_main(argc, argv, "gpu_linear_bench", strata::run);
#else
  return strata::gpubench::bench_main(argc, argv, "gpu_linear_bench", nullptr);
#endif
}
