// Throughput of the exact codecs of core/dtype.h: the scalar function in a loop against the bulk
// (AVX2) version, for the casts the bf16 and fp8 modes run on every GEMM operand. Reported as
// elements per second; compare the ratio, not the absolute figure (the machine is shared).
//
//   build/bench/dtype_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"

namespace strata {
namespace {

constexpr int64_t kN = 1 << 20;

std::vector<float> random_values() {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 30.0f);  // spans E4M3's subnormals to saturation
  std::vector<float> v(kN);
  for (float& x : v) x = d(rng);
  return v;
}

template <typename Out, Out (*Scalar)(float)>
void scalar_encode(benchmark::State& state) {
  auto x = random_values();
  std::vector<Out> out(kN);
  for (auto _ : state) {
    for (int64_t i = 0; i < kN; ++i) out[i] = Scalar(x[i]);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
}

template <typename Out, void (*Bulk)(const float*, Out*, size_t)>
void bulk_encode(benchmark::State& state) {
  auto x = random_values();
  std::vector<Out> out(kN);
  for (auto _ : state) {
    Bulk(x.data(), out.data(), kN);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
}

void bulk_decode_e4m3(benchmark::State& state) {
  auto x = random_values();
  std::vector<uint8_t> q(kN);
  f32_to_e4m3_n(x.data(), q.data(), kN);
  std::vector<float> out(kN);
  for (auto _ : state) {
    e4m3_to_f32_n(q.data(), out.data(), kN);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
}

void round_to(benchmark::State& state) {
  auto x = random_values();
  std::vector<float> y(kN);
  const DType to = static_cast<DType>(state.range(0));
  for (auto _ : state) {
    y = x;
    round_to_dtype_n(y.data(), kN, to);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
}

BENCHMARK(scalar_encode<uint16_t, f32_to_bf16>)->Name("f32_to_bf16/scalar")->UseRealTime();
BENCHMARK(bulk_encode<uint16_t, f32_to_bf16_n>)->Name("f32_to_bf16/bulk")->UseRealTime();
BENCHMARK(scalar_encode<uint8_t, f32_to_e4m3>)->Name("f32_to_e4m3/scalar")->UseRealTime();
BENCHMARK(bulk_encode<uint8_t, f32_to_e4m3_n>)->Name("f32_to_e4m3/bulk")->UseRealTime();
BENCHMARK(bulk_encode<uint8_t, f32_to_e5m2_n>)->Name("f32_to_e5m2/bulk")->UseRealTime();
BENCHMARK(bulk_decode_e4m3)->Name("e4m3_to_f32/bulk")->UseRealTime();
BENCHMARK(round_to)->Name("round_to_dtype/bf16")->Arg(static_cast<int>(DType::kBF16))->UseRealTime();
BENCHMARK(round_to)->Name("round_to_dtype/e4m3")->Arg(static_cast<int>(DType::kF8E4M3))->UseRealTime();

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
