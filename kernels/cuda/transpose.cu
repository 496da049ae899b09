// Tiled transposes (ops_cuda.h): a 32x32 tile goes through shared memory (one padding column
// against bank conflicts), so both the reads and the writes are coalesced.
#include <cuda_runtime.h>

#include "core/check.h"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kTile = 32;
constexpr int kRowsPerPass = 8;  // a 32x8 block moves a 32x32 tile in 4 passes

template <typename T>
__global__ void transpose_kernel(T* out, const T* in, int64_t R, int64_t C) {
  __shared__ T tile[kTile][kTile + 1];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile, r0 = static_cast<int64_t>(blockIdx.y) * kTile;
  for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < R && c < C) tile[i][threadIdx.x] = in[r * C + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += kRowsPerPass) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;  // out row c, column r
    if (r < R && c < C) out[c * R + r] = tile[threadIdx.x][i];
  }
}

template <typename T>
void transpose(T* out, const T* in, int64_t R, int64_t C, const char* name) {
  if (R == 0 || C == 0) return;
  const int64_t gx = (C + kTile - 1) / kTile, gy = (R + kTile - 1) / kTile;
  CHECK(gy <= 65535) << name << ": " << R << " rows exceed the grid's y limit";
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  transpose_kernel<T><<<grid, dim3(kTile, kRowsPerPass), 0, static_cast<cudaStream_t>(current_stream())>>>(
      out, in, R, C);
  check_launch(name);
}

}  // namespace

void transpose_f32(float* out, const float* in, int64_t R, int64_t C) {
  transpose(out, in, R, C, "transpose_f32");
}

void transpose_u8(uint8_t* out, const uint8_t* in, int64_t R, int64_t C) {
  transpose(out, in, R, C, "transpose_u8");
}

}  // namespace strata::cuda
