// CUDA twins of RMSNorm forward and backward (kernels/ops.h): y = (x * rstd) * w with
// rstd = 1 / sqrt(mean(x^2) + eps), statistics in double, products in the CPU's order
// (kernels/cpu/rmsnorm.cc; __fmul_rn / __fsub_rn so nvcc cannot fuse what the CPU rounds twice).
//
// Forward and dx: one block per row (rows grid-strided), the row's sum in double through a fixed
// reduction tree, then every element from its own inputs, so y may alias x and dx may alias dy.
//
// dw (accumulated +=) without atomics and without scratch memory: a block owns 32 columns; its
// 32 x kDwRowLanes threads each sum, in double, the rows r = lane, lane + kDwRowLanes, ... of one
// column, and the kDwRowLanes partial sums of a column are added in lane order in shared memory
// before the single += into dw. The order depends only on rows, so dw is reproducible. This
// needs no scratch buffer, so neither of the scratch lifetime questions (freeing memory queued
// work still reads; a shared buffer two streams would race on) arises. The dw kernel is queued
// before the dx kernel, which matters when dx aliases dy.
#include <cuda_runtime.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;  // a multiple of 32: block_reduce needs whole warps
constexpr int64_t kMaxBlocks = int64_t{1} << 16;
constexpr int kDwCols = 32;      // columns per dw block (one warp wide: coalesced row reads)
constexpr int kDwRowLanes = 16;  // row lanes per column in a dw block

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
}



// y: (rows, C); rstd: (rows,); x: (rows, C); w: (C,).
__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w,
                                       int64_t rows, int64_t C, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      const double v = xr[i];
      acc += v * v;
    }
    const double mean_sq = block_reduce(acc, 0.0, SumOp{}) / static_cast<double>(C);
    const float rs = static_cast<float>(1.0 / sqrt(mean_sq + static_cast<double>(eps)));
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      yr[i] = __fmul_rn(__fmul_rn(xr[i], rs), w[i]);
    }
  }
}

// dw (C,) += sum over rows of dy * (x * rstd); blockDim (kDwCols, kDwRowLanes).
__global__ void rmsnorm_dw_kernel(float* dw, const float* dy, const float* x, const float* rstd,
                                  int64_t rows, int64_t C) {
  __shared__ double partial[kDwRowLanes][kDwCols];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kDwCols + threadIdx.x;
  double acc = 0.0;
  if (c < C) {
    for (int64_t r = threadIdx.y; r < rows; r += kDwRowLanes) {
      const int64_t k = r * C + c;
      acc += static_cast<double>(__fmul_rn(dy[k], __fmul_rn(x[k], rstd[r])));
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double total = 0.0;
    for (int j = 0; j < kDwRowLanes; ++j) total += partial[j][threadIdx.x];
    dw[c] = __fadd_rn(dw[c], static_cast<float>(total));
  }
}

// dx_j = r w_j dy_j - x_j (r^3 / C) sum_i w_i dy_i x_i, with r = rstd of the row.
__global__ void rmsnorm_dx_kernel(float* dx, const float* dy, const float* x, const float* w,
                                  const float* rstd, int64_t rows, int64_t C) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* dyr = dy + r * C;
    const float* xr = x + r * C;
    float* dxr = dx + r * C;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      acc += static_cast<double>(__fmul_rn(w[i], dyr[i])) * static_cast<double>(xr[i]);
    }
    const double dot = block_reduce(acc, 0.0, SumOp{});
    const float rsf = rstd[r];
    const double rs = rsf;
    const float k = static_cast<float>(rs * rs * rs / static_cast<double>(C) * dot);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      dxr[i] = __fsub_rn(__fmul_rn(rsf, __fmul_rn(w[i], dyr[i])), __fmul_rn(xr[i], k));
    }
  }
}

}  // namespace

void rmsnorm_forward_f32(float* y, float* rstd, const float* x, const float* w, int64_t rows,
                         int64_t C, float eps) {
  CHECK(rows >= 0 && C > 0) << "rmsnorm_forward: rows=" << rows << " C=" << C;
  if (rows == 0) return;
  rmsnorm_forward_kernel<<<row_blocks(rows), kThreads, 0, stream()>>>(y, rstd, x, w, rows, C,
                                                                      eps);
  check_launch("rmsnorm_forward_f32");
}

void rmsnorm_backward_f32(float* dx, float* dw, const float* dy, const float* x, const float* w,
                          const float* rstd, int64_t rows, int64_t C) {
  CHECK(rows >= 0 && C > 0) << "rmsnorm_backward: rows=" << rows << " C=" << C;
  if (rows == 0) return;  // dw += 0 and no dx rows
  const int64_t dw_blocks = (C + kDwCols - 1) / kDwCols;
  CHECK_LE(dw_blocks, int64_t{0x7fffffff}) << "rmsnorm_backward: C=" << C;
  // dw first: its kernel reads dy, which the dx kernel may overwrite (dx aliasing dy).
  rmsnorm_dw_kernel<<<static_cast<unsigned>(dw_blocks), dim3(kDwCols, kDwRowLanes), 0, stream()>>>(
      dw, dy, x, rstd, rows, C);
  check_launch("rmsnorm_backward_f32 (dw)");
  rmsnorm_dx_kernel<<<row_blocks(rows), kThreads, 0, stream()>>>(dx, dy, x, w, rstd, rows, C);
  check_launch("rmsnorm_backward_f32 (dx)");
}

}  // namespace strata::cuda
