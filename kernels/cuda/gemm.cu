// The GEMMs of kernels/cuda/ops_cuda.h on cuBLASLt: fp32 (no TF32), bf16 operands with fp32
// output, the linear layer's fp8 GEMM with per-tensor or DeepSeek-V3 block scales, and the MoE
// experts' grouped linear GEMMs (one GEMM per non-empty group; offsets live on the host).
//
// Row-major to column-major: a row-major (M, N) C with leading dimension ldc is, to a
// column-major library, the (N, M) matrix C^T with the same leading dimension, and
// C^T = op(B)^T op(A)^T. So every call hands cuBLASLt B as its "A" and A as its "B", with m = N,
// n = M, and each operand's trans flag unchanged (a row-major (K, N) B is the column-major
// (N, K) matrix B^T, exactly op(B)^T when B is not transposed).
//
// Library state, per device: one cublasLtHandle_t, created on first use; a 32 MiB workspace per
// (device, stream), cudaMalloc'd once and kept for the process (a workspace shared by two streams
// would be written by two GEMMs at once). The heuristic's algorithm is cached per (shape, leading
// dimensions, types, scale modes, pointer alignments); the descriptors themselves are created
// and destroyed per call, a few microseconds of host work next to the heuristic query the cache
// saves (tens of microseconds). One algorithm per problem, a fixed workspace size and no atomics
// mode (cuBLASLt has none to enable) keep results bit-identical run to run on one GPU model.
//
// Degenerate sizes follow ops.h's gemm_f32: M == 0 or N == 0 does nothing; K == 0 or
// alpha == 0 leaves C = beta * C (beta == 0 writes zeros, so NaN in C does not survive), done by
// a small kernel since cuBLASLt rejects k = 0. With beta == 0 cuBLASLt never reads C.
//
// FP8 (Hopper): E4M3 x E4M3 with fp32 D (a supported cuBLASLt combination, C = D = CUDA_R_32F,
// beta = 0), "TN" only: cuBLASLt's A is W (N, K) row-major = column-major (K, N) with op T; its
// B is x (T, K) row-major = column-major (K, T) with op N. Fast accumulation stays off (cuBLASLt
// then promotes the tensor cores' partial sums to fp32 periodically).
//   tensor scaling: CUBLASLT_MATMUL_DESC_A_SCALE_POINTER = w_scale, B_SCALE_POINTER = x_scale
//     (mode SCALAR_32F, the default). cuBLASLt wants FP8 rows 16-byte aligned, so K not a
//     multiple of 16 is zero-padded (codes 0 add nothing) into scratch.
//   block scaling (cuBLASLt >= 12.9, sm_90): A (W) in BLK128x128_32F, B (x) in VEC128_32F. The
//     scale tensors cuBLASLt expects (the layouts PyTorch's _scaled_mm checks for its DeepSeek
//     recipe, which passes them to cuBLASLt unchanged):
//       W: one scale per 128x128 block, K-block index fastest, each row of K-blocks padded to a
//          multiple of 4: ws_lt[nb * L4 + kb], L4 = round_up(L, 4), L = K / 128 -- our row-major
//          (ceil(N/128), L) with the rows padded;
//       x: one scale per 1x128 tile, "outer-dimension major" (token fastest): xs_lt[kb * T + t]
//          -- the transpose of our row-major (T, L).
//     With w_row_tiles (the weight-gradient GEMM, both operands activations) W has 1x128 tiles
//     too and both operands use VEC128: ws_lt[kb * N + n].
//     The scales are rewritten into scratch by the small kernels below. Whether cuBLASLt pads
//     the outer stride of VEC128 scales to a multiple of 4 is not documented where we could read
//     it, so a VEC128 operand's rows (T, or N with w_row_tiles) are padded to a multiple of 4
//     (zero code rows, scale 1, their output dropped): then both readings are the same layout.
//   The fp32 output's leading dimension is padded to a multiple of 4 (16 bytes) when N is not.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "kernels/cuda/ops_cuda.h"

#define CHECK_CUBLASLT(expr)                                                              \
  do {                                                                                    \
    const cublasStatus_t _strata_lt_status = (expr);                                      \
    CHECK(_strata_lt_status == CUBLAS_STATUS_SUCCESS)                                     \
        << #expr << ": " << cublasLtGetStatusName(_strata_lt_status) << " ("              \
        << cublasLtGetStatusString(_strata_lt_status) << ")";                             \
  } while (0)

namespace strata::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
constexpr int64_t kBlockTile = 128;  // DeepSeek-V3 tiles: 1x128 activations, 128x128 weights

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int current_device() {
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  return device;
}

// ---- per-device library state --------------------------------------------------------------

std::mutex& state_mutex() {
  static std::mutex m;
  return m;
}

cublasLtHandle_t lt_handle(int device) {
  static std::map<int, cublasLtHandle_t> handles;  // never destroyed: lives as long as the process
  std::lock_guard<std::mutex> lock(state_mutex());
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  CHECK_CUBLASLT(cublasLtCreate(&h));
  handles.emplace(device, h);
  return h;
}

void* lt_workspace(int device, cudaStream_t s) {
  static std::map<std::pair<int, cudaStream_t>, void*> workspaces;
  std::lock_guard<std::mutex> lock(state_mutex());
  const auto key = std::make_pair(device, s);
  auto it = workspaces.find(key);
  if (it != workspaces.end()) return it->second;
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, kWorkspaceBytes));
  workspaces.emplace(key, ws);
  return ws;
}

// Largest power of two (<= 256, cuBLASLt's default assumption) dividing the address.
int64_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int64_t al = 1;
  while (al < 256 && a % static_cast<uintptr_t>(al * 2) == 0) al *= 2;
  return al;
}

// ---- one cuBLASLt matmul -----------------------------------------------------------------------

// D (m, n, column-major, ld ldd) = alpha * op(A) op(B) + beta * D in cuBLASLt's terms; C is D.
struct LtMatmul {
  const char* op = "";  // the strata op, for messages
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  int64_t m = 0, n = 0, k = 0;
  cudaDataType_t ab_type = CUDA_R_32F;
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  float* D = nullptr;
  int64_t ldd = 0;
  float alpha = 1.0f, beta = 0.0f;
  // Scale modes (cublasLtMatmulMatrixScale_t) and device pointers; -1 = no scale attribute.
  int32_t a_scale_mode = -1, b_scale_mode = -1;
  const float* a_scale = nullptr;
  const float* b_scale = nullptr;
};

const char* type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return "f32";
    case CUDA_R_16BF: return "bf16";
    case CUDA_R_8F_E4M3: return "f8e4m3";
    default: return "?";
  }
}

const char* op_name(cublasOperation_t t) { return t == CUBLAS_OP_N ? "N" : "T"; }

// RAII for the per-call descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  MatmulDesc() { CHECK_CUBLASLT(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F)); }
  ~MatmulDesc() { CHECK_CUBLASLT(cublasLtMatmulDescDestroy(d)); }
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attr, const T& value) {
    CHECK_CUBLASLT(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
  }
};

struct MatrixLayout {
  cublasLtMatrixLayout_t l = nullptr;
  MatrixLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    CHECK_CUBLASLT(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows),
                                              static_cast<uint64_t>(cols), ld));
  }
  ~MatrixLayout() { CHECK_CUBLASLT(cublasLtMatrixLayoutDestroy(l)); }
};

struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  Preference() { CHECK_CUBLASLT(cublasLtMatmulPreferenceCreate(&p)); }
  ~Preference() { CHECK_CUBLASLT(cublasLtMatmulPreferenceDestroy(p)); }
  template <typename T>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const T& value) {
    CHECK_CUBLASLT(cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof(value)));
  }
};

using AlgoKey = std::array<int64_t, 16>;

// The heuristic's first choice for a problem, cached (bounded: cleared when it grows past
// kMaxCachedAlgos, e.g. after many distinct MoE group sizes).
constexpr size_t kMaxCachedAlgos = 4096;

cublasLtMatmulAlgo_t find_algo(const AlgoKey& key, cublasLtHandle_t h, const LtMatmul& g,
                               const MatmulDesc& desc, const MatrixLayout& a,
                               const MatrixLayout& b, const MatrixLayout& d, int64_t align_a,
                               int64_t align_b, int64_t align_d) {
  static std::map<AlgoKey, cublasLtMatmulAlgo_t> cache;
  static std::mutex cache_mutex;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(kWorkspaceBytes));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(align_a));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(align_b));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(align_d));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(align_d));
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  CHECK_CUBLASLT(cublasLtMatmulAlgoGetHeuristic(h, desc.d, a.l, b.l, d.l, d.l, pref.p, 1, &result,
                                                &found));
  CHECK(found > 0 && result.state == CUBLAS_STATUS_SUCCESS)
      << g.op << ": cuBLASLt has no algorithm for m=" << g.m << " n=" << g.n << " k=" << g.k
      << " op(A)=" << op_name(g.transa) << " op(B)=" << op_name(g.transb) << " lda=" << g.lda
      << " ldb=" << g.ldb << " ldd=" << g.ldd << " A/B " << type_name(g.ab_type)
      << ", D f32, compute f32, scale modes A=" << g.a_scale_mode << " B=" << g.b_scale_mode
      << ", alignments A=" << align_a << " B=" << align_b << " D=" << align_d << " bytes";
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= kMaxCachedAlgos) cache.clear();
  cache.emplace(key, result.algo);
  return result.algo;
}

void lt_matmul(const LtMatmul& g) {
  const int device = current_device();
  cublasLtHandle_t h = lt_handle(device);
  const cudaStream_t s = stream();

  MatmulDesc desc;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, g.transa);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, g.transb);
  if (g.a_scale_mode >= 0) desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, g.a_scale_mode);
  if (g.b_scale_mode >= 0) desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, g.b_scale_mode);
  if (g.a_scale != nullptr) {
    const void* p = g.a_scale;
    desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, p);
  }
  if (g.b_scale != nullptr) {
    const void* p = g.b_scale;
    desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, p);
  }
  // Stored shapes: op(A) is (m, k), op(B) is (k, n), D is (m, n), all column-major.
  const MatrixLayout a(g.ab_type, g.transa == CUBLAS_OP_N ? g.m : g.k,
                       g.transa == CUBLAS_OP_N ? g.k : g.m, g.lda);
  const MatrixLayout b(g.ab_type, g.transb == CUBLAS_OP_N ? g.k : g.n,
                       g.transb == CUBLAS_OP_N ? g.n : g.k, g.ldb);
  const MatrixLayout d(CUDA_R_32F, g.m, g.n, g.ldd);

  const int64_t align_a = alignment_of(g.A), align_b = alignment_of(g.B),
                align_d = alignment_of(g.D);
  const AlgoKey key = {device,
                       static_cast<int64_t>(g.transa),
                       static_cast<int64_t>(g.transb),
                       g.m,
                       g.n,
                       g.k,
                       g.lda,
                       g.ldb,
                       g.ldd,
                       static_cast<int64_t>(g.ab_type),
                       g.a_scale_mode,
                       g.b_scale_mode,
                       align_a,
                       align_b,
                       align_d,
                       (g.a_scale != nullptr ? 1 : 0) + (g.b_scale != nullptr ? 2 : 0)};
  const cublasLtMatmulAlgo_t algo =
      find_algo(key, h, g, desc, a, b, d, align_a, align_b, align_d);
  CHECK_CUBLASLT(cublasLtMatmul(h, desc.d, &g.alpha, g.A, a.l, g.B, b.l, &g.beta, g.D, d.l, g.D,
                                d.l, &algo, lt_workspace(device, s), kWorkspaceBytes, s));
}

// ---- small kernels ---------------------------------------------------------------------------

// C (M, N, ld ldc) = beta * C; beta == 0 writes zeros (NaN in C does not survive).
__global__ void scale_c_kernel(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    float* c = C + (i / N) * ldc + (i % N);
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.0f) return;
  scale_c_kernel<<<blocks_for(M * N), kThreads, 0, stream()>>>(C, M, N, ldc, beta);
  check_launch("scale_c_kernel");
}

// 1x128 scales of an operand of T rows, row-major (T, L), into cuBLASLt's VEC128 layout
// (L, Tp): out[kb * Tp + t]; rows t >= T (padding) get scale 1.
__global__ void vec128_scales_kernel(float* out, const float* xs, int64_t T, int64_t Tp,
                                     int64_t L) {
  const int64_t total = L * Tp;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t kb = i / Tp, t = i % Tp;
    out[i] = t < T ? xs[t * L + kb] : 1.0f;
  }
}

// W's 128x128 scales, row-major (NB, L), into cuBLASLt's BLK128x128 layout (NB, L4):
// out[nb * L4 + kb]; the padding columns kb >= L get scale 1.
__global__ void blk128_scales_kernel(float* out, const float* ws, int64_t NB, int64_t L,
                                     int64_t L4) {
  const int64_t total = NB * L4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t nb = i / L4, kb = i % L4;
    out[i] = kb < L ? ws[nb * L + kb] : 1.0f;
  }
}

// Device scratch from the caching allocator on this thread's stream, freed when it goes out of
// scope: the stream runs in order, so a later owner's work queues after the GEMM that used it.
class Scratch {
 public:
  Scratch(int device, size_t bytes)
      : device_(Device::cuda(device)), ptr_(device_alloc(device_, bytes)) {}
  ~Scratch() { device_free(device_, ptr_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return ptr_; }

 private:
  Device device_;
  void* ptr_;
};

// Checks shared with ops.h's gemm_f32 (kernels/cpu/gemm.cc).
void check_gemm_args(const char* op, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                     const void* A, int64_t lda, const void* B, int64_t ldb, const float* C,
                     int64_t ldc) {
  CHECK(M >= 0 && N >= 0 && K >= 0) << op << ": negative size M=" << M << " N=" << N
                                    << " K=" << K;
  const int64_t a_cols = trans_a ? M : K;
  const int64_t b_cols = trans_b ? K : N;
  CHECK_GE(lda, a_cols > 1 ? a_cols : 1) << op << ": lda too small for A (trans_a=" << trans_a
                                         << ")";
  CHECK_GE(ldb, b_cols > 1 ? b_cols : 1) << op << ": ldb too small for B (trans_b=" << trans_b
                                         << ")";
  CHECK_GE(ldc, N > 1 ? N : 1) << op << ": ldc too small for C";
  if (M > 0 && N > 0) {
    CHECK(C != nullptr) << op << ": null C for M=" << M << " N=" << N;
    if (K > 0) CHECK(A != nullptr && B != nullptr) << op << ": null A or B for K=" << K;
  }
}

// The row-major GEMM as cuBLASLt's column-major C^T = op(B)^T op(A)^T (see the top of the file).
void row_major_gemm(const char* op, cudaDataType_t type, bool trans_a, bool trans_b, int64_t M,
                    int64_t N, int64_t K, float alpha, const void* A, int64_t lda,
                    const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_gemm_args(op, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  LtMatmul g;
  g.op = op;
  g.transa = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  g.transb = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  g.m = N;
  g.n = M;
  g.k = K;
  g.ab_type = type;
  g.A = B;
  g.lda = ldb;
  g.B = A;
  g.ldb = lda;
  g.D = C;
  g.ldd = ldc;
  g.alpha = alpha;
  g.beta = beta;
  lt_matmul(g);
}

enum class Fp8Scaling { kTensor, kBlock };

// y (T, N) = x (T, K) W^T on E4M3 codes, see the top of the file for the scale layouts and the
// padding rules. w_row_tiles (block scaling only): W's scales are 1x128 tiles, (N, L).
void gemm_fp8(const char* op, Fp8Scaling scaling, float* y, const uint8_t* x,
              const float* x_scale, const uint8_t* w, const float* w_scale, int64_t T, int64_t K,
              int64_t N, bool w_row_tiles) {
  CHECK(T >= 0 && K >= 0 && N >= 0) << op << ": negative size T=" << T << " K=" << K
                                    << " N=" << N;
  const bool block = scaling == Fp8Scaling::kBlock;
  if (block) {
    CHECK_EQ(K % kBlockTile, 0) << op << ": K must be a multiple of 128 (cuBLASLt's VEC128 / "
                                   "BLK128x128 scale modes)";
  }
  if (T == 0 || N == 0) return;
  if (K == 0) {
    scale_c(T, N, 0.0f, y, N);
    return;
  }
  CHECK(y != nullptr && x != nullptr && w != nullptr && x_scale != nullptr &&
        w_scale != nullptr)
      << op << ": null pointer";
  const int device = current_device();
  const cudaStream_t s = stream();

  // Padded extents: 16-byte code rows (K); rows of VEC128 operands to a multiple of 4 (T, and N
  // with w_row_tiles); 16-byte output rows (the output's leading dimension).
  const bool w_vec128 = block && w_row_tiles;
  const int64_t Kp = round_up(K, 16);
  const int64_t Tp = block ? round_up(T, 4) : T;
  const int64_t Np = w_vec128 ? round_up(N, 4) : N;
  const int64_t ldy = round_up(N, 4);  // >= Np
  const bool pad_x = Kp != K || Tp != T || alignment_of(x) < 16;
  const bool pad_w = Kp != K || Np != N || alignment_of(w) < 16;
  const bool pad_y = ldy != N || Tp != T;

  const uint8_t* x_use = x;
  const uint8_t* w_use = w;
  float* y_use = y;
  // Scratch lives until the end of the function, after the GEMM is queued (zero bytes: none).
  Scratch x_pad(device, pad_x ? static_cast<size_t>(Tp * Kp) : 0);
  Scratch w_pad(device, pad_w ? static_cast<size_t>(Np * Kp) : 0);
  Scratch y_pad(device, pad_y ? static_cast<size_t>(Tp * ldy) * sizeof(float) : 0);
  if (pad_x) {
    CHECK_CUDA(cudaMemsetAsync(x_pad.get(), 0, static_cast<size_t>(Tp * Kp), s));
    CHECK_CUDA(cudaMemcpy2DAsync(x_pad.get(), static_cast<size_t>(Kp), x, static_cast<size_t>(K),
                                 static_cast<size_t>(K), static_cast<size_t>(T),
                                 cudaMemcpyDeviceToDevice, s));
    x_use = static_cast<const uint8_t*>(x_pad.get());
  }
  if (pad_w) {
    CHECK_CUDA(cudaMemsetAsync(w_pad.get(), 0, static_cast<size_t>(Np * Kp), s));
    CHECK_CUDA(cudaMemcpy2DAsync(w_pad.get(), static_cast<size_t>(Kp), w, static_cast<size_t>(K),
                                 static_cast<size_t>(K), static_cast<size_t>(N),
                                 cudaMemcpyDeviceToDevice, s));
    w_use = static_cast<const uint8_t*>(w_pad.get());
  }
  if (pad_y) y_use = static_cast<float*>(y_pad.get());

  LtMatmul g;
  g.op = op;
  g.transa = CUBLAS_OP_T;  // W: column-major (K, N), used as (N, K)
  g.transb = CUBLAS_OP_N;  // x: column-major (K, T)
  g.m = Np;
  g.n = Tp;
  g.k = Kp;
  g.ab_type = CUDA_R_8F_E4M3;
  g.A = w_use;
  g.lda = Kp;
  g.B = x_use;
  g.ldb = Kp;
  g.D = y_use;
  g.ldd = ldy;
  g.alpha = 1.0f;
  g.beta = 0.0f;

  const int64_t L = K / kBlockTile, L4 = round_up(L, 4);
  const int64_t NB = (N + kBlockTile - 1) / kBlockTile;
  const int64_t w_scale_count = w_vec128 ? L * Np : NB * L4;
  Scratch xs_lt(device, block ? static_cast<size_t>(L * Tp) * sizeof(float) : 0);
  Scratch ws_lt(device, block ? static_cast<size_t>(w_scale_count) * sizeof(float) : 0);
  if (block) {
    vec128_scales_kernel<<<blocks_for(L * Tp), kThreads, 0, s>>>(
        static_cast<float*>(xs_lt.get()), x_scale, T, Tp, L);
    check_launch("vec128_scales_kernel (x)");
    if (w_vec128) {
      vec128_scales_kernel<<<blocks_for(L * Np), kThreads, 0, s>>>(
          static_cast<float*>(ws_lt.get()), w_scale, N, Np, L);
      check_launch("vec128_scales_kernel (W)");
    } else {
      blk128_scales_kernel<<<blocks_for(NB * L4), kThreads, 0, s>>>(
          static_cast<float*>(ws_lt.get()), w_scale, NB, L, L4);
      check_launch("blk128_scales_kernel");
    }
    g.a_scale_mode = w_vec128 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                              : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    g.b_scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    g.a_scale = static_cast<const float*>(ws_lt.get());
    g.b_scale = static_cast<const float*>(xs_lt.get());
  } else {
    g.a_scale = w_scale;
    g.b_scale = x_scale;
  }
  lt_matmul(g);

  if (pad_y) {
    CHECK_CUDA(cudaMemcpy2DAsync(y, static_cast<size_t>(N) * sizeof(float), y_use,
                                 static_cast<size_t>(ldy) * sizeof(float),
                                 static_cast<size_t>(N) * sizeof(float), static_cast<size_t>(T),
                                 cudaMemcpyDeviceToDevice, s));
  }
}

}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  row_major_gemm("cuda::gemm_f32", CUDA_R_32F, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                 beta, C, ldc);
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta,
               float* C, int64_t ldc) {
  row_major_gemm("cuda::gemm_bf16", CUDA_R_16BF, trans_a, trans_b, M, N, K, alpha, A, lda, B,
                 ldb, beta, C, ldc);
}

void gemm_fp8_tensor(float* y, const uint8_t* x, const float* x_scale, const uint8_t* w,
                     const float* w_scale, int64_t T, int64_t K, int64_t N) {
  gemm_fp8("cuda::gemm_fp8_tensor", Fp8Scaling::kTensor, y, x, x_scale, w, w_scale, T, K, N,
           false);
}

void gemm_fp8_block(float* y, const uint8_t* x, const float* x_scale, const uint8_t* w,
                    const float* w_scale, int64_t T, int64_t K, int64_t N, bool w_row_tiles) {
  gemm_fp8("cuda::gemm_fp8_block", Fp8Scaling::kBlock, y, x, x_scale, w, w_scale, T, K, N,
           w_row_tiles);
}

// ---- grouped linear (moe_ops.h): one GEMM per non-empty group, as the CPU twin ---------------

void grouped_linear_forward_f32(float* y, const float* x, const float* W, const int64_t* offsets,
                                int64_t G, int64_t K, int64_t N) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    CHECK_GE(n, 0) << "grouped_linear_forward_f32: offsets decrease at group " << g;
    if (n > 0) {
      gemm_f32(false, true, n, N, K, 1.0f, x + r0 * K, K, W + g * N * K, K, 0.0f, y + r0 * N, N);
    }
  }
}

void grouped_linear_backward_input_f32(float* dx, const float* dy, const float* W,
                                       const int64_t* offsets, int64_t G, int64_t K, int64_t N) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    CHECK_GE(n, 0) << "grouped_linear_backward_input_f32: offsets decrease at group " << g;
    if (n > 0) {
      gemm_f32(false, false, n, K, N, 1.0f, dy + r0 * N, N, W + g * N * K, K, 0.0f, dx + r0 * K,
               K);
    }
  }
}

void grouped_linear_backward_weight_f32(float* dW, const float* dy, const float* x,
                                        const int64_t* offsets, int64_t G, int64_t K, int64_t N) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    CHECK_GE(n, 0) << "grouped_linear_backward_weight_f32: offsets decrease at group " << g;
    if (n > 0) {
      gemm_f32(true, false, N, K, n, 1.0f, dy + r0 * N, N, x + r0 * K, K, 1.0f, dW + g * N * K,
               K);
    }
  }
}

double measure_bf16_peak_flops() {
  constexpr int64_t n = 8192;
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  const Device dev = Device::cuda(device);
  const size_t ab = static_cast<size_t>(n * n) * sizeof(uint16_t), cb = static_cast<size_t>(n * n) * sizeof(float);
  auto* a = static_cast<uint16_t*>(device_alloc(dev, ab));
  auto* b = static_cast<uint16_t*>(device_alloc(dev, ab));
  auto* c = static_cast<float*>(device_alloc(dev, cb));
  const cudaStream_t s = stream();
  CHECK_CUDA(cudaMemsetAsync(a, 0, ab, s));  // zeros: the rate does not depend on the values
  CHECK_CUDA(cudaMemsetAsync(b, 0, ab, s));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  float best = 0.0f;
  for (int i = 0; i < 4; ++i) {  // the first is the warm-up (algorithm choice, workspace)
    CHECK_CUDA(cudaEventRecord(start, s));
    gemm_bf16(false, true, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    CHECK_CUDA(cudaEventRecord(stop, s));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (i > 0 && (best == 0.0f || ms < best)) best = ms;
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  for (void* p : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c)}) device_free(dev, p);
  return 2.0 * static_cast<double>(n) * n * n / (best * 1e-3);
}

}  // namespace strata::cuda
