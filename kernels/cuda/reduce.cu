// CUDA twins of the reductions of kernels/ops.h: flat sum, sum of squares and max-abs (returned to
// the host, waiting on the current stream), and per-row sums and maxima (x: (rows, cols) ->
// out: (rows,), queued without waiting).
//
// Determinism: a flat reduction runs on a grid whose size depends only on n; each block reduces
// its grid-stride share in double through a fixed shuffle tree and writes one partial; the host
// adds the partials in block order. So the result depends only on the data and n, as the CPU's
// does, though the order differs from the CPU's 8 lanes (the sums agree to double rounding).
// max-abs uses the CPU's trick exactly: the integer max of the bit patterns with the sign cleared
// is |x|'s max and ranks every NaN above +inf, so a NaN anywhere gives NaN, order-free.
// Row reductions give each row one block (rows grid-strided over the blocks).
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"  // device_alloc, device_free
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;             // a multiple of 32: block_reduce needs whole warps
constexpr int64_t kMaxFlatBlocks = 1024;  // partials copied back per flat reduction
constexpr int64_t kMaxRowBlocks = int64_t{1} << 16;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

struct MaxU32Op {
  __device__ uint32_t operator()(uint32_t a, uint32_t b) const { return a > b ? a : b; }
};


template <bool kSquares>
__global__ void sum_partials_kernel(double* partials, const float* x, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double v = x[i];
    acc += kSquares ? v * v : v;
  }
  acc = block_reduce(acc, 0.0, SumOp{});
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void amax_partials_kernel(uint32_t* partials, const float* x, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint32_t m = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const uint32_t b = __float_as_uint(x[i]) & 0x7fffffffu;
    m = b > m ? b : m;
  }
  m = block_reduce(m, 0u, MaxU32Op{});
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

__global__ void row_sum_kernel(float* out, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) acc += static_cast<double>(xr[i]);
    acc = block_reduce(acc, 0.0, SumOp{});
    if (threadIdx.x == 0) out[r] = static_cast<float>(acc);
  }
}

__global__ void row_max_kernel(float* out, const float* x, int64_t rows, int64_t cols) {
  const float neg_inf = __uint_as_float(0xff800000u);  // -inf
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float m = neg_inf;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = MaxNanOp{}(m, xr[i]);
    m = block_reduce(m, neg_inf, MaxNanOp{});
    if (threadIdx.x == 0) out[r] = m;
  }
}

// The grid of a flat reduction: a function of n alone, so the partials (and the sum) are too.
inline int64_t flat_blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return b < kMaxFlatBlocks ? b : kMaxFlatBlocks;
}

inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < kMaxRowBlocks ? rows : kMaxRowBlocks);
}

// Runs launch(partials, blocks) with a device array of `blocks` T, copies it back and waits.
// The scratch is freed after the wait, so no queued work can still be using it.
template <typename T, typename Launch>
std::vector<T> flat_partials(int64_t n, Launch launch) {
  const int64_t blocks = flat_blocks(n);
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  const size_t bytes = static_cast<size_t>(blocks) * sizeof(T);
  T* partials = static_cast<T*>(device_alloc(Device::cuda(device), bytes));
  launch(partials, static_cast<unsigned>(blocks));
  std::vector<T> host(static_cast<size_t>(blocks));
  CHECK_CUDA(cudaMemcpyAsync(host.data(), partials, bytes, cudaMemcpyDeviceToHost, stream()));
  synchronize();
  device_free(Device::cuda(device), partials);
  return host;
}

template <bool kSquares>
double flat_sum(const float* x, int64_t n, const char* name) {
  CHECK_GE(n, 0) << name;
  if (n == 0) return 0.0;
  const std::vector<double> partials = flat_partials<double>(n, [&](double* p, unsigned blocks) {
    sum_partials_kernel<kSquares><<<blocks, kThreads, 0, stream()>>>(p, x, n);
    check_launch(name);
  });
  double total = 0.0;
  for (double p : partials) total += p;
  return total;
}

}  // namespace

double reduce_sum_f32(const float* x, int64_t n) {
  return flat_sum<false>(x, n, "reduce_sum_f32");
}

double reduce_sum_squares_f32(const float* x, int64_t n) {
  return flat_sum<true>(x, n, "reduce_sum_squares_f32");
}

float reduce_amax_f32(const float* x, int64_t n) {
  CHECK_GE(n, 0) << "reduce_amax_f32";
  if (n == 0) return 0.0f;
  const std::vector<uint32_t> partials =
      flat_partials<uint32_t>(n, [&](uint32_t* p, unsigned blocks) {
        amax_partials_kernel<<<blocks, kThreads, 0, stream()>>>(p, x, n);
        check_launch("reduce_amax_f32");
      });
  uint32_t m = 0;
  for (uint32_t p : partials) m = p > m ? p : m;
  float r;
  std::memcpy(&r, &m, sizeof(r));
  return r;
}

void reduce_row_sum_f32(float* out, const float* x, int64_t rows, int64_t cols) {
  CHECK(rows >= 0 && cols >= 0) << "reduce_row_sum_f32: rows=" << rows << " cols=" << cols;
  if (rows == 0) return;
  row_sum_kernel<<<row_blocks(rows), kThreads, 0, stream()>>>(out, x, rows, cols);
  check_launch("reduce_row_sum_f32");
}

void reduce_row_max_f32(float* out, const float* x, int64_t rows, int64_t cols) {
  CHECK(rows >= 0 && cols >= 0) << "reduce_row_max_f32: rows=" << rows << " cols=" << cols;
  if (rows == 0) return;
  row_max_kernel<<<row_blocks(rows), kThreads, 0, stream()>>>(out, x, rows, cols);
  check_launch("reduce_row_max_f32");
}

}  // namespace strata::cuda
