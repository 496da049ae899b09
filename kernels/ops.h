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
// bounds the threads the CPU kernels below start (softmax rows), so one knob governs the process.
void set_blas_threads(int n);  // n >= 1
int blas_threads();

// ---- elementwise (all arrays: (n,)) ------------------------------------------------------------

void fill_f32(float* out, float value, int64_t n);                    // out = value
void copy_f32(float* out, const float* x, int64_t n);                 // out = x
void add_f32(float* out, const float* a, const float* b, int64_t n);  // out = a + b
void add_inplace_f32(float* y, const float* x, int64_t n);            // y += x
void mul_f32(float* out, const float* a, const float* b, int64_t n);  // out = a * b
void scale_f32(float* y, float s, int64_t n);                         // y *= s
void axpy_f32(float* y, float a, const float* x, int64_t n);          // y += a * x

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

}  // namespace strata
