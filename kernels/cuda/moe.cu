// CUDA twins of kernels/moe_ops.h's routing and its backward, gather, scatter-add and combine
// (the grouped linear GEMMs are in gemm.cu, on cuBLASLt). One thread routes one token: E and K
// are small (<= a few hundred and <= 16), so a token's top-k is K selection passes over its E
// scores, with the CPU's tie rule (the lower index wins). Gather and combine are one thread per
// (row, column): every output element is written by exactly one thread, which sums its token's
// K slots in k order, so the results are deterministic without atomics. Scatter-add sorts the
// row index (stably) so that each destination row is summed by one thread per column, in the
// CPU's order.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"  // device_alloc, device_free (scatter_add_rows' scratch)
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 64 ? b : 65535 * 64);
}

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

// Index of the largest v[i] (i < n, stride 1) not yet taken; ties keep the lower index.
__device__ int argmax_untaken(const float* v, int n, const unsigned char* taken) {
  int best = -1;
  for (int i = 0; i < n; ++i) {
    if (taken[i]) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best;
}

constexpr int kMaxExperts = 512;

__global__ void route_kernel(float* probs, int32_t* idx, float* w, const float* logits,
                             const float* bias, int64_t N, MoeRouting r) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  const int E = static_cast<int>(r.E), K = static_cast<int>(r.K);
  const float* z = logits + t * E;
  float* p = probs + t * E;
  int32_t* ti = idx + t * K;
  float* tw = w + t * K;
  float choice[kMaxExperts];
  unsigned char taken[kMaxExperts];
  if (r.scoring == RouteScoring::kSoftmax) {
    float m = -INFINITY;
    for (int e = 0; e < E; ++e) m = fmaxf(m, z[e]);
    double sum = 0.0;
    for (int e = 0; e < E; ++e) sum += expf(z[e] - m);
    const float inv = static_cast<float>(1.0 / sum);
    for (int e = 0; e < E; ++e) {
      p[e] = expf(z[e] - m) * inv;
      choice[e] = p[e];
    }
  } else {
    for (int e = 0; e < E; ++e) {
      p[e] = 1.0f / (1.0f + expf(-z[e]));
      choice[e] = p[e] + bias[e];
    }
    if (r.n_group > 1) {  // keep the topk_group groups whose best two experts score highest
      const int G = static_cast<int>(r.n_group), per = E / G;
      float group_score[64];
      unsigned char gtaken[64];
      for (int g = 0; g < G; ++g) {
        for (int i = 0; i < per; ++i) taken[i] = 0;
        const int b0 = argmax_untaken(choice + g * per, per, taken);
        float s = choice[g * per + b0];
        if (per > 1) {
          taken[b0] = 1;
          s += choice[g * per + argmax_untaken(choice + g * per, per, taken)];
        }
        group_score[g] = s;
        gtaken[g] = 0;
      }
      for (int k = 0; k < r.topk_group; ++k) gtaken[argmax_untaken(group_score, G, gtaken)] = 1;
      for (int e = 0; e < E; ++e)
        if (!gtaken[e / per]) choice[e] = -INFINITY;
    }
  }
  for (int e = 0; e < E; ++e) taken[e] = 0;
  for (int k = 0; k < K; ++k) {
    const int e = argmax_untaken(choice, E, taken);
    taken[e] = 1;
    ti[k] = e;
  }
  float sum = 0.0f;
  for (int k = 0; k < K; ++k) sum += p[ti[k]];
  if (r.scoring == RouteScoring::kSigmoid) sum += 1e-20f;
  for (int k = 0; k < K; ++k)
    tw[k] = (r.norm_topk_prob ? p[ti[k]] / sum : p[ti[k]]) * r.routed_scaling_factor;
}

__global__ void gather_kernel(float* out, const float* x, const int32_t* index, int64_t M,
                              int64_t C) {
  const int64_t n = M * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i / C, c = i % C;
    out[i] = x[static_cast<int64_t>(index[j]) * C + c];
  }
}

__global__ void combine_kernel(float* out, const float* rows, const int32_t* slot_of,
                               const float* weights, int64_t N, int64_t K, int64_t C) {
  const int64_t n = N * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / C, c = i % C;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t j = slot_of[t * K + k];
      if (j < 0) continue;
      const float v = rows[static_cast<int64_t>(j) * C + c];
      acc = weights ? __fmaf_rn(weights[t * K + k], v, acc) : acc + v;
    }
    out[i] = acc;
  }
}

// drows: one thread per (choice, column).
__global__ void combine_backward_rows_kernel(float* drows, const float* dout,
                                             const int32_t* slot_of, const float* weights,
                                             int64_t N, int64_t K, int64_t C) {
  const int64_t n = N * K * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t choice = i / C, c = i % C;
    const int32_t j = slot_of[choice];
    if (j < 0) continue;
    drows[static_cast<int64_t>(j) * C + c] = weights[choice] * dout[(choice / K) * C + c];
  }
}

// dweights: one block per choice, a fixed-shape tree over the block's double partials.
__global__ void combine_backward_weights_kernel(float* dweights, const float* dout,
                                                const float* rows, const int32_t* slot_of,
                                                int64_t K, int64_t C) {
  __shared__ double part[kThreads];
  const int64_t choice = blockIdx.x;
  const int32_t j = slot_of[choice];
  if (j < 0) {
    if (threadIdx.x == 0) dweights[choice] = 0.0f;
    return;
  }
  const float* d = dout + (choice / K) * C;
  const float* y = rows + static_cast<int64_t>(j) * C;
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) acc += static_cast<double>(d[c]) * y[c];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) dweights[choice] = static_cast<float>(part[0]);
}

// One thread per token: the CPU's arithmetic in the CPU's order, every double operation spelt
// out (__dadd_rn, __dmul_rn) so that nvcc contracts nothing into an fma.
__global__ void route_backward_kernel(float* dprobs, const float* dw, const float* probs,
                                      const int32_t* idx, int64_t N, MoeRouting r) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= N) return;
  const float* p = probs + t * r.E;
  const int32_t* ti = idx + t * r.K;
  const float* dwt = dw + t * r.K;
  float* dpt = dprobs + t * r.E;
  const double c = r.routed_scaling_factor;
  if (r.norm_topk_prob) {
    double S = 0.0, dot = 0.0;
    for (int64_t k = 0; k < r.K; ++k) S = __dadd_rn(S, static_cast<double>(p[ti[k]]));
    if (r.scoring == RouteScoring::kSigmoid) S = __dadd_rn(S, 1e-20);
    for (int64_t k = 0; k < r.K; ++k)
      dot = __dadd_rn(dot, __dmul_rn(static_cast<double>(dwt[k]), static_cast<double>(p[ti[k]])));
    const double S2 = __dmul_rn(S, S);
    for (int64_t k = 0; k < r.K; ++k) {
      const double g = __dmul_rn(c, __dsub_rn(__ddiv_rn(static_cast<double>(dwt[k]), S), __ddiv_rn(dot, S2)));
      dpt[ti[k]] = __fadd_rn(dpt[ti[k]], __double2float_rn(g));
    }
  } else {
    for (int64_t k = 0; k < r.K; ++k)
      dpt[ti[k]] = __fadd_rn(dpt[ti[k]], __double2float_rn(__dmul_rn(c, static_cast<double>(dwt[k]))));
  }
}

__global__ void iota_kernel(int32_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<int32_t>(i);
  }
}

// After a stable sort of (index[j], j) by index: the thread of (p, c) whose sorted position p
// starts a run of one index adds the run's rows, in j order, onto out[index] -- the CPU's order
// of additions for every element, with no two threads writing one element.
__global__ void scatter_runs_kernel(float* out, const float* rows, const int32_t* keys,
                                    const int32_t* js, int64_t M, int64_t C) {
  const int64_t n = M * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / C, c = i % C;
    const int32_t key = keys[p];
    if (p > 0 && keys[p - 1] == key) continue;
    float* o = out + static_cast<int64_t>(key) * C + c;
    float acc = *o;
    for (int64_t q = p; q < M && keys[q] == key; ++q)
      acc = __fadd_rn(acc, rows[static_cast<int64_t>(js[q]) * C + c]);
    *o = acc;
  }
}

}  // namespace

void moe_route_backward_f32(float* dprobs, const float* dw, const float* probs, const int32_t* idx,
                            int64_t N, const MoeRouting& r) {
  CHECK(r.K >= 1 && r.K <= r.E) << "MoE routing backward: top-" << r.K << " of " << r.E << " experts";
  if (N == 0) return;
  route_backward_kernel<<<blocks_for(N), kThreads, 0, stream()>>>(dprobs, dw, probs, idx, N, r);
  check_launch("moe route backward");
}

void scatter_add_rows_f32(float* out, const float* rows, const int32_t* index, int64_t M, int64_t C) {
  CHECK(M >= 0 && C >= 0) << "scatter_add_rows: M=" << M << " C=" << C;
  CHECK_LE(M, int64_t{INT32_MAX}) << "scatter_add_rows: more rows than an int32 index reaches";
  if (M == 0 || C == 0) return;
  // Scratch (freed once queued: the caching allocator hands it out again only to later work on
  // this stream): the sorted keys, the row numbers before and after, CUB's temporary storage.
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  const Device dev = Device::cuda(device);
  const size_t bytes = static_cast<size_t>(M) * sizeof(int32_t);
  auto* keys = static_cast<int32_t*>(device_alloc(dev, bytes));
  auto* js_in = static_cast<int32_t*>(device_alloc(dev, bytes));
  auto* js = static_cast<int32_t*>(device_alloc(dev, bytes));
  iota_kernel<<<blocks_for(M), kThreads, 0, stream()>>>(js_in, M);
  check_launch("scatter_add_rows (iota)");
  size_t temp_bytes = 0;
  CHECK_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, index, keys, js_in, js, static_cast<int>(M), 0,
                                             32, stream()));
  void* temp = device_alloc(dev, temp_bytes > 0 ? temp_bytes : 1);
  CHECK_CUDA(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, index, keys, js_in, js, static_cast<int>(M), 0, 32,
                                             stream()));
  scatter_runs_kernel<<<blocks_for(M * C), kThreads, 0, stream()>>>(out, rows, keys, js, M, C);
  check_launch("scatter_add_rows");
  for (void* p : {static_cast<void*>(keys), static_cast<void*>(js_in), static_cast<void*>(js), temp})
    device_free(dev, p);
}

void moe_route_f32(float* probs, int32_t* idx, float* w, const float* logits, const float* bias,
                   int64_t N, const MoeRouting& r) {
  CHECK(r.K >= 1 && r.K <= r.E) << "MoE routing: top-" << r.K << " of " << r.E << " experts";
  CHECK_LE(r.E, kMaxExperts) << "the CUDA router handles up to " << kMaxExperts << " experts";
  CHECK(r.n_group <= 64) << "the CUDA router handles up to 64 expert groups, got " << r.n_group;
  CHECK(r.scoring == RouteScoring::kSoftmax || bias != nullptr)
      << "MoE routing: sigmoid scoring needs the balancing bias";
  if (N == 0) return;
  route_kernel<<<blocks_for(N), kThreads, 0, stream()>>>(probs, idx, w, logits, bias, N, r);
  check_launch("moe route");
}

void gather_rows_f32(float* out, const float* x, const int32_t* index, int64_t M, int64_t C) {
  if (M * C == 0) return;
  gather_kernel<<<blocks_for(M * C), kThreads, 0, stream()>>>(out, x, index, M, C);
  check_launch("gather rows");
}

void moe_combine_f32(float* out, const float* rows, const int32_t* slot_of, const float* weights,
                     int64_t N, int64_t K, int64_t C) {
  if (N * C == 0) return;
  combine_kernel<<<blocks_for(N * C), kThreads, 0, stream()>>>(out, rows, slot_of, weights, N, K, C);
  check_launch("moe combine");
}

void moe_combine_backward_f32(float* drows, float* dweights, const float* dout, const float* rows,
                              const int32_t* slot_of, const float* weights, int64_t N, int64_t K,
                              int64_t C) {
  if (N * K == 0) return;
  if (C > 0) {
    combine_backward_rows_kernel<<<blocks_for(N * K * C), kThreads, 0, stream()>>>(
        drows, dout, slot_of, weights, N, K, C);
    check_launch("moe combine backward (rows)");
  }
  combine_backward_weights_kernel<<<static_cast<unsigned>(N * K), kThreads, 0, stream()>>>(
      dweights, dout, rows, slot_of, K, C);
  check_launch("moe combine backward (weights)");
}

}  // namespace strata::cuda
