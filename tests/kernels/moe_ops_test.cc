// The MoE row and routing ops of kernels/moe_ops.h that model/ calls directly: scatter_add_rows
// (the embedding's and the expert slots' backward) against a plain loop, and the routing
// weights' backward against finite differences of the weights as a function of the chosen
// probabilities. (Routing, gather, combine and the grouped GEMMs are checked through the model
// against transformers in tests/model/.)
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/moe_ops.h"

namespace strata {
namespace {

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

TEST(MoeOpsTest, ScatterAddRowsSumsRepeatedRowsInOrder) {
  std::mt19937 rng(21);
  for (int64_t M : {0, 1, 9, 200}) {
    for (int64_t C : {1, 5, 64}) {
      const int64_t R = 7;  // destination rows: repeats are certain for M > 7
      const std::vector<float> rows = random_vec(rng, M * C), out0 = random_vec(rng, R * C);
      std::vector<int32_t> index(static_cast<size_t>(M));
      std::uniform_int_distribution<int32_t> pick(0, R - 1);
      for (int32_t& i : index) i = pick(rng);
      std::vector<float> out = out0, want = out0;
      scatter_add_rows_f32(out.data(), rows.data(), index.data(), M, C);
      for (int64_t j = 0; j < M; ++j)
        for (int64_t c = 0; c < C; ++c) want[index[j] * C + c] += rows[j * C + c];
      EXPECT_EQ(out, want) << "M=" << M << " C=" << C;  // the same additions in the same order
    }
  }
}

// L(p) = sum_k dw_k w_k(p) for the routing weights w_k = c p_k / S (normalised) or c p_k.
double routed_loss(const std::vector<double>& p, const std::vector<int32_t>& idx, const std::vector<float>& dw,
                   int64_t t, const MoeRouting& r) {
  const int64_t E = r.E, K = r.K;
  double S = 0.0;
  for (int64_t k = 0; k < K; ++k) S += p[t * E + idx[t * K + k]];
  if (r.scoring == RouteScoring::kSigmoid) S += 1e-20;
  double L = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double pk = p[t * E + idx[t * K + k]];
    L += dw[t * K + k] * r.routed_scaling_factor * (r.norm_topk_prob ? pk / S : pk);
  }
  return L;
}

TEST(MoeOpsTest, RouteBackwardMatchesFiniteDifferencesAndAccumulates) {
  std::mt19937 rng(22);
  for (bool norm : {true, false}) {
    for (RouteScoring scoring : {RouteScoring::kSoftmax, RouteScoring::kSigmoid}) {
      MoeRouting r;
      r.E = 6;
      r.K = 3;
      r.scoring = scoring;
      r.norm_topk_prob = norm;
      r.routed_scaling_factor = 2.5f;
      const int64_t N = 5, E = r.E, K = r.K;
      const std::vector<float> probs = random_vec(rng, N * E, 0.05f, 0.9f), dw = random_vec(rng, N * K);
      std::vector<int32_t> idx(static_cast<size_t>(N * K));
      for (int64_t t = 0; t < N; ++t)  // distinct experts per token
        for (int64_t k = 0; k < K; ++k) idx[t * K + k] = static_cast<int32_t>((t + 2 * k) % E);
      const std::vector<float> dp0 = random_vec(rng, N * E);
      std::vector<float> dp = dp0;
      moe_route_backward_f32(dp.data(), dw.data(), probs.data(), idx.data(), N, r);
      std::vector<double> p(probs.begin(), probs.end());
      for (int64_t t = 0; t < N; ++t) {
        for (int64_t e = 0; e < E; ++e) {
          const double h = 1e-6, keep = p[t * E + e];
          p[t * E + e] = keep + h;
          const double up = routed_loss(p, idx, dw, t, r);
          p[t * E + e] = keep - h;
          const double down = routed_loss(p, idx, dw, t, r);
          p[t * E + e] = keep;
          const double fd = (up - down) / (2 * h);  // 0 for an expert the token did not choose
          EXPECT_NEAR(dp[t * E + e] - dp0[t * E + e], fd, 1e-5 * std::max(1.0, std::fabs(fd)))
              << "norm " << norm << " sigmoid " << (scoring == RouteScoring::kSigmoid) << " token " << t
              << " expert " << e;
        }
      }
    }
  }
}

}  // namespace
}  // namespace strata
