#include "kernels/precision/linear.h"

#include <algorithm>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/ops.h"

namespace strata {

LinearGemm::LinearGemm(const PrecisionConfig& config, const std::string& module_kind) : mode_(config.mode) {
  if (mode_ == PrecisionMode::kFp8) {
    const auto& keep = config.fp8.high_precision_modules;
    if (std::find(keep.begin(), keep.end(), module_kind) != keep.end()) {
      mode_ = PrecisionMode::kBf16;  // kept out of fp8: the next format up
    } else {
      FATAL() << "precision.mode: fp8 for " << module_kind << " lands with the FP8 issue (#5)";
    }
  }
}

const float* LinearGemm::operand(const float* p, int64_t n, std::vector<float>& scratch) const {
  if (mode_ == PrecisionMode::kFp32) return p;
  if (static_cast<int64_t>(scratch.size()) < n) scratch.resize(static_cast<size_t>(n));
  std::copy(p, p + n, scratch.data());
  round_to_dtype_n(scratch.data(), static_cast<size_t>(n), DType::kBF16);
  return scratch.data();
}

void LinearGemm::forward(float* y, const float* x, const float* W, int64_t T, int64_t K, int64_t N) {
  forward_rows_ += T;
  const float* a = operand(x, T * K, scratch_a_);
  const float* b = operand(W, N * K, scratch_b_);
  gemm_f32(false, true, T, N, K, 1.0f, a, K, b, K, 0.0f, y, N);
}

void LinearGemm::backward_input(float* dx, const float* dy, const float* W, int64_t T, int64_t K, int64_t N) {
  const float* a = operand(dy, T * N, scratch_a_);
  const float* b = operand(W, N * K, scratch_b_);
  gemm_f32(false, false, T, K, N, 1.0f, a, N, b, K, 0.0f, dx, K);
}

void LinearGemm::backward_weight(float* dW, const float* dy, const float* x, int64_t T, int64_t K, int64_t N) {
  const float* a = operand(dy, T * N, scratch_a_);
  const float* b = operand(x, T * K, scratch_b_);
  gemm_f32(true, false, N, K, T, 1.0f, a, N, b, K, 1.0f, dW, K);
}

}  // namespace strata
