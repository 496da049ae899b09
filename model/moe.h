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
// Expert parallelism (parallel.ep = P > 1): the P ranks of an expert group each hold El = E / P
// consecutive experts (rank q: experts [q*El, (q+1)*El)). A rank routes its own tokens, lays out
// its slots grouped by global expert as above (so the slots for rank q are one contiguous range),
// exchanges per-expert counts, and sends the rows with one all-to-all-v ("dispatch"). The owner
// reorders what it receives expert-major (expert, source rank, source slot order: deterministic),
// runs its experts as a grouped GEMM, and sends the results back the same way ("combine"); the
// combine weights are applied where the tokens live. Backward mirrors it: the slot gradients go
// out as dispatch did, the input gradients come back as combine did. Every rank takes part in
// every exchange, with zero rows when it has none.
//
// Glossary: N tokens (B rows of T), C d_model, E routed experts, K chosen per token, Fe expert
// hidden size, M dispatched slots (N*K minus dropped ones), P expert-parallel ranks, El = E / P
// local experts, Mr slots received for the local experts.
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
#include "parallel/communicator.h"

namespace strata {

// Which experts this rank holds: El = E / size of them, from rank * El.
struct ExpertShard {
  int64_t size = 1, rank = 0;
};

// The all-to-all traffic of a MoE layer since the counters were last reset (this rank's side).
struct MoeCommStats {
  int64_t dispatch_bytes = 0;  // sent by forward dispatches (token rows, all destinations)
  int64_t combine_bytes = 0;   // sent back by forward combines
  int64_t backward_bytes = 0;  // both directions of the backward
  int64_t slots_sent = 0;      // token rows this rank dispatched (routed, kept by capacity)
  double seconds = 0.0;        // spent inside the exchanges
};

struct Moe {
  int64_t C = 0, E = 0, K = 0, Fe = 0;
  int64_t P = 1, El = 0, e0 = 0;       // expert parallelism: ranks, local experts, first local expert
  Communicator* ep = nullptr;          // the expert group when P > 1 (set_expert_group)
  // parallel.dispatch_fp8: token rows travel to the experts as E4M3 codes with one fp32 scale per
  // 1x128 tile (DeepSeek-V3), and the experts compute on their dequantised values; combine and
  // every gradient stay fp32. Applied with P = 1 too (quantise, dequantise in place), so every
  // layout computes the same function. The gradient passes the quantiser unchanged.
  bool dispatch_fp8 = false;
  MoeCommStats comm;
  RouterScoring scoring = RouterScoring::kSoftmax;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  int64_t n_group = 1, topk_group = 1;
  AuxLoss aux_loss = AuxLoss::kNone;
  float aux_loss_coef = 0.0f;
  double capacity_factor = 0.0;

  Param router;       // (E, C), always fp32
  Param router_bias;  // (E,) balancing bias for selection only (sigmoid scoring); no gradient
  Param w_gate;       // (El, Fe, C): rows [e0, e0 + El) of the global (E, Fe, C)
  Param w_up;         // (El, Fe, C)
  Param w_down;       // (El, C, Fe)
  LinearGemm gemm_router;                                // fp32 unless fp8 is asked for it
  std::vector<LinearGemm> gemm_gate, gemm_up, gemm_down;  // (El,) one per local expert: per-expert fp8 state

  bool has_shared = false, shared_gated = false;
  Mlp shared;          // (Fs = shared hidden)
  Param shared_gate;   // (1, C) when shared_gated

  // prefix: the global name of this module's parameters, e.g. "layers.3.moe.".
  void build(const ModelConfig& config, const LinearPolicy& policy, const std::string& prefix,
             ExpertShard shard = {});
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
  Tensor ye;                           // (M, C) the expert output of each slot, at its token's rank
  // Expert side (P = 1: the same slots): the rows this rank's experts ran, expert-major.
  int64_t Mr = 0;
  std::vector<int64_t> send_rows, recv_rows;  // (P,) rows to / from each rank of the expert group
  std::vector<int64_t> recv_counts;    // (P * El,) rows from rank q for local expert i, q-major
  std::vector<int64_t> local_offsets;  // (El + 1,) row range of each local expert
  Tensor gate, up;                     // (Mr, Fe) each local expert's block of rows
  std::vector<SavedInput> xe, act;     // (El,) each local expert's inputs of gate/up (n_e, C) and down (n_e, Fe)
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
