// CUDA twins of kernels/optim_ops.h. Both are bit for bit the CPU's:
//   AdamW: each operation is the CPU's (kernels/cpu/adamw.cc) with the same rounding: the fmas
//     torch makes are explicit fmaf, every other product and sum is __fmul_rn / __fadd_rn so nvcc
//     cannot contract them, and sqrt and division are IEEE (nvcc's default -prec-sqrt/-prec-div).
//   sum of squares: the CPU's order exactly. A chunk of 2^14 elements is 8 threads, thread j
//     accumulating elements j, j+8, ... in double as the CPU's lane j; the 8 lanes are added in
//     lane order; the chunk sums come back to the host and are added in chunk, then array, order.
#include <cuda_runtime.h>

#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kNormChunk = int64_t{1} << 14;  // as kernels/cpu/adamw.cc
constexpr int kLanes = 8;

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 64 ? b : 65535 * 64);
}

struct F32Moment {
  using T = float;
  __device__ static float load(float x) { return x; }
  __device__ static float round(float x) { return x; }
  __device__ static float store(float x) { return x; }
};

// bf16 bits: decode by shifting; round to nearest even with NaN kept a quiet NaN (f32_to_bf16).
struct Bf16Moment {
  using T = uint16_t;
  __device__ static float load(uint16_t x) { return __uint_as_float(static_cast<uint32_t>(x) << 16); }
  __device__ static float round(float x) {
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __uint_as_float((u | 0x00400000u) & 0xffff0000u);
    const uint32_t lsb = (u >> 16) & 1u;
    return __uint_as_float((u + 0x7fffu + lsb) & 0xffff0000u);
  }
  __device__ static uint16_t store(float x) { return static_cast<uint16_t>(__float_as_uint(x) >> 16); }
};

template <typename Io>
__global__ void adamw_kernel(float* p, const float* g, typename Io::T* m, typename Io::T* v,
                             int64_t n, AdamwScalars s, bool low_weight) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float pi = p[i];
    if (s.decay) pi = __fmul_rn(pi, s.decay_mul);  // its own rounding, as torch's p.mul_()
    const float gi = g[i];
    const float mi = Io::load(m[i]);
    const float vi = Io::load(v[i]);
    const float d = __fsub_rn(gi, mi);
    const float m_new = Io::round(low_weight ? fmaf(s.w, d, mi) : fmaf(-d, s.one_minus_w, gi));
    const float v_new = Io::round(fmaf(__fmul_rn(s.c2, gi), gi, __fmul_rn(vi, s.b2)));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v_new), s.bc2_sqrt), s.eps);
    p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step, m_new), denom));
    m[i] = Io::store(m_new);
    v[i] = Io::store(v_new);
  }
}

// One array of the norm: where its elements and its chunk sums live.
struct NormArray {
  const float* x;
  int64_t n;
  int64_t first_chunk;  // index of its first chunk in the partials
};

// One thread per (chunk, lane); lane sums land in lanes[chunk * 8 + lane].
__global__ void sum_squares_lanes_kernel(double* lanes, const NormArray* arrays, int count,
                                         int64_t total_chunks) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t chunk = tid / kLanes;
  const int lane = static_cast<int>(tid % kLanes);
  if (chunk >= total_chunks) return;
  int a = 0;  // the array owning this chunk: arrays are few, chunks many; a short scan
  while (a + 1 < count && arrays[a + 1].first_chunk <= chunk) ++a;
  const NormArray arr = arrays[a];
  const int64_t begin = (chunk - arr.first_chunk) * kNormChunk;
  const int64_t end = min(arr.n, begin + kNormChunk);
  double acc = 0.0;
  for (int64_t i = begin + lane; i < end; i += kLanes) {
    const double xi = arr.x[i];
    acc = __dadd_rn(acc, __dmul_rn(xi, xi));
  }
  lanes[tid] = acc;
}

}  // namespace

void adamw_update_f32(float* p, const float* g, float* m, float* v, int64_t n,
                      const AdamwScalars& s) {
  if (n == 0) return;
  adamw_kernel<F32Moment><<<blocks_for(n), kThreads, 0, stream()>>>(p, g, m, v, n, s, s.w < 0.5f);
  check_launch("adamw (fp32 moments)");
}

void adamw_update_bf16(float* p, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                       const AdamwScalars& s) {
  if (n == 0) return;
  adamw_kernel<Bf16Moment><<<blocks_for(n), kThreads, 0, stream()>>>(p, g, m, v, n, s, s.w < 0.5f);
  check_launch("adamw (bf16 moments)");
}

double grad_sum_squares_f32(const float* const* xs, const int64_t* ns, int64_t count) {
  std::vector<NormArray> arrays;
  int64_t chunks = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (ns[i] == 0) continue;
    arrays.push_back({xs[i], ns[i], chunks});
    chunks += (ns[i] + kNormChunk - 1) / kNormChunk;
  }
  if (chunks == 0) return 0.0;
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  const Device gpu = Device::cuda(device);
  const Stream st{gpu, current_stream()};
  const size_t table_bytes = arrays.size() * sizeof(NormArray);
  const size_t lane_bytes = static_cast<size_t>(chunks * kLanes) * sizeof(double);
  void* table = device_alloc(gpu, table_bytes);
  void* lanes = device_alloc(gpu, lane_bytes);
  device_copy(table, gpu, arrays.data(), Device::cpu(), table_bytes, st);
  sum_squares_lanes_kernel<<<blocks_for(chunks * kLanes), kThreads, 0, stream()>>>(
      static_cast<double*>(lanes), static_cast<const NormArray*>(table),
      static_cast<int>(arrays.size()), chunks);
  check_launch("gradient sum of squares");
  std::vector<double> host(static_cast<size_t>(chunks * kLanes));
  device_copy(host.data(), Device::cpu(), lanes, gpu, lane_bytes, st);  // waits on the stream
  device_free(gpu, lanes);
  device_free(gpu, table);
  // The CPU's order: lanes of a chunk in lane order, chunks of an array, then arrays.
  double total = 0.0;
  for (size_t a = 0; a < arrays.size(); ++a) {
    const int64_t end = a + 1 < arrays.size() ? arrays[a + 1].first_chunk : chunks;
    double array_sum = 0.0;
    for (int64_t c = arrays[a].first_chunk; c < end; ++c) {
      double chunk_sum = 0.0;
      for (int j = 0; j < kLanes; ++j) chunk_sum += host[static_cast<size_t>(c * kLanes + j)];
      array_sum += chunk_sum;
    }
    total += array_sum;
  }
  return total;
}

}  // namespace strata::cuda
