// The FP8 scaling state of a set of LinearGemms (one model stage), as the trainer handles it
// once per step: reset at the start, pending amaxes MAX-reduced (over micro-batches inside each
// LinearGemm, then over the ranks sharing each tensor by the caller) and committed into the
// histories at the end of a step that was applied, and saved in checkpoints. Only the delayed
// recipe has state; for every other policy these are no-ops on empty vectors.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/precision/linear.h"

namespace strata {

// Starts a step on every GEMM: drops pending amaxes and non-finite events.
void fp8_reset_step(const std::vector<LinearGemm*>& gemms);

// Pending amaxes of the delayed GEMMs, 3 per GEMM (input, weight, grad_output) in list order;
// an operand that was not used this step contributes 0. All-reduce this with MAX across ranks.
std::vector<float> fp8_pending_amax(const std::vector<LinearGemm*>& gemms);
// Pushes reduced amaxes (as fp8_pending_amax laid them out) into the histories.
void fp8_commit_amax(const std::vector<LinearGemm*>& gemms, const std::vector<float>& reduced);

// Non-finite values met while quantising since the last reset, over all GEMMs: the count and
// the first place ("layers.1.mlp.w_up: input of forward").
Fp8Events fp8_events(const std::vector<LinearGemm*>& gemms);

// Amax histories as checkpoint tensors: "fp8.<gemm name>.amax_history", (3, H) f32, rows input /
// weight / grad_output, newest first, zero-padded (a zero never changes a history's max).
struct Fp8StateTensor {
  std::string name;
  Tensor value;
};
std::vector<Fp8StateTensor> fp8_state_tensors(const std::vector<LinearGemm*>& gemms);
// Restores histories from tensors named as above; `find` returns the tensor, an undefined Tensor
// when there is none (that history starts empty), or an error. A different saved length keeps
// the newest entries that fit.
Status fp8_load_state(const std::vector<LinearGemm*>& gemms,
                      const std::function<StatusOr<Tensor>(const std::string& name)>& find);

}  // namespace strata
