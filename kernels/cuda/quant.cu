// CUDA twins of the fp8 quantisation ops of kernels/quant.h (CPU reference: kernels/cpu/quant.cc):
// per-tile quantisation to codes + scales, dequantisation, fake quantisation (q * s back in fp32),
// per-tensor quantisation with a scale held on the device, and amax / non-finite statistics.
//
// Bit-exact with the CPU: the tile scale is computed with the same IEEE operations (amax / fp8_max
// by a correctly rounded division, the 2^-126 floor, the power-of-two bit trick), the reciprocal
// 1 / s and x * (1 / s) are correctly rounded (__fdiv_rn, __fmul_rn: no fast-math or fusion can
// change them), and codes come from the codecs of kernels/cuda/fp8_codec.cuh, which match
// core/dtype.cc's bit for bit. Fake quantisation decodes the code and multiplies by s, the value
// the CPU's register rounding computes.
//
// Tiles: one block per tile (grid-strided over tiles) finds the tile's finite amax and whether it
// holds NaN/Inf, writes its scale, then scales and casts the tile's elements. A 128x1 tile reads
// one element per row, uncoalesced; a kernel giving each block a band of adjacent 128x1 tiles is
// the later fast path for the weight-gradient operands.
//
// Statistics are counted on the device: the non-finite and saturated counts by integer atomics and
// the amax by atomicMax on the bit patterns of non-negative floats (which order as the floats do),
// so they do not depend on the order blocks run in. The ops returning QuantStats copy them back and
// wait on the current stream.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"                // device_alloc, device_free
#include "kernels/cuda/fp8_codec.cuh"   // fp8_encode, fp8_decode, E4M3, E5M2
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

using cuda_codec::bits_of;
using cuda_codec::E4M3;
using cuda_codec::E5M2;
using cuda_codec::float_of;
using cuda_codec::fp8_decode;
using cuda_codec::fp8_encode;

constexpr int kThreads = 128;  // a multiple of 32; one 1x128 tile is one element per thread
constexpr int64_t kMaxTileBlocks = int64_t{1} << 16;
constexpr int64_t kMaxFlatBlocks = 132 * 16;  // a few waves on an H100/H200
constexpr uint32_t kMaxFiniteBits = 0x7f7fffffu;  // FLT_MAX: |x| bits above it are Inf or NaN
constexpr uint32_t kNanBits = 0x7fc00000u;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

// What the kernels count; zeroed before the first kernel of an op.
struct DeviceStats {
  unsigned long long nonfinite;
  unsigned long long saturated;
  unsigned int amax_bits;  // bits of the largest finite |x| seen
};

// The largest finite value of format F, as a float.
template <typename F>
__device__ inline float fmax_of() {
  return float_of(F::kMaxBits);
}

// Whether the satfinite cast clips a scaled value of magnitude a, as the CPU's clipped_by_cast:
// past the midpoint between max and the next step up (E4M3 448 | 480: 464 ties to the even 448;
// E5M2 57344 | 65536: 61440 ties to the even 65536). False for NaN.
template <typename F>
__device__ inline bool clipped_by_cast(float a);
template <>
__device__ inline bool clipped_by_cast<E4M3>(float a) {
  return a > 464.0f;
}
template <>
__device__ inline bool clipped_by_cast<E5M2>(float a) {
  return a >= 61440.0f;
}

// quant.h's fp8_scale for a finite amax >= 0: amax / fp8_max, 1 when amax == 0, at least
// 2^-126, rounded up to a power of two with pow2.
__device__ inline float tile_scale(float amax, float fmax, bool pow2) {
  if (amax == 0.0f) return 1.0f;
  float s = __fdiv_rn(amax, fmax);
  if (s < 0x1p-126f) s = 0x1p-126f;  // std::max(s, 2^-126) with s finite
  if (pow2) {
    const uint32_t u = bits_of(s);
    if (u & 0x007fffffu) s = float_of((u & 0x7f800000u) + 0x00800000u);  // next power of two up
  }
  return s;
}

// Adds one block's counts to the op's totals (one atomic each, from one thread).
__device__ inline void publish(DeviceStats* st, unsigned long long nonfinite,
                               unsigned long long saturated, uint32_t amax_bits) {
  if (nonfinite) atomicAdd(&st->nonfinite, nonfinite);
  if (saturated) atomicAdd(&st->saturated, saturated);
  if (amax_bits) atomicMax(&st->amax_bits, amax_bits);
}

// A thread's running finite amax (as bits: |x| orders like its bits) and NaN/Inf count.
struct ThreadStats {
  uint32_t amax = 0;
  unsigned long long bad = 0;
  __device__ void add(float x) {
    const uint32_t a = bits_of(x) & 0x7fffffffu;
    if (a <= kMaxFiniteBits) {
      amax = a > amax ? a : amax;
    } else {
      ++bad;
    }
  }
  // Folds this thread's figures into the block's shared ones (the caller syncs after).
  __device__ void merge_into(unsigned int* s_amax, unsigned long long* s_bad) const {
    if (amax) atomicMax(s_amax, amax);
    if (bad) atomicAdd(s_bad, bad);
  }
};

// ---- tiles ----

// One block per tile of x (R, C), tiles tr x tc cut short at the edges. Pass 1: the tile's finite
// amax and its NaN/Inf count, giving its scale (NaN for a tile holding NaN/Inf), written to
// scales[tile] when scales is not null. Pass 2: codes[i] = cast(x[i] * (1/s)), or with kFake
// out[i] = decode(cast(x[i] * (1/s))) * s (out may alias x: each element is read, then written,
// by one thread, after the whole tile was read in pass 1).
template <typename F, bool kFake>
__global__ void quant_tiles_kernel(const float* x, uint8_t* codes, float* out, float* scales,
                                   int64_t R, int64_t C, int64_t tr, int64_t tc, bool pow2,
                                   DeviceStats* st) {
  __shared__ unsigned int s_amax;
  __shared__ unsigned long long s_bad;
  __shared__ float s_scale;
  const int64_t ncb = (C + tc - 1) / tc;
  const int64_t tiles = ((R + tr - 1) / tr) * ncb;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t r0 = (tile / ncb) * tr, c0 = (tile % ncb) * tc;
    const int64_t nc = min(tc, C - c0), n = min(tr, R - r0) * nc;
    const float* xt = x + r0 * C + c0;
    if (threadIdx.x == 0) {
      s_amax = 0;
      s_bad = 0;
    }
    __syncthreads();
    ThreadStats ts;
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) ts.add(xt[(e / nc) * C + e % nc]);
    ts.merge_into(&s_amax, &s_bad);
    __syncthreads();
    if (threadIdx.x == 0) {
      const float s = s_bad ? float_of(kNanBits) : tile_scale(float_of(s_amax), fmax_of<F>(), pow2);
      s_scale = s;
      if (scales != nullptr) scales[tile] = s;
      publish(st, s_bad, 0, s_amax);
    }
    __syncthreads();  // s_scale is read below; the next tile's reset of s_amax, s_bad is after it
    const float s = s_scale;
    const float inv = __fdiv_rn(1.0f, s);
    for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
      const int64_t i = (e / nc) * C + e % nc;
      const uint8_t code = fp8_encode<F>(__fmul_rn(xt[i], inv));
      if constexpr (kFake) {
        out[r0 * C + c0 + i] = __fmul_rn(fp8_decode<F>(code), s);
      } else {
        codes[r0 * C + c0 + i] = code;
      }
    }
  }
}

// out (R, C) = decode(codes) * scale of the element's tile.
template <typename F>
__global__ void dequant_tiles_kernel(const uint8_t* codes, const float* scales, float* out,
                                     int64_t R, int64_t C, int64_t tr, int64_t tc) {
  const int64_t n = R * C, ncb = (C + tc - 1) / tc;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t r = i / C, c = i % C;
    out[i] = __fmul_rn(fp8_decode<F>(codes[i]), scales[(r / tr) * ncb + c / tc]);
  }
}

// ---- flat (per-tensor) ----

// The finite amax and the NaN/Inf count of x (n,), into st.
__global__ void flat_stats_kernel(const float* x, int64_t n, DeviceStats* st) {
  __shared__ unsigned int s_amax;
  __shared__ unsigned long long s_bad;
  if (threadIdx.x == 0) {
    s_amax = 0;
    s_bad = 0;
  }
  __syncthreads();
  ThreadStats ts;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    ts.add(x[i]);
  }
  ts.merge_into(&s_amax, &s_bad);
  __syncthreads();
  if (threadIdx.x == 0) publish(st, s_bad, 0, s_amax);
}

// codes (n,) = cast(x * (1/s)) with s = *scale, or NaN when flat_stats_kernel (queued before on
// the same stream) found a NaN/Inf in x; counts the values the cast clips.
template <typename F>
__global__ void flat_quant_kernel(const float* x, uint8_t* codes, int64_t n, const float* scale,
                                  DeviceStats* st) {
  __shared__ unsigned long long s_sat;
  if (threadIdx.x == 0) s_sat = 0;
  __syncthreads();
  const float s = st->nonfinite ? float_of(kNanBits) : *scale;
  const float inv = __fdiv_rn(1.0f, s);
  unsigned long long sat = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float y = __fmul_rn(x[i], inv);
    sat += clipped_by_cast<F>(fabsf(y));
    codes[i] = fp8_encode<F>(y);
  }
  if (sat) atomicAdd(&s_sat, sat);
  __syncthreads();
  if (threadIdx.x == 0 && s_sat) atomicAdd(&st->saturated, s_sat);
}

// ---- host side ----

// A zeroed DeviceStats on the current stream's device, and its copy back to QuantStats.
class StatsScratch {
 public:
  StatsScratch() {
    CHECK_CUDA(cudaGetDevice(&device_));
    d_ = static_cast<DeviceStats*>(device_alloc(Device::cuda(device_), sizeof(DeviceStats)));
    CHECK_CUDA(cudaMemsetAsync(d_, 0, sizeof(DeviceStats), stream()));
  }
  ~StatsScratch() { device_free(Device::cuda(device_), d_); }
  StatsScratch(const StatsScratch&) = delete;
  StatsScratch& operator=(const StatsScratch&) = delete;

  DeviceStats* get() const { return d_; }
  // Copies the counts back after the kernels queued so far and waits for them.
  QuantStats finish() const {
    DeviceStats h{};
    CHECK_CUDA(cudaMemcpyAsync(&h, d_, sizeof(DeviceStats), cudaMemcpyDeviceToHost, stream()));
    synchronize();
    QuantStats st;
    st.nonfinite = static_cast<int64_t>(h.nonfinite);
    st.saturated = static_cast<int64_t>(h.saturated);
    st.amax = float_of(h.amax_bits);
    return st;
  }

 private:
  int device_ = 0;
  DeviceStats* d_ = nullptr;
};

inline unsigned blocks_for(int64_t units, int64_t cap) {
  return static_cast<unsigned>(units < cap ? units : cap);
}

inline unsigned flat_blocks(int64_t n) {
  return blocks_for((n + kThreads - 1) / kThreads, kMaxFlatBlocks);
}

void check_tile(QuantTile tile, int64_t R, int64_t C, DType fmt, const char* op) {
  CHECK(tile.rows > 0 && tile.cols > 0) << op << ": quantisation tile " << tile.rows << "x"
                                        << tile.cols;
  CHECK(R >= 0 && C >= 0) << op << ": R=" << R << " C=" << C;
  fp8_max(fmt);  // rejects non-fp8 formats
}

// Launches quant_tiles_kernel for fmt; returns the stats.
template <bool kFake>
QuantStats run_tiles(const float* x, uint8_t* codes, float* out, float* scales, int64_t R,
                     int64_t C, QuantTile tile, DType fmt, bool pow2, const char* name) {
  if (R == 0 || C == 0) return QuantStats{};
  StatsScratch st;
  const unsigned blocks = blocks_for(quant_tile_count(R, C, tile), kMaxTileBlocks);
  if (fmt == DType::kF8E4M3) {
    quant_tiles_kernel<E4M3, kFake><<<blocks, kThreads, 0, stream()>>>(
        x, codes, out, scales, R, C, tile.rows, tile.cols, pow2, st.get());
  } else {
    quant_tiles_kernel<E5M2, kFake><<<blocks, kThreads, 0, stream()>>>(
        x, codes, out, scales, R, C, tile.rows, tile.cols, pow2, st.get());
  }
  check_launch(name);
  return st.finish();
}

}  // namespace

QuantStats quantize_tiles(const float* x, uint8_t* codes, float* scales, int64_t R, int64_t C,
                          QuantTile tile, DType fmt, bool pow2) {
  check_tile(tile, R, C, fmt, "quantize_tiles");
  CHECK(scales != nullptr) << "quantize_tiles needs somewhere to put the scales";
  return run_tiles<false>(x, codes, nullptr, scales, R, C, tile, fmt, pow2, "quantize_tiles");
}

void dequantize_tiles(const uint8_t* codes, const float* scales, float* out, int64_t R, int64_t C,
                      QuantTile tile, DType fmt) {
  check_tile(tile, R, C, fmt, "dequantize_tiles");
  if (R == 0 || C == 0) return;
  const unsigned blocks = flat_blocks(R * C);
  if (fmt == DType::kF8E4M3) {
    dequant_tiles_kernel<E4M3><<<blocks, kThreads, 0, stream()>>>(codes, scales, out, R, C,
                                                                  tile.rows, tile.cols);
  } else {
    dequant_tiles_kernel<E5M2><<<blocks, kThreads, 0, stream()>>>(codes, scales, out, R, C,
                                                                  tile.rows, tile.cols);
  }
  check_launch("dequantize_tiles");
}

QuantStats fake_quant_tiles(const float* x, float* out, int64_t R, int64_t C, QuantTile tile,
                            DType fmt, bool pow2, float* scales) {
  check_tile(tile, R, C, fmt, "fake_quant_tiles");
  return run_tiles<true>(x, nullptr, out, scales, R, C, tile, fmt, pow2, "fake_quant_tiles");
}

QuantStats quantize_tensor_scaled(const float* x, uint8_t* codes, int64_t n, const float* scale,
                                  DType fmt) {
  CHECK_GE(n, 0) << "quantize_tensor_scaled";
  fp8_max(fmt);  // rejects non-fp8 formats
  if (n == 0) return QuantStats{};
  StatsScratch st;
  const unsigned blocks = flat_blocks(n);
  flat_stats_kernel<<<blocks, kThreads, 0, stream()>>>(x, n, st.get());
  check_launch("quantize_tensor_scaled/stats");
  if (fmt == DType::kF8E4M3) {
    flat_quant_kernel<E4M3><<<blocks, kThreads, 0, stream()>>>(x, codes, n, scale, st.get());
  } else {
    flat_quant_kernel<E5M2><<<blocks, kThreads, 0, stream()>>>(x, codes, n, scale, st.get());
  }
  check_launch("quantize_tensor_scaled");
  return st.finish();
}

QuantStats amax_f32(const float* x, int64_t n) {
  CHECK_GE(n, 0) << "amax_f32";
  if (n == 0) return QuantStats{};
  StatsScratch st;
  flat_stats_kernel<<<flat_blocks(n), kThreads, 0, stream()>>>(x, n, st.get());
  check_launch("amax_f32");
  return st.finish();
}

}  // namespace strata::cuda
