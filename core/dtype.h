// Element types and their exact codecs (REFERENCE.md section 3).
//
// bf16: fp32 rounded to nearest, ties to even; NaN stays NaN (quiet), Inf stays Inf.
// fp8 E4M3 (OCP, "fn"): bias 7, max 448, subnormals to 2^-9, no Inf, NaN = S.1111.111.
// fp8 E5M2 (OCP): bias 15, max 57344, Inf and NaN.
// fp32 -> fp8 casts are "satfinite" as PTX cvt: round to nearest even; finite values beyond max
// and +-Inf saturate to +-max; NaN stays NaN. Every non-NaN code decodes and re-encodes to itself.
//
// Scalar codecs are inline for kernels; bulk versions (AVX2, threaded over large arrays) live in
// dtype.cc and are what tensors and quantisers call. The CUDA kernels in kernels/cuda compute the
// same functions bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace strata {

enum class DType : uint8_t { kF32, kBF16, kF8E4M3, kF8E5M2, kI32, kI64, kU8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);            // "f32", "bf16", "f8e4m3", "f8e5m2", "i32", "i64", "u8"
bool parse_dtype(const std::string& name, DType* out);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- bf16 ----------------------------------------------------------------------------------

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }
// fp32 -> nearest bf16 value, returned as fp32 (the "round to bf16" used by bf16 mode).
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// ---- fp8 -----------------------------------------------------------------------------------

constexpr float kE4M3Max = 448.0f;
constexpr float kE5M2Max = 57344.0f;

uint8_t f32_to_e4m3(float f);
float e4m3_to_f32(uint8_t code);
uint8_t f32_to_e5m2(float f);
float e5m2_to_f32(uint8_t code);

// ---- bulk conversions (n elements; src and dst must not overlap) ---------------------------

void f32_to_bf16_n(const float* src, uint16_t* dst, size_t n);
void bf16_to_f32_n(const uint16_t* src, float* dst, size_t n);
void f32_to_e4m3_n(const float* src, uint8_t* dst, size_t n);
void e4m3_to_f32_n(const uint8_t* src, float* dst, size_t n);
void f32_to_e5m2_n(const float* src, uint8_t* dst, size_t n);
void e5m2_to_f32_n(const uint8_t* src, float* dst, size_t n);
// In-place rounding of fp32 values to the nearest representable value of `to` (bf16/fp8 formats,
// with fp8 satfinite): the CPU emulation of low-precision storage.
void round_to_dtype_n(float* x, size_t n, DType to);

}  // namespace strata
