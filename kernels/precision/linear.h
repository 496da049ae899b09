// LinearGemm: the single entry point through which every linear layer (attention projections,
// dense MLP, experts, LM head) runs its three GEMMs, under the run's precision policy
// (REFERENCE.md section 3). The layer never knows the number format; this object does, and owns
// whatever per-tensor state a recipe needs (rounding scratch now; FP8 scales and amax histories
// with the FP8 issue).
//
//   forward          y  (T, N)  = x (T, K) W^T        W: (N, K), the PyTorch nn.Linear layout
//   backward_input   dx (T, K)  = dy (T, N) W          overwritten
//   backward_weight  dW (N, K) += dy^T (T, N) x (T, K) accumulated
//
// fp32: plain sgemm. bf16: both operands of every GEMM are rounded to bf16 (round to nearest
// even), then multiplied with fp32 accumulation, which is what a bf16 tensor-core GEMM computes.
// fp8 lands with the FP8 issue; asking for it before then is a configuration error upstream.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/precision/config.h"

namespace strata {

class LinearGemm {
 public:
  // `module_kind` is one of precision_module_kinds(); it decides whether fp8 applies.
  LinearGemm() = default;
  LinearGemm(const PrecisionConfig& config, const std::string& module_kind);

  PrecisionMode mode() const { return mode_; }
  // Rows (tokens) that went through forward() so far: lets tests prove that a decode step
  // recomputes nothing.
  int64_t forward_rows() const { return forward_rows_; }

  void forward(float* y, const float* x, const float* W, int64_t T, int64_t K, int64_t N);
  void backward_input(float* dx, const float* dy, const float* W, int64_t T, int64_t K, int64_t N);
  void backward_weight(float* dW, const float* dy, const float* x, int64_t T, int64_t K, int64_t N);

 private:
  // Returns `p` itself in fp32 mode, else a bf16-rounded copy of its n elements in `scratch`.
  const float* operand(const float* p, int64_t n, std::vector<float>& scratch) const;

  PrecisionMode mode_ = PrecisionMode::kFp32;
  int64_t forward_rows_ = 0;
  std::vector<float> scratch_a_, scratch_b_;
};

}  // namespace strata
