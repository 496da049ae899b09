// CUDA kernels of kernels/cuda/cast.h: fp32 <-> bf16 / fp8 casts on device memory.
//
// The element codecs live in kernels/cuda/fp8_codec.cuh (shared with kernels/cuda/quant.cu): the
// same bits as core/dtype.cc's codecs, checked against them on all 2^32 fp32 inputs.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda_check.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/fp8_codec.cuh"  // fp8_encode, fp8_decode, bf16_encode, bf16_decode

namespace strata {
namespace {

using cuda_codec::bf16_decode;
using cuda_codec::bf16_encode;
using cuda_codec::E4M3;
using cuda_codec::E5M2;
using cuda_codec::fp8_decode;
using cuda_codec::fp8_encode;

// One functor per conversion: the kernel template maps it over the array.
struct ToE4M3 {
  __device__ uint8_t operator()(float x) const { return fp8_encode<E4M3>(x); }
};
struct ToE5M2 {
  __device__ uint8_t operator()(float x) const { return fp8_encode<E5M2>(x); }
};
struct FromE4M3 {
  __device__ float operator()(uint8_t c) const { return fp8_decode<E4M3>(c); }
};
struct FromE5M2 {
  __device__ float operator()(uint8_t c) const { return fp8_decode<E5M2>(c); }
};
struct ToBf16 {
  __device__ uint16_t operator()(float x) const { return bf16_encode(x); }
};
struct FromBf16 {
  __device__ float operator()(uint16_t h) const { return bf16_decode(h); }
};

// Grid-stride elementwise map: the casts are bandwidth bound, so one element per thread and
// coalesced loads and stores are all that matters.
template <typename In, typename Out, typename Op>
__global__ void map_kernel(const In* __restrict__ src, Out* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = Op()(src[i]);
  }
}

template <typename In, typename Out, typename Op>
void launch_map(const In* src, Out* dst, int64_t n, void* stream) {
  CHECK(n >= 0) << "cast of " << n << " elements";
  if (n == 0) return;
  constexpr int kThreads = 256;
  constexpr int64_t kMaxBlocks = 132 * 32;  // a few waves on an H100/H200; the loop covers the rest
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  const auto cs = static_cast<cudaStream_t>(stream);
  map_kernel<In, Out, Op><<<static_cast<unsigned>(blocks), kThreads, 0, cs>>>(src, dst, n);
  CHECK_CUDA(cudaGetLastError());
}

}  // namespace

void cuda_f32_to_bf16(const float* d_src, uint16_t* d_dst, int64_t n, void* stream) {
  launch_map<float, uint16_t, ToBf16>(d_src, d_dst, n, stream);
}
void cuda_bf16_to_f32(const uint16_t* d_src, float* d_dst, int64_t n, void* stream) {
  launch_map<uint16_t, float, FromBf16>(d_src, d_dst, n, stream);
}
void cuda_f32_to_e4m3(const float* d_src, uint8_t* d_dst, int64_t n, void* stream) {
  launch_map<float, uint8_t, ToE4M3>(d_src, d_dst, n, stream);
}
void cuda_e4m3_to_f32(const uint8_t* d_src, float* d_dst, int64_t n, void* stream) {
  launch_map<uint8_t, float, FromE4M3>(d_src, d_dst, n, stream);
}
void cuda_f32_to_e5m2(const float* d_src, uint8_t* d_dst, int64_t n, void* stream) {
  launch_map<float, uint8_t, ToE5M2>(d_src, d_dst, n, stream);
}
void cuda_e5m2_to_f32(const uint8_t* d_src, float* d_dst, int64_t n, void* stream) {
  launch_map<uint8_t, float, FromE5M2>(d_src, d_dst, n, stream);
}

}  // namespace strata
