// GPU GEMM throughput of the cuBLASLt ops in kernels/cuda/ops_cuda.h: fp32 (no TF32), bf16
// operands with fp32 output, and the fp8 linear GEMM with per-tensor and DeepSeek-V3 block
// scales, all in the linear layer's form y (M, N) = x (M, K) W^T. One row per (dtype, shape):
//
//   gemm  bf16        8192x8192x8192     712.3 TFLOP/s   (1.544 ms)
//
// Timing: cudaEvents around each call on the current stream, a few warm-up calls, then the
// median of the timed ones. Inputs are random (never zeros: zero operands run faster on some
// parts) and three input sets are rotated so that L2 (50 MiB on H100/H200) does not keep an
// operand resident between calls. FLOP = 2 M N K.
//
//   build/bench/gpu_bench            4096^3, 8192^3 and a skinny MoE-like 16384x4096x4096
//   build/bench/gpu_bench --quick    4096^3 only, fewer runs (CI-sized)
//
// Without CUDA in the build or without a GPU it says why and exits 0. A benchmark, not a test:
// it prints figures and never fails on them.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/gpu_common.h"
#include "core/device.h"
#include "core/dtype.h"
#include "kernels/cuda/ops_cuda.h"

#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace strata {
namespace {

#ifdef STRATA_WITH_CUDA

constexpr int kSets = 3;

struct Shape {
  int64_t M, N, K;
};

struct Options {
  int warmup = 3;
  int runs = 25;
  std::vector<Shape> shapes;
};

// Cheap deterministic noise (splitmix64), fast enough to fill a few GiB of operands.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1).
float noise(uint64_t seed, uint64_t i) {
  return static_cast<float>(mix(seed * 0x100000001b3ull + i) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

void check_cuda(cudaError_t e, const char* what) { gpubench::check_cuda(e, "gpu_bench", what); }

// A device copy of a host vector (device_copy waits for host transfers).
template <typename T>
void* upload(const std::vector<T>& host) {
  void* p = device_alloc(Device::cuda(), host.size() * sizeof(T));
  device_copy(p, Device::cuda(), host.data(), Device::cpu(), host.size() * sizeof(T),
              Stream{Device::cuda(), cuda::current_stream()});
  return p;
}

std::vector<float> random_f32(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = noise(seed, i);
  return v;
}

std::vector<uint16_t> random_bf16(size_t n, uint64_t seed) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = f32_to_bf16(noise(seed, i));
  return v;
}

// Random E4M3 codes, NaN (S.1111.111) avoided.
std::vector<uint8_t> random_e4m3(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    uint8_t c = static_cast<uint8_t>(mix(seed * 0x100000001b3ull + i) >> 56);
    if ((c & 0x7f) == 0x7f) c ^= 1;
    v[i] = c;
  }
  return v;
}

// Positive scales around 1/448 (what an fp8 quantiser of unit-sized data produces).
std::vector<float> random_scales(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (1.5f + noise(seed, i)) / 448.0f;
  return v;
}

enum class Kind { kF32, kBf16, kFp8Tensor, kFp8Block };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kF32: return "f32";
    case Kind::kBf16: return "bf16";
    case Kind::kFp8Tensor: return "fp8-tensor";
    case Kind::kFp8Block: return "fp8-block";
  }
  return "?";
}

// One input set: x (M, K), W (N, K) and, for fp8, their scales.
struct InputSet {
  void* x = nullptr;
  void* w = nullptr;
  void* x_scale = nullptr;
  void* w_scale = nullptr;
};

InputSet make_set(Kind kind, const Shape& s, int set) {
  const size_t nx = static_cast<size_t>(s.M * s.K), nw = static_cast<size_t>(s.N * s.K);
  const uint64_t seed = 1000 + 17 * static_cast<uint64_t>(set);
  InputSet in;
  switch (kind) {
    case Kind::kF32:
      in.x = upload(random_f32(nx, seed));
      in.w = upload(random_f32(nw, seed + 1));
      break;
    case Kind::kBf16:
      in.x = upload(random_bf16(nx, seed));
      in.w = upload(random_bf16(nw, seed + 1));
      break;
    case Kind::kFp8Tensor:
      in.x = upload(random_e4m3(nx, seed));
      in.w = upload(random_e4m3(nw, seed + 1));
      in.x_scale = upload(random_scales(1, seed + 2));
      in.w_scale = upload(random_scales(1, seed + 3));
      break;
    case Kind::kFp8Block: {
      const int64_t L = (s.K + 127) / 128;
      in.x = upload(random_e4m3(nx, seed));
      in.w = upload(random_e4m3(nw, seed + 1));
      in.x_scale = upload(random_scales(static_cast<size_t>(s.M * L), seed + 2));
      in.w_scale = upload(random_scales(static_cast<size_t>((s.N + 127) / 128 * L), seed + 3));
      break;
    }
  }
  return in;
}

void free_set(InputSet& in) {
  for (void* p : {in.x, in.w, in.x_scale, in.w_scale}) device_free(Device::cuda(), p);
  in = InputSet{};
}

void run_once(Kind kind, const Shape& s, const InputSet& in, float* y) {
  switch (kind) {
    case Kind::kF32:
      cuda::gemm_f32(false, true, s.M, s.N, s.K, 1.0f, static_cast<const float*>(in.x), s.K,
                     static_cast<const float*>(in.w), s.K, 0.0f, y, s.N);
      break;
    case Kind::kBf16:
      cuda::gemm_bf16(false, true, s.M, s.N, s.K, 1.0f, static_cast<const uint16_t*>(in.x), s.K,
                      static_cast<const uint16_t*>(in.w), s.K, 0.0f, y, s.N);
      break;
    case Kind::kFp8Tensor:
      cuda::gemm_fp8_tensor(y, static_cast<const uint8_t*>(in.x),
                            static_cast<const float*>(in.x_scale),
                            static_cast<const uint8_t*>(in.w),
                            static_cast<const float*>(in.w_scale), s.M, s.K, s.N);
      break;
    case Kind::kFp8Block:
      cuda::gemm_fp8_block(y, static_cast<const uint8_t*>(in.x),
                           static_cast<const float*>(in.x_scale),
                           static_cast<const uint8_t*>(in.w),
                           static_cast<const float*>(in.w_scale), s.M, s.K, s.N);
      break;
  }
}

// Median milliseconds per call of one (dtype, shape).
double time_gemm(Kind kind, const Shape& s, const Options& opt) {
  std::vector<InputSet> sets;
  for (int i = 0; i < kSets; ++i) sets.push_back(make_set(kind, s, i));
  float* y = static_cast<float*>(
      device_alloc(Device::cuda(), static_cast<size_t>(s.M * s.N) * sizeof(float)));
  const cudaStream_t st = static_cast<cudaStream_t>(cuda::current_stream());

  for (int i = 0; i < opt.warmup; ++i) run_once(kind, s, sets[i % kSets], y);
  std::vector<cudaEvent_t> start(opt.runs), stop(opt.runs);
  for (int i = 0; i < opt.runs; ++i) {
    check_cuda(cudaEventCreate(&start[i]), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop[i]), "cudaEventCreate");
  }
  for (int i = 0; i < opt.runs; ++i) {
    check_cuda(cudaEventRecord(start[i], st), "cudaEventRecord");
    run_once(kind, s, sets[i % kSets], y);
    check_cuda(cudaEventRecord(stop[i], st), "cudaEventRecord");
  }
  cuda::synchronize();
  std::vector<double> ms(opt.runs);
  for (int i = 0; i < opt.runs; ++i) {
    float t = 0.0f;
    check_cuda(cudaEventElapsedTime(&t, start[i], stop[i]), "cudaEventElapsedTime");
    ms[i] = t;
    cudaEventDestroy(start[i]);
    cudaEventDestroy(stop[i]);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms.size() % 2 == 1 ? ms[ms.size() / 2]
                                           : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  device_free(Device::cuda(), y);
  for (InputSet& in : sets) free_set(in);
  device_empty_cache(Device::cuda());  // the next shape's operands differ in size
  return median;
}

int run(const Options& opt) {
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("gpu_bench: %s (sm_%d%d, %d SMs), median of %d runs after %d warm-up, %d input "
              "sets rotated\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, opt.runs, opt.warmup,
              kSets);
  const Kind kinds[] = {Kind::kF32, Kind::kBf16, Kind::kFp8Tensor, Kind::kFp8Block};
  for (const Shape& s : opt.shapes) {
    for (Kind kind : kinds) {
      const double ms = time_gemm(kind, s, opt);
      const double tflops = 2.0 * static_cast<double>(s.M) * s.N * s.K / (ms * 1e-3) / 1e12;
      const std::string shape = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" +
                                std::to_string(s.K);
      std::printf("gemm  %-10s  %-16s  %8.1f TFLOP/s   (%.3f ms)\n", kind_name(kind),
                  shape.c_str(), tflops, ms);
      std::fflush(stdout);
    }
  }
  return 0;
}

#endif  // STRATA_WITH_CUDA

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  strata::gpubench::Args args;  // --peak-tflops is accepted and unused: the table is TFLOP/s
  if (!strata::gpubench::parse_args(argc, argv, args)) return 2;
  if (strata::gpubench::skip_without_gpu("gpu_bench")) return 0;
#ifdef STRATA_WITH_CUDA
  strata::Options opt;
  if (args.quick) {
    opt.warmup = 2;
    opt.runs = 7;
    opt.shapes = {{4096, 4096, 4096}};
  } else {
    opt.shapes = {{4096, 4096, 4096}, {8192, 8192, 8192}, {16384, 4096, 4096}};
  }
  return strata::run(opt);
#else
  (void)args;
  return 0;
#endif
}
