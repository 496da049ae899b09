// Gradient accumulation never changes the maths: one global batch as one micro-batch or as
// several, each dividing its loss by the global target count, gives the same loss and gradients
// up to float summation order (REFERENCE.md section 1; DESIGN.md's noise floor).
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "model/transformer.h"

namespace strata {
namespace {

Batch rows(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int64_t B, int64_t T,
           int64_t first_row, int64_t n_rows, int64_t V) {
  Batch b;
  b.B = n_rows;
  b.T = T;
  b.tokens.assign(tokens.begin() + first_row * T, tokens.begin() + (first_row + n_rows) * T);
  b.targets.assign(targets.begin() + first_row * T, targets.begin() + (first_row + n_rows) * T);
  b.finalize(V);
  return b;
}

void check_accumulation(const ModelConfig& c) {
  const int64_t B = 4, T = 9, V = c.vocab_size;
  std::mt19937 rng(5);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % V);
  for (int64_t i = 0; i < B * T; ++i) targets[i] = (i % T == T - 1 || rng() % 4 == 0) ? -1 : tokens[i + 1];
  Batch whole = rows(tokens, targets, B, T, 0, B, V);
  const double denom = static_cast<double>(whole.n_targets());

  Transformer one(c, PrecisionConfig{}), two(c, PrecisionConfig{});
  one.init(3);
  two.init(3);
  Activations a;
  const double l1 = one.forward(whole, a, denom);
  one.backward(a);
  double l2 = 0;
  for (int64_t m = 0; m < 2; ++m) {
    Batch part = rows(tokens, targets, B, T, m * 2, 2, V);
    Activations acts;
    l2 += two.forward(part, acts, denom, nullptr, nullptr, 0.5);
    two.backward(acts);
  }
  EXPECT_NEAR(l2, l1, 1e-6 * std::fabs(l1));
  for (size_t i = 0; i < one.params().size(); ++i) {
    const Param* p = one.params()[i].param;
    const Param* q = two.params()[i].param;
    if (!p->grad.defined()) continue;
    double num = 0, den = 0;
    for (int64_t j = 0; j < p->value.numel(); ++j) {
      num += std::pow(double(p->g()[j]) - q->g()[j], 2);
      den += std::pow(double(p->g()[j]), 2);
    }
    EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 1e-5) << one.params()[i].name;
  }
}

ModelConfig base() {
  ModelConfig c;
  c.vocab_size = 31;
  c.d_model = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 40;
  c.max_seq_len = 16;
  c.init_std = 0.2;
  return c;
}

TEST(Accumulation, DenseOneVersusTwoMicroBatches) { check_accumulation(base()); }

TEST(Accumulation, MoeWithSequenceAuxLoss) {
  ModelConfig c = base();
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden = 16;
  c.moe.scoring = RouterScoring::kSigmoid;
  c.moe.aux_loss = AuxLoss::kSeq;
  c.moe.aux_loss_coef = 0.01;
  check_accumulation(c);
}

}  // namespace
}  // namespace strata
