// What the GPU benchmarks (gpu_bench, gpu_linear_bench, gpu_block_bench) share: the check that a
// GPU is there to measure, saying why not otherwise, the CUDA error check that ends a run naming
// the call, random device operands and the median of the timed runs.
// Benchmarks print figures; a missing GPU is not a failure (they exit 0 after saying so).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/device.h"
#include "kernels/cuda/ops_cuda.h"

#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace strata::gpubench {

// The benchmarks' command line: [--quick] [--peak-tflops X].
struct Args {
  bool quick = false;          // smaller shapes, fewer runs
  double peak_tflops = 989.0;  // MFU's denominator: dense bf16 of an H100/H200 SXM
};

// False, after printing the usage, when an argument is not one of Args'.
inline bool parse_args(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      args.quick = true;
    } else if (a == "--peak-tflops" && i + 1 < argc) {
      args.peak_tflops = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--peak-tflops X]\n", argv[0]);
      return false;
    }
  }
  return true;
}

// True, after printing "<prog>: skipped: <why>", when this build has no CUDA or sees no GPU.
inline bool skip_without_gpu(const char* prog) {
  if (!built_with_cuda()) {
    std::printf("%s: skipped: built without CUDA (configure with -DSTRATA_CUDA=ON)\n", prog);
    return true;
  }
  if (cuda_device_count() == 0) {
    std::printf("%s: skipped: %s\n", prog, cuda_unavailable_reason().c_str());
    return true;
  }
  return false;
}

// The whole main() of a benchmark: parses the command line, says why and exits 0 without a GPU,
// else returns run(quick, peak_tflops). run is null in a build without CUDA.
using RunFn = int (*)(bool quick, double peak_tflops);
inline int bench_main(int argc, char** argv, const char* prog, RunFn run) {
  Args args;
  if (!parse_args(argc, argv, args)) return 2;
  if (skip_without_gpu(prog) || run == nullptr) return 0;
  return run(args.quick, args.peak_tflops);
}

#ifdef STRATA_WITH_CUDA
// Ends the benchmark with "<prog>: <what>: <CUDA's message>" when e is an error.
inline void check_cuda(cudaError_t e, const char* prog, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s: %s\n", prog, what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// A device buffer of n floats, uniform in [-scale, scale) from a xorshift stream of `seed`
// (scale 0 gives zeros); free it with device_free(Device::cuda(), p).
inline float* random_device_f32(int64_t n, float scale, uint64_t seed) {
  std::vector<float> h(static_cast<size_t>(n));
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + 1;
  for (float& v : h) {
    z ^= z << 13;
    z ^= z >> 7;
    z ^= z << 17;
    v = (static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f) * scale;
  }
  void* p = device_alloc(Device::cuda(), h.size() * sizeof(float));
  device_copy(p, Device::cuda(), h.data(), Device::cpu(), h.size() * sizeof(float),
              Stream{Device::cuda(), cuda::current_stream()});
  return static_cast<float*>(p);
}

// Median of a list of timings (sorted in place).
inline double median(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median milliseconds of `runs` calls of step() after `warmup` untimed ones, each call timed by
// cudaEvents on the current stream (waiting for it before the next).
template <typename Step>
double median_ms(Step&& step, int warmup, int runs, const char* prog) {
  for (int i = 0; i < warmup; ++i) step();
  const cudaStream_t st = static_cast<cudaStream_t>(cuda::current_stream());
  cudaEvent_t start, stop;
  check_cuda(cudaEventCreate(&start), prog, "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), prog, "cudaEventCreate");
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    check_cuda(cudaEventRecord(start, st), prog, "cudaEventRecord");
    step();
    check_cuda(cudaEventRecord(stop, st), prog, "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), prog, "cudaEventSynchronize");
    float t = 0;
    check_cuda(cudaEventElapsedTime(&t, start, stop), prog, "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return median(ms);
}
#endif

}  // namespace strata::gpubench
