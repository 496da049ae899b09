// The Mixture-of-Experts ops (REFERENCE.md section 1, "MoE"): routing a token to its top-k
// experts, gathering the routed rows into expert-major order, the experts' grouped linear GEMMs,
// and combining the expert outputs back per token with the routing weights. kernels/cpu/moe.cc is
// the reference the model runs on the CPU; kernels/cuda/ has the same functions for GPUs.
//
// Shapes: N tokens, E experts, K experts per token, C model width; M routed slots (rows of the
// expert-major buffer, M <= N * K when a capacity limit drops some); G groups (local experts) of a
// grouped GEMM with `offsets` (G + 1,) on the host: group g owns rows [offsets[g], offsets[g+1]).
#pragma once

#include <cstdint>

namespace strata {

enum class RouteScoring { kSoftmax, kSigmoid };

// How a router turns logits into choices (the model's MoE settings).
struct MoeRouting {
  int64_t E = 0, K = 0;
  RouteScoring scoring = RouteScoring::kSoftmax;
  bool norm_topk_prob = true;         // renormalise the k chosen probabilities to sum to 1
  float routed_scaling_factor = 1.0f;
  int64_t n_group = 1, topk_group = 1;  // sigmoid: keep the topk_group best groups of E/n_group
};

// logits: (N, E) -> probs: (N, E) (softmax or sigmoid of the logits), idx: (N, K) chosen
// experts, largest first (ties: lower index), w: (N, K) combine weights. Softmax scoring picks
// by probability; sigmoid scoring picks by probability + bias (bias: (E,), may be null for
// softmax) within the kept groups (a group scores the sum of its best two) and weighs by the
// probability alone. With norm_topk_prob the chosen weights are divided by their sum (+1e-20 for
// sigmoid), then every weight is multiplied by routed_scaling_factor.
void moe_route_f32(float* probs, int32_t* idx, float* w, const float* logits, const float* bias,
                   int64_t N, const MoeRouting& r);

// The backward of the routing weights: dprobs (N, E) ACCUMULATES (+=) the gradient reaching
// each chosen probability from dw (N, K), the gradient of moe_route_f32's weights w; probs, idx
// as moe_route_f32 gave them. With norm_topk_prob (w_k = c p_k / S, S = sum of the chosen p,
// +1e-20 for sigmoid): dp_k += c (dw_k / S - sum_j dw_j p_j / S^2), in double per token; without:
// dp_k += c dw_k. The scoring's own backward (softmax or sigmoid) is the caller's next step.
void moe_route_backward_f32(float* dprobs, const float* dw, const float* probs, const int32_t* idx,
                            int64_t N, const MoeRouting& r);

// out: (M, C), out[j] = x[index[j]]; x: (rows, C); index: (M,) int32 row numbers. Also the
// embedding lookup (index = token ids).
void gather_rows_f32(float* out, const float* x, const int32_t* index, int64_t M, int64_t C);
// Its backward: out[index[j]] += rows[j] for j = 0..M-1 in order (so a row named twice sums in
// j order: deterministic, the same bits on every backend); out: (rows, C) accumulated; rows:
// (M, C). The embedding's weight gradient, and MoE slots back to their tokens.
void scatter_add_rows_f32(float* out, const float* rows, const int32_t* index, int64_t M, int64_t C);

// out: (N, C) overwritten, out[t] = sum over k of weights[t*K+k] * rows[slot_of[t*K+k]] in k
// order, skipping slot -1 (a dropped choice); rows: (M, C); slot_of, weights: (N, K). weights
// null means 1 (the backward of gather_rows: each token's gradient from its slots).
void moe_combine_f32(float* out, const float* rows, const int32_t* slot_of, const float* weights,
                     int64_t N, int64_t K, int64_t C);
// Its backward: drows[slot_of[i]] = weights[i] * dout[i / K] (rows of dropped slots untouched),
// dweights[i] = dot(dout[i / K], rows[slot_of[i]]) accumulated in double (0 when dropped).
// drows: (M, C); dweights: (N, K); dout: (N, C).
void moe_combine_backward_f32(float* drows, float* dweights, const float* dout, const float* rows,
                              const int32_t* slot_of, const float* weights, int64_t N, int64_t K,
                              int64_t C);

// The experts' linear GEMMs over an expert-major buffer, fp32 (the LinearGemm contract per group):
//   forward          y[g] (n_g, N)  = x[g] (n_g, K) W[g]^T     W: (G, N, K)
//   backward_input   dx[g] (n_g, K) = dy[g] (n_g, N) W[g]        overwritten
//   backward_weight  dW[g] (N, K)  += dy[g]^T x[g]               accumulated
// An empty group writes nothing (forward / backward_input leave its zero rows; dW unchanged).
void grouped_linear_forward_f32(float* y, const float* x, const float* W, const int64_t* offsets,
                                int64_t G, int64_t K, int64_t N);
void grouped_linear_backward_input_f32(float* dx, const float* dy, const float* W,
                                       const int64_t* offsets, int64_t G, int64_t K, int64_t N);
void grouped_linear_backward_weight_f32(float* dW, const float* dy, const float* x,
                                        const int64_t* offsets, int64_t G, int64_t K, int64_t N);

}  // namespace strata
