// Whole-model gradient checks by central finite differences, for every layer kind: dense blocks
// (GQA, QKV bias, q/k norm, tied head), MoE blocks with softmax and sigmoid routers, top-k
// normalisation, scaling, group-limited routing, shared experts (plain and gated), capacity
// drops, each auxiliary loss, and activation recomputation.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/transformer.h"

namespace strata {
namespace {

ModelConfig tiny_dense() {
  ModelConfig c;
  c.arch = ModelArch::kLlama;
  c.vocab_size = 23;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 24;
  c.max_seq_len = 32;
  c.init_std = 0.3;
  return c;
}

ModelConfig tiny_moe(RouterScoring scoring) {
  ModelConfig c = tiny_dense();
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden = 12;
  c.moe.first_k_dense = 1;
  c.moe.scoring = scoring;
  return c;
}

Batch make_batch(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * T; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % V));
  for (int64_t i = 0; i < B * T; ++i) b.targets.push_back((i % T == T - 1 || i % 5 == 2) ? -1 : b.tokens[(i + 1) % (B * T)]);
  b.finalize(V);
  return b;
}

// Router choices of every MoE block in a forward: finite differences across a changed choice
// measure a jump, not a derivative, so such elements are skipped.
std::vector<int32_t> routing(const Activations& acts) {
  std::vector<int32_t> out;
  for (const auto& b : acts.blocks) out.insert(out.end(), b.moe.topk_idx.begin(), b.moe.topk_idx.end());
  return out;
}

void check_gradients(const ModelConfig& config, uint64_t seed = 5) {
  PrecisionConfig precision;
  Transformer model(config, precision);
  model.init(seed);
  // Non-trivial norm weights and biases, so their gradients are exercised away from 1 and 0.
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (const ParamRef& p : model.params()) {
    if (p.kind == ParamKind::kNorm || p.kind == ParamKind::kBias || p.kind == ParamKind::kRouterBias) {
      for (int64_t i = 0; i < p.param->value.numel(); ++i) p.param->v()[i] += u(rng);
    }
  }
  Batch batch = make_batch(2, 7, config.vocab_size, 11);
  const double denom = static_cast<double>(batch.n_targets());
  zero_grads(model.params());
  Activations acts;
  model.forward(batch, acts, denom);
  const std::vector<int32_t> base_routing = routing(acts);
  model.backward(acts);

  int checked = 0, skipped = 0;
  for (const ParamRef& p : model.params()) {
    if (!p.param->grad.defined()) continue;
    const int64_t n = p.param->value.numel();
    const int samples = static_cast<int>(std::min<int64_t>(n, 6));
    for (int s = 0; s < samples; ++s) {
      const int64_t i = (static_cast<int64_t>(rng()) % n + n) % n;
      float* v = p.param->v() + i;
      const float orig = *v, eps = 3e-3f;
      *v = orig + eps;
      Activations ap;
      const double lp = model.forward(batch, ap, denom);
      *v = orig - eps;
      Activations am;
      const double lm = model.forward(batch, am, denom);
      *v = orig;
      if (routing(ap) != base_routing || routing(am) != base_routing) {
        ++skipped;
        continue;
      }
      const double fd = (lp - lm) / (2.0 * eps);
      const double an = p.param->g()[i];
      EXPECT_NEAR(an, fd, 2e-3 + 2e-2 * std::fabs(fd)) << p.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
  EXPECT_LE(skipped, checked / 4) << "too many routing flips to trust the check";
}

TEST(ModelGrad, DenseGqa) { check_gradients(tiny_dense()); }

TEST(ModelGrad, DenseQkvBiasTiedHead) {
  ModelConfig c = tiny_dense();
  c.qkv_bias = true;
  c.tie_embeddings = true;
  check_gradients(c);
}

TEST(ModelGrad, DenseQkNormRecompute) {
  ModelConfig c = tiny_dense();
  c.qk_norm = true;
  c.recompute = Recompute::kFull;
  check_gradients(c);
}

TEST(ModelGrad, MoeSoftmaxTopkNormSwitchAux) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.moe.aux_loss = AuxLoss::kSwitch;
  c.moe.aux_loss_coef = 0.05;
  check_gradients(c);
}

TEST(ModelGrad, MoeSoftmaxNoNormGatedSharedExpert) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.moe.norm_topk_prob = false;
  c.moe.n_shared_experts = 1;
  c.moe.shared_ffn_hidden = 20;
  c.moe.shared_expert_gate = true;
  check_gradients(c);
}

TEST(ModelGrad, MoeSigmoidGroupsBiasSharedSeqAux) {
  ModelConfig c = tiny_moe(RouterScoring::kSigmoid);
  c.moe.n_group = 2;
  c.moe.topk_group = 1;
  c.moe.routed_scaling_factor = 2.5;
  c.moe.n_shared_experts = 1;
  c.moe.aux_loss = AuxLoss::kSeq;
  c.moe.aux_loss_coef = 0.05;
  check_gradients(c);
}

// Auxiliary losses large enough to dominate the gradient, so an error in theirs cannot hide
// under the tolerance of the language-model term.
TEST(ModelGrad, SeqAuxDominant) {
  ModelConfig c = tiny_moe(RouterScoring::kSigmoid);
  c.moe.aux_loss = AuxLoss::kSeq;
  c.moe.aux_loss_coef = 30.0;
  check_gradients(c);
}

TEST(ModelGrad, SwitchAuxDominant) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.n_layers = 3;
  c.moe.aux_loss = AuxLoss::kSwitch;
  c.moe.aux_loss_coef = 30.0;
  check_gradients(c);
}

TEST(ModelGrad, MoeCapacityDropsAndRecompute) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.moe.capacity_factor = 0.6;
  c.recompute = Recompute::kFull;
  check_gradients(c);
}

TEST(Model, CapacityFactorDropsAndCountsTokens) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.moe.capacity_factor = 0.5;
  Transformer model(c, PrecisionConfig{});
  model.init(3);
  Batch batch = make_batch(2, 8, c.vocab_size, 4);
  Activations acts;
  model.forward(batch, acts, 1.0);
  auto stats = model.moe_stats(acts);
  ASSERT_EQ(stats.size(), 1u);
  int64_t total = 0;
  for (int64_t l : stats[0].load) total += l;
  EXPECT_EQ(total, 16 * 2);                  // every token's two choices are counted
  EXPECT_GT(stats[0].dropped, 0);            // capacity 0.5 x even share must drop some
  c.moe.capacity_factor = 0.0;
  Transformer unlimited(c, PrecisionConfig{});
  unlimited.init(3);
  Activations a2;
  unlimited.forward(batch, a2, 1.0);
  EXPECT_EQ(unlimited.moe_stats(a2)[0].dropped, 0);
}

TEST(Model, AuxFreeBiasMovesTowardsBalance) {
  ModelConfig c = tiny_moe(RouterScoring::kSigmoid);
  Transformer model(c, PrecisionConfig{});
  model.init(3);
  MoeStats st{1, {10, 2, 4, 0}, 0};
  model.update_router_biases({st}, 1e-3f);
  const float* b = model.find_param("layers.1.moe.router_bias")->v();
  EXPECT_FLOAT_EQ(b[0], -1e-3f);  // overloaded: pushed down
  EXPECT_FLOAT_EQ(b[1], 1e-3f);   // under mean 4: pushed up
  EXPECT_FLOAT_EQ(b[2], 0.0f);    // at the mean: unchanged
  EXPECT_FLOAT_EQ(b[3], 1e-3f);
}

TEST(Model, InitIsKeyedByNameNotLayout) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.n_layers = 3;
  Transformer whole(c, PrecisionConfig{});
  whole.init(9);
  StageSpec tail{2, 3, false, true, {}};
  Transformer stage(c, PrecisionConfig{}, tail);
  stage.init(9);
  for (const ParamRef& p : stage.params()) {
    Param* q = whole.find_param(p.name);
    ASSERT_NE(q, nullptr) << p.name;
    ASSERT_EQ(p.param->value.numel(), q->value.numel());
    for (int64_t i = 0; i < q->value.numel(); ++i) ASSERT_EQ(p.param->v()[i], q->v()[i]) << p.name;
  }
}

TEST(Model, StagesChainToTheWholeModel) {
  ModelConfig c = tiny_moe(RouterScoring::kSigmoid);
  c.n_layers = 3;
  Transformer whole(c, PrecisionConfig{});
  whole.init(2);
  Transformer first(c, PrecisionConfig{}, StageSpec{0, 2, true, false, {}});
  Transformer last(c, PrecisionConfig{}, StageSpec{2, 3, false, true, {}});
  first.init(2);
  last.init(2);
  Batch batch = make_batch(2, 6, c.vocab_size, 8);
  const double denom = batch.n_targets();
  Activations aw, a1, a2;
  const double lw = whole.forward(batch, aw, denom);
  std::vector<float> h(2 * 6 * c.d_model), dh(h.size());
  first.forward(batch, a1, denom, nullptr, h.data());
  const double ls = last.forward(batch, a2, denom, h.data());
  EXPECT_NEAR(ls, lw, 1e-6 * std::fabs(lw));
  whole.backward(aw);
  last.backward(a2, nullptr, dh.data());
  first.backward(a1, dh.data());
  for (const ParamRef& p : first.params()) {
    if (!p.param->grad.defined()) continue;
    Param* q = whole.find_param(p.name);
    for (int64_t i = 0; i < q->value.numel(); ++i) ASSERT_NEAR(p.param->g()[i], q->g()[i], 1e-5) << p.name;
  }
}

// An interleaved stage: rank A holds chunks [0, 1) and [2, 3) (virtual stages 0 and 2), rank B
// [1, 2); with tied embeddings A holds the embedding and the head's tied copy in one Transformer.
TEST(Model, ChunksChainToTheWholeModel) {
  ModelConfig c = tiny_moe(RouterScoring::kSigmoid);
  c.n_layers = 3;
  c.tie_embeddings = true;
  Transformer whole(c, PrecisionConfig{});
  whole.init(4);
  StageSpec sa;
  sa.chunks = {{0, 1}, {2, 3}};
  Transformer a(c, PrecisionConfig{}, sa);
  Transformer b(c, PrecisionConfig{}, StageSpec{1, 2, false, false, {}});
  a.init(4);
  b.init(4);
  EXPECT_EQ(a.n_chunks(), 2);
  EXPECT_FALSE(a.whole());
  EXPECT_TRUE(whole.whole());
  Batch batch = make_batch(2, 6, c.vocab_size, 8);
  const double denom = batch.n_targets();
  Activations aw, a0, b0, a1;
  const double lw = whole.forward(batch, aw, denom);
  std::vector<float> h0(2 * 6 * c.d_model), h1(h0.size()), d1(h0.size()), d0(h0.size());
  a.forward(batch, a0, denom, nullptr, h0.data(), 1.0, 0);
  b.forward(batch, b0, denom, h0.data(), h1.data());
  const double ls = a.forward(batch, a1, denom, h1.data(), nullptr, 1.0, 1);
  EXPECT_NEAR(ls, lw, 1e-6 * std::fabs(lw));
  whole.backward(aw);
  a.backward(a1, nullptr, d1.data());
  b.backward(b0, d1.data(), d0.data());
  a.backward(a0, d0.data());
  for (Transformer* t : {&a, &b})
    for (const ParamRef& p : t->params()) {
      if (!p.param->grad.defined()) continue;
      Param* q = whole.find_param(p.name);
      for (int64_t i = 0; i < q->value.numel(); ++i) ASSERT_NEAR(p.param->g()[i], q->g()[i], 1e-5) << p.name;
    }
  EXPECT_EQ(a.moe_stats(a1).size(), 1u);  // block 2 only
  EXPECT_EQ(a.moe_stats(a1)[0].block, 2);
}

TEST(Model, Bf16ModeStaysCloseToFp32) {
  ModelConfig c = tiny_moe(RouterScoring::kSoftmax);
  c.init_std = 0.1;
  Transformer a(c, PrecisionConfig{});
  PrecisionConfig bf;
  bf.mode = PrecisionMode::kBf16;
  Transformer b(c, bf);
  a.init(1);
  b.init(1);
  Batch batch = make_batch(2, 8, c.vocab_size, 3);
  Activations xa, xb;
  const double la = a.forward(batch, xa, batch.n_targets()), lb = b.forward(batch, xb, batch.n_targets());
  EXPECT_NE(la, lb);                               // bf16 rounding really happened
  EXPECT_NEAR(lb, la, 1e-2 * std::fabs(la));       // and stays within bf16's ~3 significant digits
}

}  // namespace
}  // namespace strata
