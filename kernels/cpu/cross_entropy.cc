// CPU softmax + cross-entropy over a vocabulary, fused (kernels/ops.h): the per-row loss and
// log-sum-exp, the logits' gradient from the saved log-sum-exp, and the log-probabilities of
// target tokens under a sampling temperature (GRPO).
//
// Each row: its max m, then sum exp(x - m) over 8 lanes accumulated in double (rows are ~10^5
// long; fp32 would lose digits), then lse = m + log(sum). The loss is formed in double as
// (m - x_t) + log(sum), so a huge logit (1e4, where one fp32 ulp is 1e-3) does not round it away.
// The backward recomputes softmax as exp(x - lse) in one pass (flash-attention style), which is
// exact to about one ulp of lse. Rows are the unit of threading.
#include <cmath>
#include <cstdint>

#include "core/check.h"
#include "kernels/cpu/vec.h"  // kLanes, exp_f32, map_f32, parallel_for
#include "kernels/ops.h"

namespace strata {

using cpu::exp_f32;
using cpu::kLanes;

namespace {

// sum over the row of exp(x - m) in double; with kTempered, of exp(x / temperature - m) (the
// division kept out of the plain loss's loop, where it would cost more than the exp).
template <bool kTempered>
double sum_exp(const float* x, float m, float temperature, int64_t V) {
  auto term = [=](float v) { return exp_f32((kTempered ? v / temperature : v) - m); };
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= V; i += kLanes) {
    float e[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) e[j] = term(x[i + j]);
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += e[j];
  }
  for (int64_t j = 0; i + j < V; ++j) acc[j] += term(x[i + j]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Runs row_fn(r) for every row, split over threads when the matrix is large enough.
template <typename F>
void for_rows(int64_t N, int64_t V, F row_fn) {
  cpu::parallel_for(N, N * V, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row_fn(r);
  });
}

void check_target(int32_t target, int64_t row, int64_t V) {
  CHECK_LT(static_cast<int64_t>(target), V) << "cross_entropy: target of row " << row;
}

}  // namespace

double cross_entropy_forward_f32(float* losses, float* lse, const float* logits,
                                 const int32_t* targets, int64_t N, int64_t V) {
  CHECK(N >= 0 && V > 0) << "cross_entropy_forward: N=" << N << " V=" << V;
  for_rows(N, V, [=](int64_t r) {
    const int32_t t = targets[r];
    if (t < 0) {
      losses[r] = 0.0f;
      lse[r] = 0.0f;
      return;
    }
    check_target(t, r, V);
    const float* x = logits + r * V;
    float m;
    reduce_row_max_f32(&m, x, 1, V);
    const double log_sum = std::log(sum_exp<false>(x, m, 1.0f, V));
    lse[r] = static_cast<float>(static_cast<double>(m) + log_sum);
    losses[r] = static_cast<float>((static_cast<double>(m) - x[t]) + log_sum);
  });
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) total += losses[r];
  return total;
}

void cross_entropy_backward_f32(float* dlogits, const float* logits, const int32_t* targets,
                                const float* lse, float scale_all, int64_t N, int64_t V, const float* row_scale) {
  CHECK(N >= 0 && V > 0) << "cross_entropy_backward: N=" << N << " V=" << V;
  for_rows(N, V, [=](int64_t r) {
    const int32_t t = targets[r];
    float* d = dlogits + r * V;
    if (t < 0) {
      fill_f32(d, 0.0f, V);
      return;
    }
    check_target(t, r, V);
    const float scale = row_scale ? scale_all * row_scale[r] : scale_all;
    const float* x = logits + r * V;
    const float l = lse[r];
    const float p_target = exp_f32(x[t] - l);  // read before d (which may be x) is written
    cpu::map_f32(d, V, [=](int64_t i) { return exp_f32(x[i] - l) * scale; });
    d[t] = (p_target - 1.0f) * scale;
  });
}

void token_logprobs_f32(float* out, const float* logits, const int32_t* targets, float temperature,
                        int64_t N, int64_t V) {
  CHECK(N >= 0 && V > 0) << "token_logprobs: N=" << N << " V=" << V;
  CHECK_GT(temperature, 0.0f) << "token_logprobs: temperature";
  for_rows(N, V, [=](int64_t r) {
    const int32_t t = targets[r];
    if (t < 0) {
      out[r] = 0.0f;
      return;
    }
    check_target(t, r, V);
    const float* x = logits + r * V;
    // max(x / T) = max(x) / T: division by T > 0 is monotonic, rounding included.
    float m;
    reduce_row_max_f32(&m, x, 1, V);
    m /= temperature;
    const double log_sum = std::log(sum_exp<true>(x, m, temperature, V));
    out[r] = static_cast<float>((static_cast<double>(x[t] / temperature) - m) - log_sum);
  });
}

}  // namespace strata
