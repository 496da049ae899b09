// Every op of kernels/, declared once. The CPU implementations live in kernels/cpu/ (OpenBLAS for
// GEMM, plain loops that GCC vectorises elsewhere); CUDA versions in kernels/cuda/ take the same
// raw pointer signatures, llm.c style, so model code calls one name whatever the backend. The
// linear layer under a precision policy (bf16, fp8) is kernels/precision/, not here.
//
// Glossary of the shapes in the comments (row-major, contiguous unless a leading dimension says
// otherwise):
//   M, N, K     GEMM extents: op(A) is (M, K), op(B) is (K, N), C is (M, N)
//   lda/ldb/ldc leading dimension: the distance in elements between consecutive rows as stored
//   n           number of elements of a flat array
//   rows, cols  a matrix processed row by row (a reduction or softmax runs along cols)
//   C           channels (model width) of a normalised row
//   H, D        heads and head dimension (RoPE); attention has Hq query and Hkv key/value heads
//   B, T, S     batch rows, queries per row, valid keys per row (S_cap: the key buffer's length)
//   N, V        rows of logits and the vocabulary size (cross-entropy)
//
// Conventions: `out` arguments come first. An output may alias an input exactly (in place) but
// never partially. Backward ops overwrite their input gradients (activation gradients; parameter
// gradients are accumulated by the callers, with axpy/add_inplace). Sizes may be 0.
#pragma once

#include <cstdint>

#include "core/tensor.h"  // Tensor, for the gemm convenience overload

namespace strata {

// ---- GEMM -----------------------------------------------------------------------------------

// C = alpha * op(A) @ op(B) + beta * C, row-major, fp32, via OpenBLAS (cblas_sgemm).
//   A: (M, K) with lda >= K, or stored (K, M) with lda >= M when trans_a
//   B: (K, N) with ldb >= N, or stored (N, K) with ldb >= K when trans_b
//   C: (M, N) with ldc >= N
// BLAS semantics: beta == 0 overwrites C (NaN or Inf already in C does not leak through);
// K == 0 or alpha == 0 leaves C = beta * C; M == 0 or N == 0 does nothing.
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc);

// The same contract as a plain triple loop accumulating in double: the reference the tests hold
// gemm_f32 (and the CUDA GEMMs) to. Slow; never call it from model code.
void gemm_reference_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc);

// Tensor convenience over gemm_f32 for contiguous f32 CPU tensors. Each operand is read as a
// matrix (rows = product of all but the last dimension, cols = the last), so activations of shape
// (B, T, C) can be passed without a view:
//   A: (M, K), or (K, M) when trans_a     B: (K, N), or (N, K) when trans_b     C: (M, N)
// Mismatched shapes, dtypes or devices are CHECK failures that print the shapes.
void gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, Tensor& C,
          float alpha = 1.0f, float beta = 0.0f);

// OpenBLAS keeps its thread count in process-wide state, and its default (all cores) is wrong
// when several MPI ranks share a machine, so every entry point sets it explicitly. The same number
// bounds the threads the CPU kernels below start (softmax rows, attention heads), so one knob
// governs the process.
void set_blas_threads(int n);  // n >= 1
int blas_threads();

// The fp32 GEMM rate this machine reaches with the current BLAS thread count (best of a few
// 1024^3 sgemms, in FLOP/s): the denominator of MFU on CPU, shared by the trainer and benchmarks.
double measure_sgemm_peak_flops();

// ---- elementwise (all arrays: (n,)) ------------------------------------------------------------

void fill_f32(float* out, float value, int64_t n);                    // out = value
void copy_f32(float* out, const float* x, int64_t n);                 // out = x
void add_f32(float* out, const float* a, const float* b, int64_t n);  // out = a + b
void add_inplace_f32(float* y, const float* x, int64_t n);            // y += x
void mul_f32(float* out, const float* a, const float* b, int64_t n);  // out = a * b
void scale_f32(float* y, float s, int64_t n);                         // y *= s
void axpy_f32(float* y, float a, const float* x, int64_t n);          // y += a * x

// Bias rows: y (rows, cols) += b (cols,) on every row; its backward db (cols,) += the column
// sums of dy (rows, cols), each column summed over rows in order (deterministic).
void bias_add_f32(float* y, const float* b, int64_t rows, int64_t cols);
void bias_backward_f32(float* db, const float* dy, int64_t rows, int64_t cols);

// The backward of y = sigmoid(x) from its output: dx = dy * y * (1 - y).
void sigmoid_backward_f32(float* dx, const float* dy, const float* y, int64_t n);

// silu(x) = x * sigmoid(x).
void silu_forward_f32(float* out, const float* x, int64_t n);
// dx = dout * silu'(x), silu'(x) = s * (1 + x * (1 - s)) with s = sigmoid(x).
void silu_backward_f32(float* dx, const float* dout, const float* x, int64_t n);

// The SwiGLU MLP's gate: out = silu(gate) * up (gate and up are the two halves of the first
// projection, each (n,) here; the caller flattens (tokens, hidden)).
void swiglu_forward_f32(float* out, const float* gate, const float* up, int64_t n);
// dgate = dout * up * silu'(gate), dup = dout * silu(gate); both overwritten.
void swiglu_backward_f32(float* dgate, float* dup, const float* dout, const float* gate,
                         const float* up, int64_t n);

// ---- reductions -------------------------------------------------------------------------------
// Flat reductions accumulate in double in a fixed order (8 interleaved lanes, then the tail), so
// the result depends only on the data, never on thread counts: gradient norms and loss sums must
// agree bit for bit across runs and layouts that see the same numbers.

double reduce_sum_f32(const float* x, int64_t n);          // sum x; 0 when n == 0
double reduce_sum_squares_f32(const float* x, int64_t n);  // sum x^2; 0 when n == 0
// max |x|, NaN if any element is NaN (an FP8 scale computed from a NaN amax must not look fine);
// 0 when n == 0.
float reduce_amax_f32(const float* x, int64_t n);
// x: (rows, cols) -> out: (rows,). Row sums accumulate in double; an empty row sums to 0.
void reduce_row_sum_f32(float* out, const float* x, int64_t rows, int64_t cols);
// x: (rows, cols) -> out: (rows,). NaN-propagating; an empty row gives -inf.
void reduce_row_max_f32(float* out, const float* x, int64_t rows, int64_t cols);

// ---- softmax (x, y, dx, dy: (rows, cols); along cols) -----------------------------------------
// Computed in fp32 after subtracting the row max. A row that is entirely -inf (a fully masked
// attention row) gives zeros from softmax and -inf from log_softmax: no NaN, and its backward
// passes nothing (softmax) or dy unchanged (log_softmax). A row holding +inf or NaN gives NaN.
// Rows are split over up to blas_threads() threads when the matrix is large; each row is computed
// by one thread in a fixed order, so results do not depend on the thread count.

void softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols);
// dx = y * (dy - sum_cols(dy * y)), from the forward's output y.
void softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows, int64_t cols);

// y = x - max - log(sum exp(x - max)).
void log_softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols);
// dx = dy - exp(y) * sum_cols(dy), from the forward's output y.
void log_softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows,
                              int64_t cols);

// ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, statistics in fp32 -------------------------
// As Hugging Face's LlamaRMSNorm: variance = x.pow(2).mean(-1), x * rsqrt(variance + eps), then
// times weight. The sum of squares accumulates in double (it costs nothing next to the loads).
// Rows are split over threads when large; dw's columns likewise, each summed over rows in order.

// x, y: (rows, C); w: (C,); rstd: (rows,) = 1 / sqrt(mean(x^2) + eps), saved for backward.
// y may alias x exactly.
void rmsnorm_forward_f32(float* y, float* rstd, const float* x, const float* w, int64_t rows,
                         int64_t C, float eps);
// dx: (rows, C) overwritten; dw: (C,) ACCUMULATED (+=); dy, x: (rows, C); w: (C,); rstd: (rows,)
// from forward. dx may alias dy exactly.
void rmsnorm_backward_f32(float* dx, float* dw, const float* dy, const float* x, const float* w,
                          const float* rstd, int64_t rows, int64_t C);

// ---- RoPE, Hugging Face rotate_half layout: pairs (i, i + D/2) -----------------------------
// D (the head dimension) must be even. The tables hold D/2 angles per position; HF's
// emb = cat(freqs, freqs) duplicates them, which is why half of the table is enough.

// cos, sin: (max_pos, D/2); inv_freq: (D/2,). angle[p][i] = float(p) * inv_freq[i] rounded to
// fp32, then cos and sin in fp32, as HF computes freqs = inv_freq @ position_ids in fp32.
void rope_tables_f32(float* cos, float* sin, const float* inv_freq, int64_t max_pos, int64_t D);
// x: (rows, H, D) rotated in place; pos: (rows,) position of each row (int32, 0 <= pos < the
// tables' max_pos); cos, sin: (max_pos, D/2) from rope_tables_f32.
// Forward: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin (x1 = x[..., :D/2], x2 = x[..., D/2:]).
// inverse = true applies the transpose rotation (the backward: dx from dy, in place).
void rope_apply_f32(float* x, const int32_t* pos, const float* cos, const float* sin, int64_t rows,
                    int64_t H, int64_t D, bool inverse);

// ---- causal grouped-query attention core (softmax in fp32) ---------------------------------
// Shapes (all row-major): B batch, T queries per row, S valid keys per row (S >= T, or the
// first T - S queries see nothing), S_cap the key buffer's length per row (S_cap >= S), Hq query
// heads, Hkv key/value heads (Hq a multiple of Hkv: query head h uses kv head h / (Hq / Hkv)),
// D head dimension.
// Query t sits at key index S - T + t and attends to the keys j with
// key_start[b] <= j <= S - T + t (key_start masks the left padding of batch row b; nullptr means
// all 0). A query row with no visible key outputs zeros and has lse = -inf. Scores, softmax and
// the products run in fp32 (OpenBLAS for T > 1, per query tiles so that a causal block skips the
// keys no query of the tile sees; plain loops for a decode step, T = 1). Work is split over up to
// blas_threads() threads by (batch, kv head) and, forward, query tile; OpenBLAS's own thread
// count is 1 while these run (restored on return). Every output has one fixed computation order,
// so results do not depend on the thread count. scale = 1/sqrt(D) usually.

// q: (B, T, Hq, D); k, v: (B, S_cap, Hkv, D), the first S rows of each batch valid;
// key_start: (B,) or nullptr. out: (B, T, Hq, D); lse: (B, Hq, T) log-sum-exp of the scaled
// scores of each query row, saved for backward.
void attention_forward_f32(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* key_start, int64_t B, int64_t T, int64_t S, int64_t S_cap,
                           int64_t Hq, int64_t Hkv, int64_t D, float scale);
// dq: (B, T, Hq, D) overwritten; dk, dv: (B, S_cap, Hkv, D) overwritten in the first S rows of
// each batch (rows S..S_cap-1 untouched; keys no query sees get zeros); dout, out: (B, T, Hq, D);
// lse: (B, Hq, T) from forward; q, k, v, key_start as in forward. Flash-attention style: the
// probabilities are recomputed from lse, and D_i = rowsum(dout * out).
void attention_backward_f32(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v,
                            const int32_t* key_start, int64_t B, int64_t T, int64_t S,
                            int64_t S_cap, int64_t Hq, int64_t Hkv, int64_t D, float scale);

// ---- softmax + cross-entropy fused, fp32, over a vocabulary -------------------------------
// N rows of V logits. A negative target masks its row (no loss, zero gradient, lse not computed
// and stored as 0); a target >= V is a CHECK failure. Row sums of exp accumulate in double; rows
// are split over threads when large, the returned sum is taken in row order.

// logits: (N, V); targets: (N,) int32. losses: (N,) per-row -log softmax(logits)[target] (0 for
// masked rows); lse: (N,) log-sum-exp of each row, saved for backward. Returns the sum of the
// losses (in double, in row order).
double cross_entropy_forward_f32(float* losses, float* lse, const float* logits,
                                 const int32_t* targets, int64_t N, int64_t V);
// dlogits: (N, V) overwritten = (softmax(logits) - onehot(target)) * scale for unmasked rows, 0
// for masked rows; logits: (N, V); targets: (N,); lse: (N,) from forward. scale is
// d(loss)/d(sum of losses), e.g. 1 / (global count of target tokens). dlogits may alias logits.
// row_scale (optional, (N,)): a per-row factor on top of scale (policy-gradient losses weight
// each token's -log p by its own, possibly negative, coefficient).
void cross_entropy_backward_f32(float* dlogits, const float* logits, const int32_t* targets,
                                const float* lse, float scale, int64_t N, int64_t V,
                                const float* row_scale = nullptr);
// Log-probability of each target under softmax(logits / temperature) (GRPO's log-probs):
// out: (N,); logits: (N, V); targets: (N,) (negative = masked, gives 0); temperature > 0.
void token_logprobs_f32(float* out, const float* logits, const int32_t* targets, float temperature,
                        int64_t N, int64_t V);

}  // namespace strata
