// Micro-benchmarks of the CPU GEMM (gemm_f32 over OpenBLAS) and, for scale, the row softmax.
// GFLOP/s is reported as a rate counter (2 M N K flops per call); the last argument of every GEMM
// benchmark is the BLAS thread count (1 and 2), so the two columns compare directly. TOOLCHAIN.md
// quotes ~80 GFLOP/s on one thread and ~120-135 on two for n >= 512 on this machine.
//
//   build/bench/gemm_bench --benchmark_min_time=0.2
//   build/bench/gemm_bench --benchmark_filter=Transformer
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"

namespace strata {
namespace {

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// C (M, N) = op(A) op(B) with contiguous operands; args: M, N, K, transpose code, threads.
// Transpose code: 0 = NN (forward, x W with W stored (K, N)), 1 = NT (forward y = x W^T,
// and dx = dy W^T), 2 = TN (weight gradient dW = dy^T x).
void run_gemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const int code = static_cast<int>(state.range(3));
  const bool ta = code == 2, tb = code == 1;
  set_blas_threads(static_cast<int>(state.range(4)));
  const std::vector<float> A = random_vec(M * K, 1), B = random_vec(K * N, 2);
  std::vector<float> C(static_cast<size_t>(M * N));
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  for (auto _ : state) {
    gemm_f32(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * double(M) * N * K * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void square_args(benchmark::internal::Benchmark* b) {
  for (int64_t n : {128, 256, 512, 1024, 2048}) {
    for (int64_t threads : {1, 2}) b->Args({n, n, n, 0, threads});
  }
}

// A transformer's linear layers with 1024 tokens per micro-batch (d = 256, 512, 1024): forward
// y = x W^T (NT: x (T, d), W (d_out, d)), input gradient dx = dy W (NN), weight gradient
// dW = dy^T x (TN), and the MLP's 4x-wide up-projection.
void transformer_args(benchmark::internal::Benchmark* b) {
  constexpr int64_t T = 1024;
  for (int64_t threads : {1, 2}) {
    for (int64_t d : {256, 512, 1024}) {
      b->Args({T, d, d, 1, threads});  // forward
      b->Args({T, d, d, 0, threads});  // input gradient
      b->Args({d, d, T, 2, threads});  // weight gradient
    }
    b->Args({T, 2048, 512, 1, threads});  // MLP up, d 512 -> 4d
    b->Args({T, 512, 2048, 1, threads});  // MLP down
  }
}

void BM_GemmSquare(benchmark::State& state) { run_gemm(state); }
BENCHMARK(BM_GemmSquare)
    ->ArgNames({"M", "N", "K", "trans", "threads"})
    ->Apply(square_args)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_GemmTransformer(benchmark::State& state) { run_gemm(state); }
BENCHMARK(BM_GemmTransformer)
    ->ArgNames({"M", "N", "K", "trans", "threads"})
    ->Apply(transformer_args)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Rows x cols: attention scores (T x T) and the loss over a vocabulary; args: rows, cols, threads
// (the softmax splits rows over blas_threads() threads above 2^18 elements).
void BM_SoftmaxForward(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  set_blas_threads(static_cast<int>(state.range(2)));
  const std::vector<float> x = random_vec(rows * cols, 3);
  std::vector<float> y(static_cast<size_t>(rows * cols));
  for (auto _ : state) {
    softmax_forward_f32(y.data(), x.data(), rows, cols);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["Gelem/s"] = benchmark::Counter(
      double(rows) * cols * double(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SoftmaxForward)
    ->ArgNames({"rows", "cols", "threads"})
    ->ArgsProduct({{1024}, {128, 1024, 32000}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
