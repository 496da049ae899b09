// The fp32 <-> fp8 (E4M3, E5M2) and fp32 <-> bf16 element codecs shared by the CUDA kernels that
// cast or quantise (kernels/cuda/cast_fp8.cu, kernels/cuda/quant.cu). Include from .cu files only.
//
// The functions repeat core/dtype.cc's formulas instead of calling cuda_fp8.h, so CPU and GPU
// share one definition of every bit: normals round to nearest even by integer arithmetic on the
// rebiased fp32 bits; subnormals are |x| + M rounded by the fp32 adder (__fadd_rn: never fused,
// and never subnormal, so -ftz cannot change it); values beyond max and +-Inf saturate; NaN gives
// the quiet NaN code with the input's sign. They are __host__ __device__ so a host-compiled build
// can compare them with the CPU codecs on all 2^32 fp32 inputs (done when they were written).
#pragma once

#include <cstdint>
#include <cstring>

namespace strata::cuda_codec {

__host__ __device__ inline uint32_t bits_of(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

__host__ __device__ inline float float_of(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

__host__ __device__ inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Format constants; the same values as kE4M3 / kE5M2 in core/dtype.cc.
struct E4M3 {
  static constexpr uint32_t kShift = 20;                // fp32 mantissa bits dropped
  static constexpr uint32_t kRebias = (127 - 7) << 23;  // fp32 -> fp8 exponent field
  static constexpr uint32_t kMinNormal = 0x3c800000u;   // 2^-6
  static constexpr uint32_t kMaxBits = 0x43e00000u;     // 448
  static constexpr uint32_t kMaxCode = 0x7e;
  static constexpr uint32_t kNanCode = 0x7f;
  static constexpr uint32_t kMagic = (127 + 14) << 23;  // ulp(2^14) = 2^-9, the min subnormal
  static constexpr uint32_t kMinNormalCode = 0x08;
  static constexpr uint32_t kSpecialCode = 0x7f;  // NaN (no Inf)
  static constexpr uint32_t kInfCode = 0x80;      // never a magnitude: no Inf
  static constexpr float kSubnormalUnit = 1.0f / 512;
};

struct E5M2 {
  static constexpr uint32_t kShift = 21;
  static constexpr uint32_t kRebias = (127 - 15) << 23;
  static constexpr uint32_t kMinNormal = 0x38800000u;  // 2^-14
  static constexpr uint32_t kMaxBits = 0x47600000u;    // 57344
  static constexpr uint32_t kMaxCode = 0x7b;
  static constexpr uint32_t kNanCode = 0x7e;
  static constexpr uint32_t kMagic = (127 + 7) << 23;  // ulp(2^7) = 2^-16, the min subnormal
  static constexpr uint32_t kMinNormalCode = 0x04;
  static constexpr uint32_t kSpecialCode = 0x7c;  // Inf 0x7c, NaN above
  static constexpr uint32_t kInfCode = 0x7c;
  static constexpr float kSubnormalUnit = 1.0f / 65536;
};

template <typename F>
__host__ __device__ inline uint8_t fp8_encode(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  uint32_t code;
  if (a > 0x7f800000u) {
    code = F::kNanCode;
  } else if (a > F::kMaxBits) {
    code = F::kMaxCode;
  } else if (a >= F::kMinNormal) {
    const uint32_t lsb = (a >> F::kShift) & 1u;
    code = (a - F::kRebias + ((1u << (F::kShift - 1)) - 1u) + lsb) >> F::kShift;
  } else {
    code = bits_of(add_rn(float_of(a), float_of(F::kMagic))) - F::kMagic;
  }
  return static_cast<uint8_t>(code | sign);
}

template <typename F>
__host__ __device__ inline float fp8_decode(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t mag = c & 0x7fu;
  uint32_t bits;
  if (mag >= F::kSpecialCode) {
    bits = mag == F::kInfCode ? 0x7f800000u : 0x7fc00000u;
  } else if (mag < F::kMinNormalCode) {
    bits = bits_of(static_cast<float>(mag) * F::kSubnormalUnit);  // exact: a small power of two
  } else {
    bits = (mag << F::kShift) + F::kRebias;
  }
  return float_of(bits | sign);
}

__host__ __device__ inline uint16_t bf16_encode(float f) {
  uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__host__ __device__ inline float bf16_decode(uint16_t h) {
  return float_of(static_cast<uint32_t>(h) << 16);
}

}  // namespace strata::cuda_codec
