// CPU GEMM: gemm_f32 over OpenBLAS's cblas_sgemm, the double-accumulating reference it is tested
// against, the Tensor convenience overload, the BLAS thread-count knob and the peak-rate
// measurement MFU divides by (kernels/ops.h).
//
// The degenerate cases are handled here rather than passed to OpenBLAS: cblas_sgemm rejects
// lda = 0 (through xerbla, which prints and carries on), and a K = 0 or alpha = 0 product must
// still apply beta to C.
#include <cblas.h>  // cblas_sgemm, openblas_set_num_threads, openblas_get_num_threads

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/check.h"
#include "kernels/ops.h"

namespace strata {
namespace {

// Validates the raw-pointer arguments shared by gemm_f32 and gemm_reference_f32.
void check_gemm_args(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                     int64_t lda, const float* B, int64_t ldb, const float* C, int64_t ldc) {
  CHECK(M >= 0 && N >= 0 && K >= 0) << "gemm: negative size M=" << M << " N=" << N << " K=" << K;
  // Stored row lengths: A is (M, K) or (K, M); B is (K, N) or (N, K).
  const int64_t a_cols = trans_a ? M : K;
  const int64_t b_cols = trans_b ? K : N;
  CHECK_GE(lda, std::max<int64_t>(1, a_cols))
      << "gemm: lda too small for A (trans_a=" << trans_a << ")";
  CHECK_GE(ldb, std::max<int64_t>(1, b_cols))
      << "gemm: ldb too small for B (trans_b=" << trans_b << ")";
  CHECK_GE(ldc, std::max<int64_t>(1, N)) << "gemm: ldc too small for C";
  if (M > 0 && N > 0) {
    CHECK(C != nullptr) << "gemm: null C for M=" << M << " N=" << N;
    if (K > 0) CHECK(A != nullptr && B != nullptr) << "gemm: null A or B for K=" << K;
  }
}

// C = beta * C over an (M, N) block with leading dimension ldc; beta == 0 writes zeros, so NaN in
// uninitialised C does not survive (0 * NaN would).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      fill_f32(c, 0.0f, N);
    } else if (beta != 1.0f) {
      scale_f32(c, beta, N);
    }
  }
}

// Rows of the matrix view of a shape: the product of all but the last extent. (Shape::rows()
// divides numel by cols, which loses the row count when cols == 0.)
int64_t matrix_rows(const Shape& s) {
  int64_t r = 1;
  for (int i = 0; i + 1 < s.rank(); ++i) r *= s[i];
  return r;
}

}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
              int64_t ldc) {
  check_gemm_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  // OpenBLAS 0.3.21 is built with 32-bit blasint; larger extents would silently wrap.
  constexpr int64_t kMaxBlasInt = 0x7fffffff;
  CHECK(M <= kMaxBlasInt && N <= kMaxBlasInt && K <= kMaxBlasInt && lda <= kMaxBlasInt &&
        ldb <= kMaxBlasInt && ldc <= kMaxBlasInt)
      << "gemm: extents exceed OpenBLAS's 32-bit integers";
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
              static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

void gemm_reference_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                        float* C, int64_t ldc) {
  check_gemm_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const double b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += a * b;
      }
      float& c = C[i * ldc + j];
      const double prior = beta == 0.0f ? 0.0 : static_cast<double>(beta) * c;
      // alpha == 0 must not read A or B's values into C (a NaN there would leak).
      c = static_cast<float>((alpha == 0.0f ? 0.0 : alpha * acc) + prior);
    }
  }
}

void gemm(const Tensor& A, bool trans_a, const Tensor& B, bool trans_b, Tensor& C, float alpha,
          float beta) {
  for (const Tensor* t : {&A, &B, static_cast<const Tensor*>(&C)}) {
    const char* name = t == &A ? "A" : (t == &B ? "B" : "C");
    CHECK(t->defined()) << "gemm: " << name << " is undefined";
    CHECK(t->dtype() == DType::kF32)
        << "gemm: " << name << " is " << t->to_string() << "; this overload takes f32";
    CHECK(t->device().is_cpu()) << "gemm: " << name << " is " << t->to_string()
                                << "; this overload runs on the CPU";
  }
  const Shape& sa = A.shape();
  const Shape& sb = B.shape();
  const Shape& sc = C.shape();
  const int64_t M = trans_a ? sa.cols() : matrix_rows(sa);
  const int64_t K = trans_a ? matrix_rows(sa) : sa.cols();
  const int64_t Kb = trans_b ? sb.cols() : matrix_rows(sb);
  const int64_t N = trans_b ? matrix_rows(sb) : sb.cols();
  CHECK_EQ(K, Kb) << "gemm: inner dimensions differ: op(A) is (M, K) = (" << M << ", " << K
                  << ") from A" << sa << (trans_a ? "^T" : "") << ", op(B) is (K, N) = (" << Kb
                  << ", " << N << ") from B" << sb << (trans_b ? "^T" : "");
  CHECK(matrix_rows(sc) == M && sc.cols() == N)
      << "gemm: C" << sc << " is not (M, N) = (" << M << ", " << N << ") for A" << sa
      << (trans_a ? "^T" : "") << " @ B" << sb << (trans_b ? "^T" : "");
  gemm_f32(trans_a, trans_b, M, N, K, alpha, A.f32(), std::max<int64_t>(1, sa.cols()), B.f32(),
           std::max<int64_t>(1, sb.cols()), beta, C.f32(), std::max<int64_t>(1, N));
}

void set_blas_threads(int n) {
  CHECK_GE(n, 1) << "set_blas_threads";
  openblas_set_num_threads(n);
}

int blas_threads() { return openblas_get_num_threads(); }

double measure_sgemm_peak_flops() {
  const int64_t n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  gemm_f32(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm_f32(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

}  // namespace strata
