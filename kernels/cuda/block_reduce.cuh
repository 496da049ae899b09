// Block-wide reductions shared by the row kernels of kernels/cuda (reductions, softmax,
// cross-entropy, RMSNorm): a fixed tree, so a result depends only on the data and the block
// size, never on timing.
#pragma once

namespace strata::cuda {

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// max that propagates NaN (a NaN anywhere gives NaN, as the CPU's row max).
struct MaxNanOp {
  __device__ float operator()(float a, float b) const { return (b > a || b != b) ? b : a; }
};

// v reduced over the block by a fixed tree (shuffles within each warp, then warp 0 over the
// warps' results); every thread gets the result. All threads of the block must call it;
// blockDim.x a multiple of 32.
template <typename T, typename Op>
__device__ T block_reduce(T v, T identity, Op op) {
  __shared__ T warp_vals[32];
  __shared__ T result;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
  __syncthreads();  // a previous call's readers of warp_vals and result are done
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? warp_vals[lane] : identity;
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
    if (lane == 0) result = v;
  }
  __syncthreads();
  return result;
}

}  // namespace strata::cuda
