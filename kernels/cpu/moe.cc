// CPU reference of kernels/moe_ops.h: routing, row gather, combine and the experts' grouped
// linear GEMMs. model/moe.cc runs these; kernels/cuda/moe.cu and gemm.cu are held to them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/check.h"
#include "kernels/moe_ops.h"
#include "kernels/ops.h"

namespace strata {
namespace {

inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// Indices of the k largest values of v (n entries), largest first; ties keep the lower index.
void top_k(const float* v, int64_t n, int64_t k, int32_t* out) {
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [v](int32_t a, int32_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  });
  std::copy(order.begin(), order.begin() + k, out);
}

}  // namespace

void moe_route_f32(float* probs, int32_t* idx, float* w, const float* logits, const float* bias,
                   int64_t N, const MoeRouting& r) {
  const int64_t E = r.E, K = r.K;
  CHECK(K >= 1 && K <= E) << "MoE routing: top-" << K << " of " << E << " experts";
  std::vector<float> choice(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    const float* z = logits + t * E;
    float* p = probs + t * E;
    int32_t* ti = idx + t * K;
    float* tw = w + t * K;
    if (r.scoring == RouteScoring::kSoftmax) {
      softmax_forward_f32(p, z, 1, E);
      top_k(p, E, K, ti);
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) sum += p[ti[k]];
      for (int64_t k = 0; k < K; ++k) tw[k] = (r.norm_topk_prob ? p[ti[k]] / sum : p[ti[k]]) * r.routed_scaling_factor;
      continue;
    }
    // Sigmoid scoring: choose by score + bias, weigh by the score alone.
    CHECK(bias != nullptr) << "MoE routing: sigmoid scoring needs the balancing bias";
    for (int64_t e = 0; e < E; ++e) {
      p[e] = sigmoid(z[e]);
      choice[e] = p[e] + bias[e];
    }
    if (r.n_group > 1) {  // keep the topk_group groups whose best two experts score highest
      const int64_t per = E / r.n_group;
      std::vector<float> group_score(static_cast<size_t>(r.n_group));
      for (int64_t g = 0; g < r.n_group; ++g) {
        int32_t best[2];
        top_k(choice.data() + g * per, per, std::min<int64_t>(2, per), best);
        group_score[g] = choice[g * per + best[0]] + (per > 1 ? choice[g * per + best[1]] : 0.0f);
      }
      std::vector<int32_t> kept(static_cast<size_t>(r.topk_group));
      top_k(group_score.data(), r.n_group, r.topk_group, kept.data());
      std::vector<bool> keep(static_cast<size_t>(r.n_group), false);
      for (int32_t g : kept) keep[g] = true;
      for (int64_t e = 0; e < E; ++e)
        if (!keep[e / per]) choice[e] = -std::numeric_limits<float>::infinity();
    }
    top_k(choice.data(), E, K, ti);
    float sum = 0.0f;
    for (int64_t k = 0; k < K; ++k) sum += p[ti[k]];
    for (int64_t k = 0; k < K; ++k)
      tw[k] = (r.norm_topk_prob ? p[ti[k]] / (sum + 1e-20f) : p[ti[k]]) * r.routed_scaling_factor;
  }
}

void gather_rows_f32(float* out, const float* x, const int32_t* index, int64_t M, int64_t C) {
  for (int64_t j = 0; j < M; ++j) copy_f32(out + j * C, x + static_cast<int64_t>(index[j]) * C, C);
}

void scatter_add_rows_f32(float* out, const float* rows, const int32_t* index, int64_t M, int64_t C) {
  for (int64_t j = 0; j < M; ++j) add_inplace_f32(out + static_cast<int64_t>(index[j]) * C, rows + j * C, C);
}

void moe_route_backward_f32(float* dprobs, const float* dw, const float* probs, const int32_t* idx,
                            int64_t N, const MoeRouting& r) {
  const int64_t E = r.E, K = r.K;
  const double c = r.routed_scaling_factor;
  for (int64_t t = 0; t < N; ++t) {
    const float* p = probs + t * E;
    const int32_t* ti = idx + t * K;
    const float* dwt = dw + t * K;
    float* dpt = dprobs + t * E;
    if (r.norm_topk_prob) {
      double S = 0, dot = 0;
      for (int64_t k = 0; k < K; ++k) S += p[ti[k]];
      if (r.scoring == RouteScoring::kSigmoid) S += 1e-20;
      for (int64_t k = 0; k < K; ++k) dot += static_cast<double>(dwt[k]) * p[ti[k]];
      for (int64_t k = 0; k < K; ++k) dpt[ti[k]] += static_cast<float>(c * (dwt[k] / S - dot / (S * S)));
    } else {
      for (int64_t k = 0; k < K; ++k) dpt[ti[k]] += static_cast<float>(c * dwt[k]);
    }
  }
}

void moe_combine_f32(float* out, const float* rows, const int32_t* slot_of, const float* weights,
                     int64_t N, int64_t K, int64_t C) {
  fill_f32(out, 0.0f, N * C);
  for (int64_t i = 0; i < N * K; ++i) {
    if (slot_of[i] < 0) continue;
    const float* row = rows + static_cast<int64_t>(slot_of[i]) * C;
    if (weights) {
      axpy_f32(out + (i / K) * C, weights[i], row, C);
    } else {
      add_inplace_f32(out + (i / K) * C, row, C);
    }
  }
}

void moe_combine_backward_f32(float* drows, float* dweights, const float* dout, const float* rows,
                              const int32_t* slot_of, const float* weights, int64_t N, int64_t K,
                              int64_t C) {
  for (int64_t i = 0; i < N * K; ++i) {
    const int32_t j = slot_of[i];
    if (j < 0) {
      dweights[i] = 0.0f;
      continue;
    }
    const float* d = dout + (i / K) * C;
    float* dy = drows + static_cast<int64_t>(j) * C;
    const float* y = rows + static_cast<int64_t>(j) * C;
    double acc = 0;
    for (int64_t c = 0; c < C; ++c) {
      dy[c] = weights[i] * d[c];
      acc += static_cast<double>(d[c]) * y[c];
    }
    dweights[i] = static_cast<float>(acc);
  }
}

void grouped_linear_forward_f32(float* y, const float* x, const float* W, const int64_t* offsets,
                                int64_t G, int64_t K, int64_t N) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    if (n > 0) gemm_f32(false, true, n, N, K, 1.0f, x + r0 * K, K, W + g * N * K, K, 0.0f, y + r0 * N, N);
  }
}

void grouped_linear_backward_input_f32(float* dx, const float* dy, const float* W,
                                       const int64_t* offsets, int64_t G, int64_t K, int64_t N) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    if (n > 0) gemm_f32(false, false, n, K, N, 1.0f, dy + r0 * N, N, W + g * N * K, K, 0.0f, dx + r0 * K, K);
  }
}

void grouped_linear_backward_weight_f32(float* dW, const float* dy, const float* x,
                                        const int64_t* offsets, int64_t G, int64_t K, int64_t N) {
  for (int64_t g = 0; g < G; ++g) {
    const int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    if (n > 0) gemm_f32(true, false, N, K, n, 1.0f, dy + r0 * N, N, x + r0 * K, K, 1.0f, dW + g * N * K, K);
  }
}

}  // namespace strata
