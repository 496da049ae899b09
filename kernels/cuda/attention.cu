// CUDA twin of ops.h's causal grouped-query attention core, forward and backward, fp32 throughout
// (CPU reference: kernels/cpu/attention.cc).
//
// Shapes: q, out, dq, dout (B, T, Hq, D); k, v, dk, dv (B, S_cap, Hkv, D), the first S rows of each
// batch valid; lse (B, Hq, T); key_start (B,) device int32 or null. Query t of batch b sees the
// keys key_start[b] <= j <= S - T + t; query head h uses kv head h / (Hq / Hkv).
//
// These are the plain, deterministic kernels, written for correctness: one block per query row
// (forward, dq) or per key row (dk, dv), a warp per dot product over D (lanes strided over D, then
// a fixed butterfly of shuffles), and every sum over keys or queries taken in index order, so the
// result is a function of the inputs and the shapes alone. Nothing is sized by S: keys are
// scored in chunks of kChunk through shared memory, and the forward scores each key twice (once
// for the row max, once for exp(s - max)) instead of storing a row. A flash-attention style tiled
// kernel (Q, K, V tiles in shared memory, online softmax, tensor cores) and split-K decoding
// (T = 1 over long caches) are the later fast paths; these stay as their reference.
//
// Numerics follow the CPU: scores s = (q . k) * scale in fp32, the softmax after subtracting the
// row max with expf (not __expf), the row sum of exp in double, out = (sum_j p_j v_j) * (1 / sum),
// lse = max + log(sum) in double then rounded. Backward recomputes p = exp(s - lse),
// dS = p * (dout . v - D_i) with D_i = dout . out, dq = scale * sum_j dS_j k_j,
// dk_j = scale * sum_(t, h) dS q, dv_j = sum_(t, h) p dout (no atomics: dk, dv are owned by the
// block of key j, which loops over the queries and the heads of its group in a fixed order).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"  // device_alloc, device_free (the D_i scratch)
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 64;  // keys (forward, dq) or query rows (dk, dv) per shared-memory pass
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid cap; blocks loop over the remaining units
constexpr int64_t kMaxD = 2048;  // shared memory holds up to 4 rows of D floats (32 KiB)

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

// Sizes and the offsets of rows in the row-major tensors (as the CPU's Dims).
struct Dims {
  int64_t B, T, S, S_cap, Hq, Hkv, D;
  int64_t G;  // query heads per kv head
  float scale;

  // Offsets of query t of head h in batch b (q, out, dq, dout), and of key j of kv head g.
  __device__ int64_t q_at(int64_t b, int64_t t, int64_t h) const {
    return ((b * T + t) * Hq + h) * D;
  }
  __device__ int64_t kv_at(int64_t b, int64_t j, int64_t g) const {
    return ((b * S_cap + j) * Hkv + g) * D;
  }
  // Offset of (b, h, t) in lse and in the D_i scratch.
  __device__ int64_t lse_at(int64_t b, int64_t h, int64_t t) const { return (b * Hq + h) * T + t; }
  // First key of batch row b (a negative key_start masks nothing, as 0 would).
  __device__ int64_t key_begin(const int32_t* key_start, int64_t b) const {
    return key_start == nullptr ? 0 : max(int64_t{0}, static_cast<int64_t>(key_start[b]));
  }
  // Keys visible to query t: [ks, ks + count), count = max(0, S - T + t + 1 - ks).
  __device__ int64_t visible(int64_t t, int64_t ks) const {
    return max(int64_t{0}, S - T + t + 1 - ks);
  }
};

Dims make_dims(const char* op, int64_t B, int64_t T, int64_t S, int64_t S_cap, int64_t Hq,
               int64_t Hkv, int64_t D, float scale) {
  CHECK(B >= 0 && T >= 0 && S >= 0 && D > 0 && Hkv > 0 && Hq > 0)
      << op << ": B=" << B << " T=" << T << " S=" << S << " Hq=" << Hq << " Hkv=" << Hkv
      << " D=" << D;
  CHECK_LE(S, S_cap) << op << ": more valid keys than the buffer holds";
  CHECK_EQ(Hq % Hkv, 0) << op << ": Hq=" << Hq << " is not a multiple of Hkv=" << Hkv;
  CHECK_LE(D, kMaxD) << op << ": head dimension beyond what these kernels keep in shared memory";
  return Dims{B, T, S, S_cap, Hq, Hkv, D, Hq / Hkv, scale};
}

inline unsigned grid_for(int64_t units) {
  return static_cast<unsigned>(units < kMaxBlocks ? units : kMaxBlocks);
}

__device__ inline float neg_inf() { return __uint_as_float(0xff800000u); }

// a . b over n floats by one warp: lane l sums a[d] * b[d] for d = l, l + 32, ... with fmaf, then
// a butterfly of shuffles adds the lanes; every lane returns the same value (addition commutes,
// so both sides of each exchange compute the same sum). All 32 lanes must call it.
__device__ inline float warp_dot(const float* a, const float* b, int64_t n, int lane) {
  float acc = 0.0f;
  for (int64_t d = lane; d < n; d += 32) acc = fmaf(a[d], b[d], acc);
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  return acc;
}

// ---- forward ----

// One block per query row u = (b, h, t). Shared: qs (D,) the query, acc (D,) the unnormalised
// output, p (kChunk,) the probabilities of the chunk of keys being summed.
__global__ void attention_forward_kernel(float* out, float* lse, const float* q, const float* k,
                                         const float* v, const int32_t* key_start, Dims d) {
  extern __shared__ float smem[];
  float* qs = smem;
  float* acc = smem + d.D;
  float* p = smem + 2 * d.D;
  __shared__ float warp_max[kWarps];
  __shared__ double row_sum;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t units = d.B * d.Hq * d.T;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t t = u % d.T, h = (u / d.T) % d.Hq, b = u / (d.T * d.Hq);
    const int64_t g = h / d.G;
    const int64_t ks = d.key_begin(key_start, b);
    const int64_t nvis = d.visible(t, ks);
    float* o = out + d.q_at(b, t, h);
    if (nvis == 0) {  // the same for the whole block: no barrier is skipped by some threads only
      for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) o[i] = 0.0f;
      if (threadIdx.x == 0) lse[d.lse_at(b, h, t)] = neg_inf();
      continue;
    }
    __syncthreads();  // the previous row's readers of shared memory are done
    const float* qr = q + d.q_at(b, t, h);
    for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
      qs[i] = qr[i];
      acc[i] = 0.0f;
    }
    __syncthreads();

    // Pass 1: the row max. fmaxf skips a NaN score, but exp(NaN - m) below still turns the
    // row into NaN, as on the CPU.
    float m = neg_inf();
    for (int64_t j = warp; j < nvis; j += kWarps) {
      const float s = warp_dot(qs, k + d.kv_at(b, ks + j, g), d.D, lane) * d.scale;
      m = fmaxf(m, s);
    }
    if (lane == 0) warp_max[warp] = m;
    __syncthreads();
    m = warp_max[0];
    for (int w = 1; w < kWarps; ++w) m = fmaxf(m, warp_max[w]);

    // Pass 2: p = exp(s - m) chunk by chunk; acc += p v in key order; the sum of p in double, in
    // key order, by thread 0.
    double sum = 0.0;
    for (int64_t c0 = 0; c0 < nvis; c0 += kChunk) {
      const int64_t n = min(int64_t{kChunk}, nvis - c0);
      for (int64_t jj = warp; jj < n; jj += kWarps) {
        const float s = warp_dot(qs, k + d.kv_at(b, ks + c0 + jj, g), d.D, lane) * d.scale;
        if (lane == 0) p[jj] = expf(s - m);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        for (int64_t jj = 0; jj < n; ++jj) sum += p[jj];
      }
      const float* vc = v + d.kv_at(b, ks + c0, g);
      const int64_t v_ld = d.Hkv * d.D;  // floats between consecutive keys
      for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
        float a = acc[i];
        for (int64_t jj = 0; jj < n; ++jj) a = fmaf(p[jj], vc[jj * v_ld + i], a);
        acc[i] = a;
      }
      __syncthreads();  // p is rewritten by the next chunk
    }
    if (threadIdx.x == 0) {
      row_sum = sum;
      lse[d.lse_at(b, h, t)] = static_cast<float>(static_cast<double>(m) + log(sum));
    }
    __syncthreads();
    const float inv = static_cast<float>(1.0 / row_sum);
    for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) o[i] = acc[i] * inv;
  }
}

// ---- backward ----

// di (B, Hq, T) = rowsum(dout * out) of each query row, one warp per row.
__global__ void attention_di_kernel(float* di, const float* dout, const float* out, Dims d) {
  const int lane = threadIdx.x & 31;
  const int64_t units = d.B * d.Hq * d.T;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); u < units;
       u += warps) {
    const int64_t t = u % d.T, h = (u / d.T) % d.Hq, b = u / (d.T * d.Hq);
    const float r = warp_dot(dout + d.q_at(b, t, h), out + d.q_at(b, t, h), d.D, lane);
    if (lane == 0) di[d.lse_at(b, h, t)] = r;
  }
}

// dq of one query row per block, u = (b, h, t): dq = scale * sum_j p_j (dp_j - D_i) k_j over the
// visible keys in order. Shared: qs, dos (D,) the query and its output gradient, acc (D,), ds
// (kChunk,).
__global__ void attention_dq_kernel(float* dq, const float* dout, const float* lse,
                                    const float* di, const float* q, const float* k,
                                    const float* v, const int32_t* key_start, Dims d) {
  extern __shared__ float smem[];
  float* qs = smem;
  float* dos = smem + d.D;
  float* acc = smem + 2 * d.D;
  float* ds = smem + 3 * d.D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t units = d.B * d.Hq * d.T;
  const int64_t k_ld = d.Hkv * d.D;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t t = u % d.T, h = (u / d.T) % d.Hq, b = u / (d.T * d.Hq);
    const int64_t g = h / d.G;
    const int64_t ks = d.key_begin(key_start, b);
    const int64_t nvis = d.visible(t, ks);
    float* dqr = dq + d.q_at(b, t, h);
    if (nvis == 0) {  // uniform over the block
      for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) dqr[i] = 0.0f;
      continue;
    }
    __syncthreads();  // the previous row's readers of shared memory are done
    for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
      qs[i] = q[d.q_at(b, t, h) + i];
      dos[i] = dout[d.q_at(b, t, h) + i];
      acc[i] = 0.0f;
    }
    __syncthreads();
    const float l = lse[d.lse_at(b, h, t)];
    const float dii = di[d.lse_at(b, h, t)];
    for (int64_t c0 = 0; c0 < nvis; c0 += kChunk) {
      const int64_t n = min(int64_t{kChunk}, nvis - c0);
      for (int64_t jj = warp; jj < n; jj += kWarps) {
        const int64_t at = d.kv_at(b, ks + c0 + jj, g);
        const float s = warp_dot(qs, k + at, d.D, lane) * d.scale;
        const float dp = warp_dot(dos, v + at, d.D, lane);
        if (lane == 0) ds[jj] = expf(s - l) * (dp - dii);
      }
      __syncthreads();
      const float* kc = k + d.kv_at(b, ks + c0, g);
      for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
        float a = acc[i];
        for (int64_t jj = 0; jj < n; ++jj) a = fmaf(ds[jj], kc[jj * k_ld + i], a);
        acc[i] = a;
      }
      __syncthreads();  // ds is rewritten by the next chunk
    }
    for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) dqr[i] = acc[i] * d.scale;
  }
}

// dk, dv of one key row per block, u = (b, g, j) for j < S: the sum over the query rows that see
// key j, t = max(0, j - (S - T)) .. T - 1 and the G heads of the group, in that order (row
// r = (t - t_min) * G + i is query t of head g * G + i). A key before key_start gets zeros.
// Shared: kj, vj (D,) the key and value, dk_acc, dv_acc (D,), p, ds, row_at (kChunk,) of the
// chunk of query rows being summed.
__global__ void attention_dkdv_kernel(float* dk, float* dv, const float* dout, const float* lse,
                                      const float* di, const float* q, const float* k,
                                      const float* v, const int32_t* key_start, Dims d) {
  extern __shared__ float smem[];
  float* kj = smem;
  float* vj = smem + d.D;
  float* dk_acc = smem + 2 * d.D;
  float* dv_acc = smem + 3 * d.D;
  float* p = smem + 4 * d.D;
  float* ds = p + kChunk;
  __shared__ int64_t row_at[kChunk];  // offset of each query row of the chunk in q and dout
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t units = d.B * d.Hkv * d.S;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t j = u % d.S, g = (u / d.S) % d.Hkv, b = u / (d.S * d.Hkv);
    const int64_t ks = d.key_begin(key_start, b);
    const int64_t at = d.kv_at(b, j, g);
    const int64_t t_min = max(int64_t{0}, j - (d.S - d.T));
    const int64_t rows = j < ks ? 0 : (d.T - t_min) * d.G;
    if (rows == 0) {  // uniform over the block
      for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
        dk[at + i] = 0.0f;
        dv[at + i] = 0.0f;
      }
      continue;
    }
    __syncthreads();  // the previous key's readers of shared memory are done
    for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
      kj[i] = k[at + i];
      vj[i] = v[at + i];
      dk_acc[i] = 0.0f;
      dv_acc[i] = 0.0f;
    }
    __syncthreads();
    for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
      const int64_t n = min(int64_t{kChunk}, rows - r0);
      for (int64_t rr = warp; rr < n; rr += kWarps) {
        const int64_t t = t_min + (r0 + rr) / d.G, h = g * d.G + (r0 + rr) % d.G;
        const int64_t qa = d.q_at(b, t, h);
        const float s = warp_dot(q + qa, kj, d.D, lane) * d.scale;
        const float dp = warp_dot(dout + qa, vj, d.D, lane);
        if (lane == 0) {
          const float pr = expf(s - lse[d.lse_at(b, h, t)]);
          p[rr] = pr;
          ds[rr] = pr * (dp - di[d.lse_at(b, h, t)]);
          row_at[rr] = qa;
        }
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
        float a = dk_acc[i], c = dv_acc[i];
        for (int64_t rr = 0; rr < n; ++rr) {
          a = fmaf(ds[rr], q[row_at[rr] + i], a);
          c = fmaf(p[rr], dout[row_at[rr] + i], c);
        }
        dk_acc[i] = a;
        dv_acc[i] = c;
      }
      __syncthreads();  // p, ds are rewritten by the next chunk
    }
    for (int64_t i = threadIdx.x; i < d.D; i += blockDim.x) {
      dk[at + i] = dk_acc[i] * d.scale;
      dv[at + i] = dv_acc[i];
    }
  }
}

}  // namespace

void attention_forward_f32(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* key_start, int64_t B, int64_t T, int64_t S, int64_t S_cap,
                           int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  const Dims d = make_dims("attention_forward", B, T, S, S_cap, Hq, Hkv, D, scale);
  const int64_t units = B * Hq * T;
  if (units == 0) return;
  const size_t smem = static_cast<size_t>(2 * D + kChunk) * sizeof(float);
  attention_forward_kernel<<<grid_for(units), kThreads, smem, stream()>>>(out, lse, q, k, v,
                                                                         key_start, d);
  check_launch("attention_forward_kernel");
}

void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v,
                            const int32_t* key_start, int64_t B, int64_t T, int64_t S,
                            int64_t S_cap, int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  const Dims d = make_dims("attention_backward", B, T, S, S_cap, Hq, Hkv, D, scale);
  const int64_t q_rows = B * Hq * T, k_rows = B * Hkv * S;
  if (q_rows == 0 && k_rows == 0) return;
  // D_i of every query row, (B, Hq, T): scratch freed once queued (the caching allocator hands
  // it out again only to work queued after these kernels on this stream).
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  float* di = nullptr;
  if (q_rows > 0) {
    di = static_cast<float*>(device_alloc(Device::cuda(device), q_rows * sizeof(float)));
    attention_di_kernel<<<grid_for((q_rows + kWarps - 1) / kWarps), kThreads, 0, stream()>>>(
        di, dout, out, d);
    check_launch("attention_di_kernel");
    const size_t smem = static_cast<size_t>(3 * D + kChunk) * sizeof(float);
    attention_dq_kernel<<<grid_for(q_rows), kThreads, smem, stream()>>>(dq, dout, lse, di, q, k,
                                                                        v, key_start, d);
    check_launch("attention_dq_kernel");
  }
  if (k_rows > 0) {  // T == 0 still zeroes the first S rows of dk, dv, as on the CPU
    const size_t smem = static_cast<size_t>(4 * D + 2 * kChunk) * sizeof(float);
    attention_dkdv_kernel<<<grid_for(k_rows), kThreads, smem, stream()>>>(dk, dv, dout, lse, di,
                                                                          q, k, v, key_start, d);
    check_launch("attention_dkdv_kernel");
  }
  if (di != nullptr) device_free(Device::cuda(device), di);
}

}  // namespace strata::cuda
