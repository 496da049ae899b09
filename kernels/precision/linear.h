// LinearGemm: the single entry point through which every linear layer (attention projections,
// dense MLP, experts, router, LM head) runs its three GEMMs under the run's precision policy
// (REFERENCE.md section 3). The layer never knows the number format; this object does, and owns
// the state a recipe needs: a cached low-precision copy of the weight, and for per-tensor delayed
// scaling the amax histories of its three operands.
//
//   forward          y  (T, N)  = x (T, K) W^T        W: (N, K), the PyTorch nn.Linear layout
//   backward_input   dx (T, K)  = dy (T, N) W          overwritten
//   backward_weight  dW (N, K) += dy^T (T, N) x (T, K) accumulated
//
// fp32: plain sgemm. bf16: both operands rounded to bf16, fp32 accumulation (a bf16 tensor-core
// GEMM). fp8, emulated exactly on the CPU: each operand quantised with its recipe's scales and
// dequantised (q * s in fp32), then one fp32 GEMM:
//   blockwise (DeepSeek-V3): x and dy in 1x128 tiles along the reduction dimension, W in
//     128x128 blocks (one quantisation serves forward and backward_input), and for the weight
//     gradient dy and x in 128x1 tiles (128 tokens of one channel); all E4M3.
//   tensorwise_delayed (Transformer Engine): one scale per operand from the max of its amax
//     history (x, W: E4M3; dy: E4M3, or E5M2 with format hybrid). While a history's max is zero
//     (its first step) the operand's own amax is used instead, so step 1 is scaled sensibly.
//     Each use records its operand's amax as pending; the trainer MAX-reduces pending amaxes
//     over micro-batches and ranks and commits them at the end of the step (scaling_state.h).
// A module kind listed in fp8.high_precision_modules runs in bf16 (the router in fp32).
//
// On a GPU (device cuda:N; every pointer passed is then device memory) the same three GEMMs run
// through cuBLASLt (linear_cuda.cc): fp32 as fp32, bf16 as a bf16 tensor-core GEMM of the rounded
// operands, fp8 blockwise as Hopper fp8 GEMMs with 1x128 / 128x128 block scales (cuBLASLt's
// VEC128 / BLK128x128 modes; the backward operands transposed first, since fp8 tensor cores take
// only the TN form). A dimension that is not a multiple of 128 runs the CPU's emulation on the
// GPU instead (fake-quantised operands, fp32 GEMM): the same function either way. The delayed
// recipe and fp8 activation caching are CPU-only for now and refused on a GPU.
//
// NaN/Inf in an fp8 operand is never saturated: the affected tiles come out NaN, so the loss or
// gradients become non-finite and the run's NaN policy applies; events() names the first one.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/precision/config.h"
#include "kernels/quant.h"

namespace strata {

// The three operands of a linear layer's GEMMs.
enum class GemmOperand { kInput = 0, kWeight = 1, kGradOutput = 2 };
const char* gemm_operand_name(GemmOperand op);  // "input", "weight", "grad_output"

// Delayed-scaling state of one operand: the amaxes of past steps, newest first, at most
// `capacity`, and the pending max of this step's uses.
struct AmaxHistory {
  std::vector<float> values;
  float pending = 0.0f;
  bool has_pending = false;

  float max() const;
  void record(float amax);  // pending = max(pending, amax)
  // Pushes `amax` (the reduced pending value) as the newest entry; drops the oldest beyond capacity.
  void push(float amax, int64_t capacity);
};

// What a linear layer keeps of its input x (T, K) for the weight gradient: the fp32 values, or
// with fp8.cache_activations the codes and scales of the forward's own quantisation (1x128 tiles,
// or one per-tensor scale), about a quarter of the memory.
struct SavedInput {
  Tensor f32;                  // (T, K) when kept in fp32
  std::vector<uint8_t> codes;  // (T, K) when cached in fp8
  std::vector<float> scales;   // per 1x128 tile, or one per-tensor scale
  DType fmt = DType::kF8E4M3;
  int64_t rows = 0, cols = 0;

  bool cached() const { return !codes.empty(); }
  int64_t bytes() const;
  void clear() { *this = SavedInput(); }
};

// Non-finite values met while quantising, since the last reset_step().
struct Fp8Events {
  int64_t nonfinite = 0;
  int64_t saturated = 0;  // finite values clipped to the fp8 range (per-tensor scales only)
  std::string first;  // "layers.1.mlp.w_up: input of forward"
  int64_t first_seq = 0;  // process-wide order of `first`, so the earliest of several GEMMs is named
};

struct LinearGemmCuda;  // the GPU path's cached operands (linear_cuda.cc)
struct LinearGemmCudaDeleter {
  void operator()(LinearGemmCuda* p) const;
};

class LinearGemm {
 public:
  LinearGemm();
  ~LinearGemm();
  LinearGemm(LinearGemm&&) noexcept;
  LinearGemm& operator=(LinearGemm&&) noexcept;
  // `module_kind` is one of precision_module_kinds(); `name` names the weight (checkpoint keys,
  // messages). `weights_epoch` (optional): a counter the model bumps whenever weights change;
  // while it stays the same the quantised weight is reused across micro-batches and decode steps.
  LinearGemm(const PrecisionConfig& config, const std::string& module_kind, std::string name = "",
             const int64_t* weights_epoch = nullptr, Device device = Device::cpu());

  Device device() const { return device_; }
  // Moves the layer to `device` (every pointer passed afterwards lives there); cached weight
  // operands are dropped. The same refusals as the constructor's.
  void set_device(Device device);

  const std::string& name() const { return name_; }
  // The format this module actually runs in (fp8 modules kept high run in bf16 or fp32).
  PrecisionMode mode() const { return mode_; }
  bool delayed() const { return mode_ == PrecisionMode::kFp8 && fp8_.recipe == Fp8Recipe::kTensorwiseDelayed; }
  // Rows (tokens) that went through forward() so far: lets tests prove that a decode step
  // recomputes nothing.
  int64_t forward_rows() const { return forward_rows_; }

  // save (optional): receives what backward_weight needs of x.
  void forward(float* y, const float* x, const float* W, int64_t T, int64_t K, int64_t N,
               SavedInput* save = nullptr);
  void backward_input(float* dx, const float* dy, const float* W, int64_t T, int64_t K, int64_t N);
  void backward_weight(float* dW, const float* dy, const float* x, int64_t T, int64_t K, int64_t N);
  void backward_weight(float* dW, const float* dy, const SavedInput& x, int64_t T, int64_t K, int64_t N);

  // Delayed scaling state (tensorwise_delayed only).
  AmaxHistory& history(GemmOperand op) { return history_[static_cast<int>(op)]; }
  const AmaxHistory& history(GemmOperand op) const { return history_[static_cast<int>(op)]; }
  int64_t history_capacity() const { return fp8_.amax_history_len; }
  // Commits reduced pending amaxes (x, W, dy) into the histories; drops the cached weight.
  void commit(const std::array<float, 3>& reduced_amax);

  const Fp8Events& events() const { return events_; }
  // Starts a step: drops pending amaxes and events (eval or rollout forwards record them too).
  void reset_step();
  // Drops the cached quantised weight (the epoch counter does this automatically).
  void invalidate_weight_cache() { w_cache_ptr_ = nullptr; }

 private:
  DType operand_format(GemmOperand op) const;
  // The per-tensor scale of `op` for a tensor whose own amax is `amax` (delayed recipe).
  float delayed_scale(GemmOperand op, float amax) const;
  // Fake-quantises (fp8) or rounds (bf16) n = R*C values of `p` into `out` under the policy for
  // operand `op` with tile `tile` (blockwise), recording stats. Returns out, or p in fp32.
  const float* prepare(const float* p, int64_t R, int64_t C, GemmOperand op, QuantTile tile, const char* use,
                       std::vector<float>& out, float* amax = nullptr);
  // The weight operand of forward/backward_input, cached while the weights epoch holds.
  const float* weight_operand(const float* W, int64_t N, int64_t K, const char* use);
  void note(const QuantStats& st, GemmOperand op, const char* use);
  void check_device() const;  // what this build and the GPU path support
  // The GPU path (linear_cuda.cc).
  void forward_cuda(float* y, const float* x, const float* W, int64_t T, int64_t K, int64_t N, SavedInput* save);
  void backward_input_cuda(float* dx, const float* dy, const float* W, int64_t T, int64_t K, int64_t N);
  void backward_weight_cuda(float* dW, const float* dy, const float* x, int64_t T, int64_t K, int64_t N);

  PrecisionMode mode_ = PrecisionMode::kFp32;
  Fp8Config fp8_;
  std::string name_;
  const int64_t* weights_epoch_ = nullptr;
  int64_t forward_rows_ = 0;
  std::array<AmaxHistory, 3> history_;
  Fp8Events events_;
  std::vector<float> w_cache_;  // the weight operand (see weights_epoch)
  // The cached weight operand is valid for this (pointer, shape, epoch) and, for the delayed
  // recipe, this weight-history max (the scale it was quantised with).
  const float* w_cache_ptr_ = nullptr;
  int64_t w_cache_n_ = 0, w_cache_k_ = 0, w_cache_epoch_ = -1;
  float w_cache_hist_max_ = 0.0f;
  float w_cache_amax_ = 0.0f;  // the cached weight's own amax (the delayed recipe records it every step)
  Device device_;
  std::unique_ptr<LinearGemmCuda, LinearGemmCudaDeleter> cuda_;
};

// How a model builds its LinearGemms: the run's precision and the model's weights epoch.
struct LinearPolicy {
  PrecisionConfig precision;
  const int64_t* weights_epoch = nullptr;
  Device device = Device::cpu();
  LinearGemm make(const std::string& module_kind, const std::string& name) const {
    return LinearGemm(precision, module_kind, name, weights_epoch, device);
  }
};

}  // namespace strata
