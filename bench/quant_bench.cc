// Throughput of the FP8 quantisation ops (kernels/quant.h) that the CPU emulation of the fp8
// recipes runs on every GEMM operand, against the fp32 GEMM they feed, at the tiny MoE's shapes
// (T = 1536 tokens of a micro-batch, K = N = 128) and a wider one. The ratio quantise / GEMM is
// the emulation's overhead per operand. One thread (as under mpirun with several ranks).
//
//   build/bench/quant_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/quant.h"

namespace strata {
namespace {

std::vector<float> random_values(int64_t n) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

void fake_quant(benchmark::State& state, QuantTile tile) {
  set_blas_threads(1);
  const int64_t R = state.range(0), C = state.range(1);
  auto x = random_values(R * C);
  std::vector<float> out(x.size());
  for (auto _ : state) {
    fake_quant_tiles(x.data(), out.data(), R, C, tile, DType::kF8E4M3, false);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * R * C);
}

void BM_FakeQuant1x128(benchmark::State& s) { fake_quant(s, kTile1x128); }
void BM_FakeQuant128x1(benchmark::State& s) { fake_quant(s, kTile128x1); }
void BM_FakeQuant128x128(benchmark::State& s) { fake_quant(s, kTile128x128); }

void BM_FakeQuantTensor(benchmark::State& state) {
  set_blas_threads(1);
  const int64_t n = state.range(0) * state.range(1);
  auto x = random_values(n);
  std::vector<float> out(x.size());
  for (auto _ : state) {
    fake_quant_tensor(x.data(), out.data(), n, [](float amax) { return amax / 448.0f; }, DType::kF8E4M3);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

// The GEMM an (R, C) operand feeds: y (R, N) = x (R, C) W^T with N = C.
void BM_Gemm(benchmark::State& state) {
  set_blas_threads(1);
  const int64_t R = state.range(0), C = state.range(1);
  auto x = random_values(R * C), w = random_values(C * C);
  std::vector<float> y(static_cast<size_t>(R * C));
  for (auto _ : state) {
    gemm_f32(false, true, R, C, C, 1.0f, x.data(), C, w.data(), C, 0.0f, y.data(), C);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * R * C);
}

#define SHAPES ->Args({1536, 128})->Args({1536, 512})
BENCHMARK(BM_FakeQuant1x128) SHAPES;
BENCHMARK(BM_FakeQuant128x1) SHAPES;
BENCHMARK(BM_FakeQuant128x128) SHAPES;
BENCHMARK(BM_FakeQuantTensor) SHAPES;
BENCHMARK(BM_Gemm) SHAPES;

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
