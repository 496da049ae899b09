// The CUDA casts (kernels/cuda/cast.h) against the CPU bulk codecs (core/dtype.h), bit for bit:
// random fp32 bit patterns (NaN payloads, Inf, denormals), log-uniform magnitudes, rounding ties
// and saturation edges, every fp8 and bf16 code, at lengths that end mid-warp and mid-block and
// one large enough to need the grid-stride loop. Skips, saying why, without CUDA or a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#ifdef STRATA_WITH_CUDA
#include "kernels/cuda/cast.h"
#endif

namespace strata {
namespace {

#ifdef STRATA_WITH_CUDA

// A device copy of a host vector, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n), ptr_(device_alloc(Device::cuda(), n * sizeof(T))) {}
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    device_copy(ptr_, Device::cuda(), host.data(), Device::cpu(), n_ * sizeof(T));
  }
  ~DeviceArray() { device_free(Device::cuda(), ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* data() { return static_cast<T*>(ptr_); }
  // Copies back on `stream` (ordered after the kernels queued there) and waits.
  std::vector<T> to_host(const Stream& stream) const {
    std::vector<T> host(n_);
    device_copy(host.data(), Device::cpu(), ptr_, Device::cuda(), n_ * sizeof(T), stream);
    return host;
  }

 private:
  size_t n_;
  void* ptr_;
};

std::vector<float> mixed_inputs(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> log_mag(-30.0f, 18.0f);
  const uint32_t edges[] = {
      0x00000000, 0x80000000, 0x43e00000 /*448*/, 0x43e80000 /*464*/, 0x47600000 /*57344*/,
      0x47700000 /*61440*/,   0x3a800000 /*2^-10*/, 0x37000000 /*2^-17*/, 0x3b400000 /*3*2^-10*/,
      0x3f808000 /*1+2^-8*/,  0x3f880000 /*1.0625*/, 0x3f980000 /*1.1875*/, 0x3ff80000 /*1.9375*/,
      0x3f900000 /*1.125*/,   0x7f800000,           0xff800000,           0x7fc00000,
      0xffa12345,             0x7f800001,           0x00000001,           0x7f7fffff};
  std::vector<float> xs(n);
  for (size_t i = 0; i < n; ++i) {
    switch (rng() % 3) {
      case 0: xs[i] = f32_from_bits(rng()); break;
      case 1: xs[i] = std::exp2(log_mag(rng)) * ((rng() & 1) ? -1.0f : 1.0f); break;
      default: xs[i] = f32_from_bits(edges[rng() % std::size(edges)] ^ (rng() & 0x80000000u));
    }
  }
  return xs;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

const size_t kLengths[] = {1, 31, 33, 257, 100003, (size_t{1} << 22) + 5};

#endif  // STRATA_WITH_CUDA

TEST(CudaCast, EncodesMatchCpu) {
#ifndef STRATA_WITH_CUDA
  GTEST_SKIP() << cuda_unavailable_reason();
#else
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  Stream stream = stream_create(Device::cuda());
  for (size_t n : kLengths) {
    const std::vector<float> x = mixed_inputs(n, static_cast<uint32_t>(n));
    std::vector<uint8_t> e4(n), e5(n);
    std::vector<uint16_t> bf(n);
    f32_to_e4m3_n(x.data(), e4.data(), n);
    f32_to_e5m2_n(x.data(), e5.data(), n);
    f32_to_bf16_n(x.data(), bf.data(), n);

    DeviceArray<float> d_x(x);
    DeviceArray<uint8_t> d_e4(n), d_e5(n);
    DeviceArray<uint16_t> d_bf(n);
    cuda_f32_to_e4m3(d_x.data(), d_e4.data(), static_cast<int64_t>(n), stream.handle);
    cuda_f32_to_e5m2(d_x.data(), d_e5.data(), static_cast<int64_t>(n), stream.handle);
    cuda_f32_to_bf16(d_x.data(), d_bf.data(), static_cast<int64_t>(n), stream.handle);
    EXPECT_TRUE(same_bits(d_e4.to_host(stream), e4)) << "f32 -> e4m3, n=" << n;
    EXPECT_TRUE(same_bits(d_e5.to_host(stream), e5)) << "f32 -> e5m2, n=" << n;
    EXPECT_TRUE(same_bits(d_bf.to_host(stream), bf)) << "f32 -> bf16, n=" << n;
  }
  stream_destroy(stream);
#endif
}

TEST(CudaCast, DecodesMatchCpu) {
#ifndef STRATA_WITH_CUDA
  GTEST_SKIP() << cuda_unavailable_reason();
#else
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  // Every code first, then random codes; the default stream this time.
  const Stream stream{Device::cuda(), nullptr};
  for (size_t n : {size_t{65536}, size_t{100003}}) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::vector<uint8_t> f8(n);
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) {
      f8[i] = static_cast<uint8_t>(i < 256 ? i : rng());
      h[i] = static_cast<uint16_t>(i < 65536 ? i : rng());
    }
    std::vector<float> e4(n), e5(n), bf(n);
    e4m3_to_f32_n(f8.data(), e4.data(), n);
    e5m2_to_f32_n(f8.data(), e5.data(), n);
    bf16_to_f32_n(h.data(), bf.data(), n);

    DeviceArray<uint8_t> d_f8(f8);
    DeviceArray<uint16_t> d_h(h);
    DeviceArray<float> d_e4(n), d_e5(n), d_bf(n);
    cuda_e4m3_to_f32(d_f8.data(), d_e4.data(), static_cast<int64_t>(n), stream.handle);
    cuda_e5m2_to_f32(d_f8.data(), d_e5.data(), static_cast<int64_t>(n), stream.handle);
    cuda_bf16_to_f32(d_h.data(), d_bf.data(), static_cast<int64_t>(n), stream.handle);
    EXPECT_TRUE(same_bits(d_e4.to_host(stream), e4)) << "e4m3 -> f32, n=" << n;
    EXPECT_TRUE(same_bits(d_e5.to_host(stream), e5)) << "e5m2 -> f32, n=" << n;
    EXPECT_TRUE(same_bits(d_bf.to_host(stream), bf)) << "bf16 -> f32, n=" << n;
  }
#endif
}

TEST(CudaCast, EmptyIsANoOp) {
#ifndef STRATA_WITH_CUDA
  GTEST_SKIP() << cuda_unavailable_reason();
#else
  if (cuda_device_count() == 0) GTEST_SKIP() << cuda_unavailable_reason();
  cuda_f32_to_e4m3(nullptr, nullptr, 0, nullptr);
  cuda_e5m2_to_f32(nullptr, nullptr, 0, nullptr);
  stream_synchronize(Stream{Device::cuda(), nullptr});
#endif
}

}  // namespace
}  // namespace strata
