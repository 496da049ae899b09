// Bulk casts between fp32 and bf16 / fp8 (E4M3, E5M2) on device pointers: the same functions as
// the bulk codecs of core/dtype.h, bit for bit (RNE, satfinite fp8, NaN quieted; REFERENCE.md 3).
// Each takes n elements of device memory and queues one kernel on `stream` (a cudaStream_t; null
// is the default stream); nothing is synchronised. src and dst must not overlap.
#pragma once

#include <cstdint>

namespace strata {

void cuda_f32_to_bf16(const float* d_src, uint16_t* d_dst, int64_t n, void* stream);
void cuda_bf16_to_f32(const uint16_t* d_src, float* d_dst, int64_t n, void* stream);
void cuda_f32_to_e4m3(const float* d_src, uint8_t* d_dst, int64_t n, void* stream);
void cuda_e4m3_to_f32(const uint8_t* d_src, float* d_dst, int64_t n, void* stream);
void cuda_f32_to_e5m2(const float* d_src, uint8_t* d_dst, int64_t n, void* stream);
void cuda_e5m2_to_f32(const uint8_t* d_src, float* d_dst, int64_t n, void* stream);

}  // namespace strata
