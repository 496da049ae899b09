// CUDA twins of RoPE (kernels/ops.h), Hugging Face's rotate_half layout: the cos/sin tables and
// the in-place rotation of (rows, H, D) activations, forward and inverse.
//
// The arithmetic is the CPU's (kernels/cpu/rope.cc): the angle is float(p) * inv_freq[i] rounded
// once, then cosf / sinf in fp32 (CUDA's accurate versions, not the __cosf intrinsics, whose error
// grows with the argument, and angles here reach max_pos radians); each output of a rotation is
// two products rounded, then their sum rounded (__fmul_rn / __fadd_rn: never fused into an fma).
// One thread per pair (x[i], x[i + D/2]) reads both before writing either, so in place is safe.
#include <cuda_runtime.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

// cos, sin: (max_pos, half); inv_freq: (half,). One thread per table entry.
__global__ void rope_tables_kernel(float* cos_out, float* sin_out, const float* inv_freq,
                                   int64_t max_pos, int64_t half) {
  const int64_t n = max_pos * half;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    const int64_t p = k / half;
    const int64_t i = k - p * half;
    const float angle = __fmul_rn(static_cast<float>(p), inv_freq[i]);
    cos_out[k] = cosf(angle);
    sin_out[k] = sinf(angle);
  }
}

// x: (rows, H, D) in place; pos: (rows,); one thread per (row, head, i < half).
// sign = -1 applies the inverse (transposed) rotation.
__global__ void rope_apply_kernel(float* x, const int32_t* pos, const float* cos_t,
                                  const float* sin_t, int64_t rows, int64_t H, int64_t half,
                                  float sign) {
  const int64_t n = rows * H * half;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    const int64_t head = k / half;  // row * H + h
    const int64_t i = k - head * half;
    const int64_t r = head / H;
    float* x1 = x + head * 2 * half + i;
    float* x2 = x1 + half;
    const int32_t p = pos[r];
    if (p < 0) {  // outside the tables: make the broken row visible rather than read out of bounds
      *x1 = __uint_as_float(0x7fc00000u);
      *x2 = __uint_as_float(0x7fc00000u);
      continue;
    }
    const int64_t t = static_cast<int64_t>(p) * half + i;
    const float c = cos_t[t];
    const float sn = sign * sin_t[t];
    const float a = *x1;
    const float b = *x2;
    *x1 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn));
    *x2 = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn));
  }
}

}  // namespace

void rope_tables_f32(float* cos, float* sin, const float* inv_freq, int64_t max_pos, int64_t D) {
  CHECK(D > 0 && D % 2 == 0) << "rope_tables: head dimension D=" << D << " must be even";
  CHECK_GE(max_pos, 0) << "rope_tables";
  const int64_t half = D / 2;
  if (max_pos == 0) return;
  rope_tables_kernel<<<blocks_for(max_pos * half), kThreads, 0, stream()>>>(cos, sin, inv_freq,
                                                                            max_pos, half);
  check_launch("rope_tables_f32");
}

// The CPU CHECKs 0 <= pos[r]; here pos lives on the device, so a negative position gives NaN in
// its row instead (and the upper bound, the tables' max_pos, is not known to this op).
void rope_apply_f32(float* x, const int32_t* pos, const float* cos, const float* sin, int64_t rows,
                    int64_t H, int64_t D, bool inverse) {
  CHECK(D > 0 && D % 2 == 0) << "rope_apply: head dimension D=" << D << " must be even";
  CHECK(rows >= 0 && H >= 0) << "rope_apply: rows=" << rows << " H=" << H;
  const int64_t half = D / 2;
  const int64_t n = rows * H * half;
  if (n == 0) return;
  rope_apply_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(x, pos, cos, sin, rows, H, half,
                                                              inverse ? -1.0f : 1.0f);
  check_launch("rope_apply_f32");
}

}  // namespace strata::cuda
