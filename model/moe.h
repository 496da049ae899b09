// The Mixture-of-Experts block (REFERENCE.md section 1): an fp32 router picks top-k routed
// experts per token (softmax scoring as Mixtral / Qwen-MoE, or sigmoid scoring with a balancing
// bias and group-limited routing as DeepSeek-V3), tokens are grouped by expert, each expert runs
// its SwiGLU on its tokens (one GEMM per expert over a contiguous block: a grouped GEMM), and
// results are combined with the routing weights; shared experts (optionally sigmoid-gated, as
// Qwen2-MoE) see every token. Forward sits above backward; dispatch's backward is combine.
//
// The routed experts of a layer are one stacked tensor per projection. Token order inside an
// expert's block is (token index, choice rank): deterministic, and the order an all-to-all
// dispatch will keep when expert parallelism arrives.
//
// Glossary: N tokens (B rows of T), C d_model, E routed experts, K chosen per token, Fe expert
// hidden size, M dispatched slots (N*K minus dropped ones).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/precision/linear.h"
#include "model/config.h"
#include "model/mlp.h"
#include "model/param.h"
#include "model/weight_grads.h"

namespace strata {

struct Moe {
  int64_t C = 0, E = 0, K = 0, Fe = 0;
  RouterScoring scoring = RouterScoring::kSoftmax;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  int64_t n_group = 1, topk_group = 1;
  AuxLoss aux_loss = AuxLoss::kNone;
  float aux_loss_coef = 0.0f;
  double capacity_factor = 0.0;

  Param router;       // (E, C), always fp32
  Param router_bias;  // (E,) balancing bias for selection only (sigmoid scoring); no gradient
  Param w_gate;       // (E, Fe, C)
  Param w_up;         // (E, Fe, C)
  Param w_down;       // (E, C, Fe)
  LinearGemm gemm_router;                                // fp32 unless fp8 is asked for it
  std::vector<LinearGemm> gemm_gate, gemm_up, gemm_down;  // (E,) one per expert: per-expert fp8 state

  bool has_shared = false, shared_gated = false;
  Mlp shared;          // (Fs = shared hidden)
  Param shared_gate;   // (1, C) when shared_gated

  // prefix: the global name of this module's parameters, e.g. "layers.3.moe.".
  void build(const ModelConfig& config, const LinearPolicy& policy, const std::string& prefix);
  void linear_gemms(std::vector<LinearGemm*>& out);
  void collect(ParamList& out, const std::string& prefix);
};

struct MoeSaved {
  int64_t N = 0, B = 0, T = 0, M = 0;
  Tensor x;                            // (N, C)
  Tensor probs;                        // (N, E) softmax or sigmoid scores
  std::vector<int32_t> topk_idx;       // (N, K) chosen experts, best first
  std::vector<float> topk_w;           // (N, K) combine weights
  std::vector<int32_t> slot_of;        // (N, K) dispatched slot, -1 when dropped by capacity
  std::vector<int32_t> slot_token;     // (M,) token of each slot, grouped by expert
  std::vector<int64_t> offsets;        // (E + 1,) slot range of each expert
  Tensor gate, up, ye;                 // (M, Fe) x2, (M, C) each expert's block of rows
  std::vector<SavedInput> xe, act;     // (E,) each expert's inputs of gate/up (n_e, C) and down (n_e, Fe)
  MlpSaved shared;
  Tensor shared_y;                     // (N, C) shared-expert output before the gate
  std::vector<float> shared_g;         // (N,) sigmoid gate values
  // Statistics of this forward, for logging and for the load-balancing machinery.
  std::vector<int64_t> load;           // (E,) tokens that chose each expert (before capacity)
  std::vector<double> prob_sum;        // (E,) sum over tokens of probs
  int64_t dropped = 0;                 // choices dropped by the capacity limit
  double aux_loss = 0.0;               // this layer's own auxiliary loss (seq), times its coefficient
  double aux_weight = 1.0;             // share of the step's aux loss this micro-batch carries
  // Gradient of the total loss w.r.t. every token's probs[:, e] from a batch-level auxiliary
  // loss (switch) that the Transformer computes across layers; empty when none.
  std::vector<float> aux_dprob;        // (E,)
};

// out: (N, C) overwritten; x: (N, C), N = B*T tokens as B rows of T (for the per-sequence aux).
void moe_forward(Moe& m, MoeSaved& s, float* out, const float* x, int64_t B, int64_t T);
// dx: (N, C) overwritten; dout: (N, C). GEMM weight gradients are queued on `wg`.
void moe_backward(Moe& m, MoeSaved& s, float* dx, const float* dout, WeightGrads& wg);

// Routing only (exposed for tests and decoding). logits: (N, E) -> probs (N, E), idx/w (N, K).
void moe_route(const Moe& m, const float* logits, int64_t N, float* probs, int32_t* idx, float* w);

// Aux-loss-free balancing (DeepSeek-V3 section 2.1.2): b_i += gamma * sign(mean_load - load_i),
// with `load` counted over the whole global batch. Call after the optimizer step.
void moe_update_bias(Moe& m, const std::vector<int64_t>& load, float gamma);

}  // namespace strata
