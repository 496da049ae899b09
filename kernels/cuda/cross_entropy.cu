// CUDA twins of the fused softmax + cross-entropy of kernels/ops.h (logits: (N, V)): the per-row
// loss and log-sum-exp, the logits' gradient from the saved log-sum-exp, and the log-probabilities
// of target tokens under a temperature (GRPO).
//
// One block per row (rows grid-strided), looping over the vocabulary, with the CPU's steps and
// precision (kernels/cpu/cross_entropy.cc): the row max (NaN-propagating), sum exp(x - max) with
// each exp in fp32 accumulated in double through a fixed reduction tree, lse = m + log(sum) and
// the loss (m - x_t) + log(sum) formed in double. The backward is one pass, exp(x - lse) * scale,
// the target's entry minus one first; each element is read and written by the same thread, so
// dlogits may alias logits.
//
// Targets: negative masks the row (loss 0, lse stored 0, gradient 0, log-prob 0). A target >= V
// is a CHECK failure in the forward, which waits for its result anyway: the kernel records the
// first such row in a device word and the host CHECKs it after the wait, naming the row. The
// backward and token_logprobs do not wait, so they cannot CHECK; they write NaN into such a row
// (never reading out of bounds), which the loss or the gradient norm then shows.
#include <cuda_runtime.h>

#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"  // device_alloc, device_free
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 512;  // a multiple of 32: block_reduce needs whole warps
constexpr int64_t kMaxBlocks = int64_t{1} << 16;
constexpr unsigned long long kNoBadRow = ~0ull;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks);
}

__device__ inline float neg_inf() { return __uint_as_float(0xff800000u); }
__device__ inline float quiet_nan() { return __uint_as_float(0x7fc00000u); }



__device__ float row_max(const float* x, int64_t V) {
  float m = neg_inf();
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) m = MaxNanOp{}(m, x[i]);
  return block_reduce(m, neg_inf(), MaxNanOp{});
}

// sum over the row of exp(x / temperature - m) in double (kTempered), or of exp(x - m).
template <bool kTempered>
__device__ double row_sum_exp(const float* x, float m, float temperature, int64_t V) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = kTempered ? __fdiv_rn(x[i], temperature) : x[i];
    acc += static_cast<double>(expf(__fsub_rn(v, m)));
  }
  return block_reduce(acc, 0.0, SumOp{});
}

// losses, lse: (N,); logits: (N, V); targets: (N,); bad_row: the smallest row with target >= V.
__global__ void cross_entropy_forward_kernel(float* losses, float* lse,
                                             unsigned long long* bad_row, const float* logits,
                                             const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const int32_t t = targets[r];  // the same for every thread: the branches below are uniform
    if (t < 0) {
      if (threadIdx.x == 0) losses[r] = lse[r] = 0.0f;
      continue;
    }
    if (t >= V) {
      if (threadIdx.x == 0) {
        atomicMin(bad_row, static_cast<unsigned long long>(r));
        losses[r] = lse[r] = quiet_nan();
      }
      continue;
    }
    const float* x = logits + r * V;
    const float m = row_max(x, V);
    const double log_sum = log(row_sum_exp<false>(x, m, 1.0f, V));
    if (threadIdx.x == 0) {
      lse[r] = static_cast<float>(static_cast<double>(m) + log_sum);
      losses[r] = static_cast<float>((static_cast<double>(m) - static_cast<double>(x[t])) + log_sum);
    }
  }
}

// dlogits: (N, V) = (exp(x - lse) - onehot(t)) * scale * row_scale[r]; 0 for masked rows.
__global__ void cross_entropy_backward_kernel(float* dlogits, const float* logits,
                                              const int32_t* targets, const float* lse,
                                              float scale_all, int64_t N, int64_t V,
                                              const float* row_scale) {
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const int32_t t = targets[r];
    float* d = dlogits + r * V;
    if (t < 0 || t >= V) {
      const float fill = t < 0 ? 0.0f : quiet_nan();
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) d[i] = fill;
      continue;
    }
    const float scale = row_scale != nullptr ? __fmul_rn(scale_all, row_scale[r]) : scale_all;
    const float* x = logits + r * V;
    const float l = lse[r];
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float e = expf(__fsub_rn(x[i], l));
      d[i] = __fmul_rn(i == t ? __fsub_rn(e, 1.0f) : e, scale);
    }
  }
}

// out: (N,) = log softmax(x / temperature)[t]; 0 for masked rows.
__global__ void token_logprobs_kernel(float* out, const float* logits, const int32_t* targets,
                                      float temperature, int64_t N, int64_t V) {
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const int32_t t = targets[r];
    if (t < 0 || t >= V) {
      if (threadIdx.x == 0) out[r] = t < 0 ? 0.0f : quiet_nan();
      continue;
    }
    const float* x = logits + r * V;
    // max(x / T) = max(x) / T: division by T > 0 is monotonic, rounding included.
    const float m = __fdiv_rn(row_max(x, V), temperature);
    const double log_sum = log(row_sum_exp<true>(x, m, temperature, V));
    if (threadIdx.x == 0) {
      const double xt = __fdiv_rn(x[t], temperature);
      out[r] = static_cast<float>((xt - static_cast<double>(m)) - log_sum);
    }
  }
}

}  // namespace

double cross_entropy_forward_f32(float* losses, float* lse, const float* logits,
                                 const int32_t* targets, int64_t N, int64_t V) {
  CHECK(N >= 0 && V > 0) << "cross_entropy_forward: N=" << N << " V=" << V;
  if (N == 0) return 0.0;
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  auto* bad_row = static_cast<unsigned long long*>(
      device_alloc(Device::cuda(device), sizeof(unsigned long long)));
  CHECK_CUDA(cudaMemsetAsync(bad_row, 0xff, sizeof(unsigned long long), stream()));  // kNoBadRow
  cross_entropy_forward_kernel<<<row_blocks(N), kThreads, 0, stream()>>>(losses, lse, bad_row,
                                                                         logits, targets, N, V);
  check_launch("cross_entropy_forward_f32");
  std::vector<float> host_losses(static_cast<size_t>(N));
  unsigned long long host_bad = 0;
  CHECK_CUDA(cudaMemcpyAsync(host_losses.data(), losses, static_cast<size_t>(N) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream()));
  CHECK_CUDA(cudaMemcpyAsync(&host_bad, bad_row, sizeof(host_bad), cudaMemcpyDeviceToHost,
                             stream()));
  synchronize();
  device_free(Device::cuda(device), bad_row);  // after the wait: nothing queued still uses it
  if (host_bad != kNoBadRow) {
    int32_t target = 0;
    CHECK_CUDA(cudaMemcpyAsync(&target, targets + host_bad, sizeof(target),
                               cudaMemcpyDeviceToHost, stream()));
    synchronize();
    CHECK_LT(static_cast<int64_t>(target), V) << "cross_entropy: target of row " << host_bad;
  }
  // The CPU's order: losses added in row order in double.
  double total = 0.0;
  for (float l : host_losses) total += l;
  return total;
}

void cross_entropy_backward_f32(float* dlogits, const float* logits, const int32_t* targets,
                                const float* lse, float scale, int64_t N, int64_t V,
                                const float* row_scale) {
  CHECK(N >= 0 && V > 0) << "cross_entropy_backward: N=" << N << " V=" << V;
  if (N == 0) return;
  cross_entropy_backward_kernel<<<row_blocks(N), kThreads, 0, stream()>>>(
      dlogits, logits, targets, lse, scale, N, V, row_scale);
  check_launch("cross_entropy_backward_f32");
}

void token_logprobs_f32(float* out, const float* logits, const int32_t* targets, float temperature,
                        int64_t N, int64_t V) {
  CHECK(N >= 0 && V > 0) << "token_logprobs: N=" << N << " V=" << V;
  CHECK_GT(temperature, 0.0f) << "token_logprobs: temperature";
  if (N == 0) return;
  token_logprobs_kernel<<<row_blocks(N), kThreads, 0, stream()>>>(out, logits, targets,
                                                                   temperature, N, V);
  check_launch("token_logprobs_f32");
}

}  // namespace strata::cuda
