// CUDA twins of softmax and log-softmax, forward and backward, along the last dimension
// (kernels/ops.h; x, y, dx, dy: (rows, cols)).
//
// One block per row (rows grid-strided over the blocks), looping over the row, so any cols works
// (vocabulary rows of 256k included) without holding a row in shared memory: the forward reads x
// three times (max, sum of exp, output), which L2 serves for rows up to a few MiB. The steps and
// their precision are the CPU's (kernels/cpu/softmax.cc): the max NaN-propagating, exp(x - max) in
// fp32, its sum and the backward's dot products in double, then the normalisation in fp32; the
// block's fixed reduction tree replaces the CPU's 8 lanes. A row that is entirely -inf gives
// zeros (softmax) or -inf (log-softmax); +inf or NaN in a row gives NaN, as on the CPU.
//
// Aliasing: each pass that writes reads only its own element after the row's reductions are done
// (block_reduce ends in a barrier), so y may alias x, and dx may alias dy or y, exactly.
#include <cuda_runtime.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 512;  // a multiple of 32: block_reduce needs whole warps
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
}

__device__ inline float neg_inf() { return __uint_as_float(0xff800000u); }



__device__ float row_max(const float* x, int64_t cols) {
  float m = neg_inf();
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = MaxNanOp{}(m, x[i]);
  return block_reduce(m, neg_inf(), MaxNanOp{});
}

// sum over the row of exp(x - m) in double (each exp in fp32, as the CPU's).
__device__ double row_sum_exp(const float* x, float m, int64_t cols) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    acc += static_cast<double>(expf(__fsub_rn(x[i], m)));
  }
  return block_reduce(acc, 0.0, SumOp{});
}

template <bool kLog>
__global__ void softmax_forward_kernel(float* y, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float m = row_max(xr, cols);
    if (m == neg_inf()) {  // every entry -inf: a fully masked row attends to nothing
      const float fill = kLog ? neg_inf() : 0.0f;
      for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = fill;
      continue;  // uniform over the block: m is the block's value
    }
    const double sum = row_sum_exp(xr, m, cols);
    if (kLog) {
      const float log_sum = static_cast<float>(log(sum));
      for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        yr[i] = __fsub_rn(__fsub_rn(xr[i], m), log_sum);
      }
    } else {
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        yr[i] = __fmul_rn(expf(__fsub_rn(xr[i], m)), inv);
      }
    }
  }
}

// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
template <bool kLog>
__global__ void softmax_backward_kernel(float* dx, const float* dy, const float* y, int64_t rows,
                                        int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* dyr = dy + r * cols;
    const float* yr = y + r * cols;
    float* dxr = dx + r * cols;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      acc += kLog ? static_cast<double>(dyr[i])
                  : static_cast<double>(dyr[i]) * static_cast<double>(yr[i]);
    }
    const float d = static_cast<float>(block_reduce(acc, 0.0, SumOp{}));
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float g = dyr[i];
      const float v = yr[i];
      dxr[i] = kLog ? __fsub_rn(g, __fmul_rn(expf(v), d)) : __fmul_rn(v, __fsub_rn(g, d));
    }
  }
}

void check_shape(const char* name, int64_t rows, int64_t cols) {
  CHECK(rows >= 0 && cols >= 0) << name << ": rows=" << rows << " cols=" << cols;
}

}  // namespace

void softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols) {
  check_shape("softmax_forward_f32", rows, cols);
  if (rows == 0 || cols == 0) return;
  softmax_forward_kernel<false><<<row_blocks(rows), kThreads, 0, stream()>>>(y, x, rows, cols);
  check_launch("softmax_forward_f32");
}

void softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows, int64_t cols) {
  check_shape("softmax_backward_f32", rows, cols);
  if (rows == 0 || cols == 0) return;
  softmax_backward_kernel<false><<<row_blocks(rows), kThreads, 0, stream()>>>(dx, dy, y, rows,
                                                                              cols);
  check_launch("softmax_backward_f32");
}

void log_softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols) {
  check_shape("log_softmax_forward_f32", rows, cols);
  if (rows == 0 || cols == 0) return;
  softmax_forward_kernel<true><<<row_blocks(rows), kThreads, 0, stream()>>>(y, x, rows, cols);
  check_launch("log_softmax_forward_f32");
}

void log_softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows,
                              int64_t cols) {
  check_shape("log_softmax_backward_f32", rows, cols);
  if (rows == 0 || cols == 0) return;
  softmax_backward_kernel<true><<<row_blocks(rows), kThreads, 0, stream()>>>(dx, dy, y, rows,
                                                                             cols);
  check_launch("log_softmax_backward_f32");
}

}  // namespace strata::cuda
