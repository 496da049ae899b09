// GPU-against-CPU op checks in the style of ggml's test-backend-ops: each test draws fresh random
// inputs, runs the op on the CPU (the reference of kernels/cpu, itself tested against plain loops)
// and through strata::cuda on the GPU, and holds the GPU's result to the CPU's by
//   rel_err = ||gpu - cpu|| / ||cpu||   (L2 over all elements, in double)
// under a per-op bound (METHOD.md of the device library: fp32 arithmetic far under 1e-3; bf16
// operands 1e-3..1e-2). NaN anywhere fails, and every output is poisoned (all-ones bytes, a NaN
// for floats) before the GPU run, so an element the kernel never wrote fails too.
//
// GPU_TEST(Suite, Name) { ... } declares a test that skips, saying why, when the machine has no
// GPU. Files named cuda_*_test.cc are built only with STRATA_CUDA (tests/CMakeLists.txt), since
// they call strata::cuda ops that a CPU-only build does not define.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/device.h"
#include "kernels/cuda/ops_cuda.h"

namespace strata::gputest {

// Why GPU tests cannot run here, or "" when they can.
inline std::string gpu_skip_reason() {
  if (!built_with_cuda()) return "built without CUDA (configure with -DSTRATA_CUDA=ON)";
  if (cuda_device_count() == 0) return cuda_unavailable_reason();
  return "";
}

#define GPU_TEST(suite, name)                                                        \
  static void suite##_##name##_body();                                               \
  TEST(suite, name) {                                                                \
    const std::string why = ::strata::gputest::gpu_skip_reason();                    \
    if (!why.empty()) GTEST_SKIP() << "GPU test skipped: " << why;                   \
    suite##_##name##_body();                                                         \
  }                                                                                  \
  static void suite##_##name##_body()

// A device array with host transfers. Allocated through device_alloc (the caching allocator).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n), ptr_(device_alloc(Device::cuda(), bytes())) {}
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { device_free(Device::cuda(), ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* data() const { return static_cast<T*>(ptr_); }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& host) {
    CHECK_EQ(host.size(), n_);
    device_copy(ptr_, Device::cuda(), host.data(), Device::cpu(), bytes(), current());
  }
  // All-ones bytes: NaN for fp32, -1 for int32, 0xff (NaN) for fp8.
  void poison() {
    std::vector<uint8_t> ones(bytes(), 0xff);
    device_copy(ptr_, Device::cuda(), ones.data(), Device::cpu(), bytes(), current());
  }
  // Waits for the work queued on the current stream, then copies back.
  std::vector<T> download() const {
    cuda::synchronize();
    std::vector<T> host(n_);
    device_copy(host.data(), Device::cpu(), ptr_, Device::cuda(), bytes(), current());
    return host;
  }

 private:
  static Stream current() { return Stream{Device::cuda(), cuda::current_stream()}; }
  size_t n_;
  void* ptr_;
};

// Fresh inputs every run; the seed is printed with a failure so it can be replayed.
inline uint32_t fresh_seed() {
  static std::random_device rd;
  return rd();
}

inline std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

inline std::vector<float> uniform(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

// ||got - ref|| / ||ref|| in double; +inf when any got is NaN or a size differs; when ||ref|| is
// 0 the absolute norm of the difference.
inline double rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(ref[i])) return INFINITY;
    if (std::isnan(got[i])) continue;
    if (std::isinf(got[i]) || std::isinf(ref[i])) {
      if (got[i] != ref[i]) return INFINITY;
      continue;
    }
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Passes when rel_err(got, ref) <= bound, printing the op, the shape and the seed otherwise.
#define EXPECT_CLOSE(got, ref, bound, what)                                                   \
  do {                                                                                        \
    const double _e = ::strata::gputest::rel_err(got, ref);                                   \
    EXPECT_LE(_e, bound) << what << ": rel_err " << _e << " over bound " << (bound);         \
  } while (0)

// Per-precision bounds (METHOD.md), relative L2.
inline constexpr double kExactBound = 0.0;      // integer outputs, copies, fills
inline constexpr double kFp32Bound = 1e-5;      // fp32 arithmetic, reordered sums
inline constexpr double kFp32GemmBound = 1e-5;  // fp32 GEMM (no TF32)
inline constexpr double kBf16GemmBound = 1e-5;  // same bf16 operands, fp32 accumulation both sides
inline constexpr double kFp8GemmBound = 2e-3;   // same fp8 operands; Hopper's fp8 accumulation

}  // namespace strata::gputest
