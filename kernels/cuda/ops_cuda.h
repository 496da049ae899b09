// The CUDA backend of kernels/: every op of kernels/ops.h, kernels/moe_ops.h, kernels/optim_ops.h
// and the quantisation of kernels/quant.h, with the CPU signatures, in namespace strata::cuda
// (llm.c style: one name per op, the backend picked by the namespace). All pointers are device
// pointers (cudaMalloc or the caching allocator of core/device.h); host-side arguments are the
// sizes, scalars and the routing offsets a GEMM launch needs.
//
// Ordering: every op queues its work on the calling thread's current stream
// (set_current_stream; the legacy default stream until set) and returns without waiting, except
// the ops that return a value to the host (reductions returning double, cross-entropy's loss sum,
// quantisation stats), which wait for their own result on that stream.
//
// Numerics: each op computes the function its CPU twin documents, in fp32 with the same
// statistics precision; only summation order differs (fixed per launch shape, so results are
// reproducible run to run). tests/kernels/cuda_*_test.cc hold every op to its CPU reference
// with a per-op bound.
//
// The declarations need no CUDA headers, so host code compiles against them in every build;
// definitions exist only when the build has STRATA_CUDA (kernels/cuda/*.cu).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/moe_ops.h"
#include "kernels/optim_ops.h"
#include "kernels/quant.h"

namespace strata::cuda {

// ---- streams and library handles --------------------------------------------------------------

// The stream ops of this thread queue work on (a cudaStream_t; nullptr = legacy default stream).
void set_current_stream(void* stream);
void* current_stream();
// Waits for everything queued on the current stream; CHECKs the stream's sticky error.
void synchronize();
// CHECKs cudaGetLastError() after a launch, naming the kernel (used by every op).
void check_launch(const char* kernel);

// ---- GEMM (cuBLASLt) -----------------------------------------------------------------------------

// ops.h's gemm_f32 contract exactly, fp32 in and out with fp32 compute (CUBLAS_COMPUTE_32F: no
// TF32). Row-major operands are passed to the column-major library as their transposes.
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc);

// bf16 tensor-core GEMM: A, B bf16 (uint16_t bits, layouts as gemm_f32), C fp32, fp32
// accumulation. The CPU twin rounds both operands to bf16 (RNE) and runs gemm_f32.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C,
               int64_t ldc);

// The linear layer's fp8 GEMM y (T, N) = x (T, K) W^T with W (N, K), both E4M3 codes row-major,
// y fp32 (overwritten). Hopper's fp8 tensor cores need the "TN" form, which this is.
//   tensor scaling: x_scale, w_scale are device pointers to one float each.
//   block scaling (DeepSeek-V3): x_scale (T, ceil(K/128)) per 1x128 tile, w_scale
//     (ceil(N/128), ceil(K/128)) per 128x128 block, both row-major as quantize_tiles writes them;
//     K must be a multiple of 128 (cuBLASLt's VEC128 / BLK128x128 scale modes, CUDA >= 12.9).
// The CPU twin: dequantize both operands (q * s) and gemm_f32.
void gemm_fp8_tensor(float* y, const uint8_t* x, const float* x_scale, const uint8_t* w,
                     const float* w_scale, int64_t T, int64_t K, int64_t N);
// w_row_tiles: w_scale is (N, ceil(K/128)) per 1x128 tile of W instead of per 128x128 block
// (VEC128 for both operands: the weight-gradient GEMM, whose operands are both activations).
void gemm_fp8_block(float* y, const uint8_t* x, const float* x_scale, const uint8_t* w,
                    const float* w_scale, int64_t T, int64_t K, int64_t N, bool w_row_tiles = false);

// The bf16 tensor-core GEMM rate this GPU reaches (best of three 8192^3 gemm_bf16 after a
// warm-up, FLOP/s): the denominator of MFU when training on a GPU (measure_sgemm_peak_flops is
// the CPU's).
double measure_bf16_peak_flops();

// out (C, R) = in (R, C) transposed, row-major: the fp8 GEMMs' backward operands (Hopper's fp8
// tensor cores take only the "TN" form, so dy^T, x^T and W^T are materialised). Exact copies.
void transpose_f32(float* out, const float* in, int64_t R, int64_t C);
void transpose_u8(uint8_t* out, const uint8_t* in, int64_t R, int64_t C);

// ---- elementwise (ops.h) ------------------------------------------------------------------------

void fill_f32(float* out, float value, int64_t n);
void copy_f32(float* out, const float* x, int64_t n);
void add_f32(float* out, const float* a, const float* b, int64_t n);
void add_inplace_f32(float* y, const float* x, int64_t n);
void mul_f32(float* out, const float* a, const float* b, int64_t n);
void scale_f32(float* y, float s, int64_t n);
void axpy_f32(float* y, float a, const float* x, int64_t n);
void bias_add_f32(float* y, const float* b, int64_t rows, int64_t cols);
void bias_backward_f32(float* db, const float* dy, int64_t rows, int64_t cols);  // bitwise the CPU's
void sigmoid_backward_f32(float* dx, const float* dy, const float* y, int64_t n);
void silu_forward_f32(float* out, const float* x, int64_t n);
void silu_backward_f32(float* dx, const float* dout, const float* x, int64_t n);
void swiglu_forward_f32(float* out, const float* gate, const float* up, int64_t n);
void swiglu_backward_f32(float* dgate, float* dup, const float* dout, const float* gate,
                         const float* up, int64_t n);

// ---- reductions (ops.h); the double results wait on the current stream ---------------------------

double reduce_sum_f32(const float* x, int64_t n);
double reduce_sum_squares_f32(const float* x, int64_t n);
float reduce_amax_f32(const float* x, int64_t n);
void reduce_row_sum_f32(float* out, const float* x, int64_t rows, int64_t cols);
void reduce_row_max_f32(float* out, const float* x, int64_t rows, int64_t cols);

// ---- softmax, RMSNorm, RoPE (ops.h) -------------------------------------------------------------

void softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols);
void softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows, int64_t cols);
void log_softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols);
void log_softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows,
                              int64_t cols);
void rmsnorm_forward_f32(float* y, float* rstd, const float* x, const float* w, int64_t rows,
                         int64_t C, float eps);
// dw is accumulated (+=) as on the CPU; deterministic (no atomics).
void rmsnorm_backward_f32(float* dx, float* dw, const float* dy, const float* x, const float* w,
                          const float* rstd, int64_t rows, int64_t C);
void rope_tables_f32(float* cos, float* sin, const float* inv_freq, int64_t max_pos, int64_t D);
void rope_apply_f32(float* x, const int32_t* pos, const float* cos, const float* sin, int64_t rows,
                    int64_t H, int64_t D, bool inverse);

// ---- attention (ops.h); key_start, when given, is a device array ---------------------------------

void attention_forward_f32(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* key_start, int64_t B, int64_t T, int64_t S, int64_t S_cap,
                           int64_t Hq, int64_t Hkv, int64_t D, float scale);
void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v,
                            const int32_t* key_start, int64_t B, int64_t T, int64_t S,
                            int64_t S_cap, int64_t Hq, int64_t Hkv, int64_t D, float scale);

// ---- cross-entropy (ops.h); the forward's sum waits on the current stream -------------------------

double cross_entropy_forward_f32(float* losses, float* lse, const float* logits,
                                 const int32_t* targets, int64_t N, int64_t V);
void cross_entropy_backward_f32(float* dlogits, const float* logits, const int32_t* targets,
                                const float* lse, float scale, int64_t N, int64_t V,
                                const float* row_scale = nullptr);
void token_logprobs_f32(float* out, const float* logits, const int32_t* targets, float temperature,
                        int64_t N, int64_t V);

// ---- fp8 quantisation (quant.h); stats are counted on the device and returned ----------------------

QuantStats quantize_tiles(const float* x, uint8_t* codes, float* scales, int64_t R, int64_t C,
                          QuantTile tile, DType fmt, bool pow2);
void dequantize_tiles(const uint8_t* codes, const float* scales, float* out, int64_t R, int64_t C,
                      QuantTile tile, DType fmt);
QuantStats fake_quant_tiles(const float* x, float* out, int64_t R, int64_t C, QuantTile tile,
                            DType fmt, bool pow2, float* scales = nullptr);
// Per-tensor: the scale is given (a device float, as delayed scaling keeps it on the device).
QuantStats quantize_tensor_scaled(const float* x, uint8_t* codes, int64_t n, const float* scale,
                                  DType fmt);
QuantStats amax_f32(const float* x, int64_t n);

// ---- MoE (moe_ops.h) -----------------------------------------------------------------------------

void moe_route_f32(float* probs, int32_t* idx, float* w, const float* logits, const float* bias,
                   int64_t N, const MoeRouting& r);
void moe_route_backward_f32(float* dprobs, const float* dw, const float* probs, const int32_t* idx,
                            int64_t N, const MoeRouting& r);  // bitwise the CPU's
void gather_rows_f32(float* out, const float* x, const int32_t* index, int64_t M, int64_t C);
// Bitwise the CPU's (each row sums its sources in j order); sorts the index on the device (CUB).
void scatter_add_rows_f32(float* out, const float* rows, const int32_t* index, int64_t M, int64_t C);
void moe_combine_f32(float* out, const float* rows, const int32_t* slot_of, const float* weights,
                     int64_t N, int64_t K, int64_t C);
void moe_combine_backward_f32(float* drows, float* dweights, const float* dout, const float* rows,
                              const int32_t* slot_of, const float* weights, int64_t N, int64_t K,
                              int64_t C);
// offsets: host array (G + 1,), as moe_ops.h.
void grouped_linear_forward_f32(float* y, const float* x, const float* W, const int64_t* offsets,
                                int64_t G, int64_t K, int64_t N);
void grouped_linear_backward_input_f32(float* dx, const float* dy, const float* W,
                                       const int64_t* offsets, int64_t G, int64_t K, int64_t N);
void grouped_linear_backward_weight_f32(float* dW, const float* dy, const float* x,
                                        const int64_t* offsets, int64_t G, int64_t K, int64_t N);

// ---- optimizer (optim_ops.h) -------------------------------------------------------------------

void adamw_update_f32(float* p, const float* g, float* m, float* v, int64_t n,
                      const AdamwScalars& s);
void adamw_update_bf16(float* p, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                       const AdamwScalars& s);
// xs, ns: host arrays of `count` device pointers and lengths.
double grad_sum_squares_f32(const float* const* xs, const int64_t* ns, int64_t count);

}  // namespace strata::cuda
