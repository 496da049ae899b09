// AdamW over a plain list of fp32 tensors on one device (REFERENCE.md section 2), global-norm gradient
// clipping and the non-finite-gradient check. The optimizer knows nothing of the model: the trainer
// builds the OptimTensor list from its ParamList and decides per tensor whether it decays (from
// ParamKind and OptimConfig); the learning rate for each step comes from optim/schedule.h.
// Reducing the norm across ranks and sharding optimizer state live above this file.
//
// The update is torch.optim.AdamW's (torch 2.15, CPU, foreach=False, the default for CPU tensors)
// operation for operation, each in fp32 and rounded where torch rounds, with t the step count
// after incrementing and every scalar computed in double and rounded to fp32 once, as torch does:
//   p = p * f32(1 - lr * wd)                              (decaying tensors only, wd != 0)
//   m = lerp(m, g, f32(1 - b1))    = fma(w, g - m, m) for w < 0.5, else fma(-(g - m), 1 - w, g)
//   v = fma(f32(1 - b2) * g, g, v * f32(b2))             (torch: v.mul_(b2).addcmul_(g, g, 1 - b2))
//   denom = sqrt(v) / f32(pow(1 - b2^t, 0.5)) + f32(eps)
//   p = p + (f32(-lr / (1 - b1^t)) * m) / denom          (torch: p.addcdiv_(m, denom, -step_size))
// Every operation matches torch bit for bit (checked op by op) except sqrt: torch's vectorised
// CPU fp32 sqrt is not correctly rounded (1 ulp off on ~17% of inputs) and ours is. Over 10 golden
// steps parameters stay within 2 ulp of torch's (tests/optim/adamw_test.cc has the numbers).
//
// bf16 moments: m and v are stored as bf16 and the update is computed in fp32 from their decoded
// values; the new m and v are rounded to bf16 (nearest even) before they are used for the
// parameter update, so the update is exactly what the stored state implies.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "optim/config.h"

namespace strata {

// One tensor the optimizer updates. value and grad are fp32 tensors of the same shape on one
// device (the CPU, or a GPU: the moments then live there too and each update is one kernel of
// kernels/cuda, bit for bit the CPU's); the pointers must outlive the optimizer.
struct OptimTensor {
  std::string name;  // global parameter name; names the optimizer state ("optim.m.<name>")
  Tensor* value;
  Tensor* grad;
  bool decay;  // apply weight decay (the caller's decision)
  // Expert parallelism: rows [row_begin, row_begin + shape[0]) of a global tensor of global_rows
  // rows (0: the whole tensor), whose gradient is reduced over the expert-data-parallel group.
  bool expert = false;
  int64_t row_begin = 0, global_rows = 0;
  // Pipeline parallelism: a copy of a tensor another stage also holds and updates identically (a
  // tied head's copy of the embedding). Its gradient counts once in the global norm: there.
  bool copy = false;
};

class AdamW {
 public:
  // Zero moments (fp32 or bf16 per cfg.moments_dtype), step count 0. Uses lr-independent fields of
  // cfg only: beta1, beta2, eps, weight_decay, moments_dtype.
  AdamW(const OptimConfig& cfg, std::vector<OptimTensor> tensors);

  // One update of every tensor with learning rate lr (from the schedule) and the tensors' current
  // grads. Increments step_count() first: the first update uses t = 1 in the bias corrections.
  void step(double lr);

  int64_t step_count() const;
  void set_step_count(int64_t t);  // for resuming from a checkpoint

  // Moves the moments to `device`, where every tensor of the list must already be (the model
  // moved first: Transformer::to_device). Later updates run there.
  void to_device(Device device);

  // Optimizer state for checkpoints, in tensor order: "optim.m.<name>", "optim.v.<name>" (shape of
  // the parameter, f32 or bf16 per moments_dtype) for each tensor. Writing through these pointers
  // (loading a checkpoint) sets the moments. The rest of the state is step_count(), which a
  // checkpoint records beside the tensors (its tensors are floating point) and restores with
  // set_step_count().
  std::vector<std::pair<std::string, Tensor*>> state_tensors();

  const std::vector<OptimTensor>& tensors() const { return tensors_; }

 private:
  OptimConfig cfg_;
  std::vector<OptimTensor> tensors_;
  std::vector<Tensor> m_;  // per tensor, shape of its value: first moment
  std::vector<Tensor> v_;  // per tensor: second moment
  Device device_;          // where every tensor and moment lives
  int64_t step_ = 0;       // updates done so far
};

// Global L2 norm of all grads, accumulated in double in a fixed order (independent of the thread
// count). When max_norm > 0, scales every grad by clip_coef = max_norm / (norm + 1e-6) if that is
// below 1 (torch.nn.utils.clip_grad_norm_), the coefficient rounded once to fp32. Returns the norm
// before clipping. A non-finite norm leaves the grads untouched (torch would scale them to NaN):
// the caller checks grads_have_nonfinite() and skips the step.
double clip_grad_norm(const std::vector<OptimTensor>& tensors, double max_norm);

// Sum of squares of all grads in the same fixed order as clip_grad_norm, without scaling: the
// local part of a norm that is reduced across ranks before clipping.
double grad_sum_of_squares(const std::vector<OptimTensor>& tensors);

// Multiplies every grad by the fp32 value of coef.
void scale_grads(const std::vector<OptimTensor>& tensors, double coef);

// True when any grad holds NaN or Inf.
bool grads_have_nonfinite(const std::vector<OptimTensor>& tensors);

}  // namespace strata
