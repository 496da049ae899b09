// The fp8 recipes inside a whole model (kernels' own golden tests prove the GEMM numerics):
//   - fp8 losses and gradients stay close to fp32 (blockwise and delayed), bf16 in between;
//   - fp8 caching of layer inputs changes nothing in the forward, nothing at all for the delayed
//     recipe (its backward uses the forward's own quantisation either way), only the re-tiled
//     weight gradients for blockwise, and shrinks the activation memory;
//   - the quantised-weight cache follows mark_weights_changed();
//   - high_precision_modules decides per module kind, the router staying fp32 outside fp8;
//   - every LinearGemm has a unique global name (checkpoint keys of the amax histories).
#include <cmath>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "model/transformer.h"

namespace strata {
namespace {

ModelConfig moe_config() {
  ModelConfig c;
  c.arch = ModelArch::kQwen3Moe;
  c.vocab_size = 64;
  c.d_model = 160;  // 1x128 tiles plus a 32-wide remainder
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 40;
  c.ffn_hidden = 192;
  c.max_seq_len = 64;
  c.qk_norm = true;
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden = 96;
  c.moe.first_k_dense = 1;
  return c;
}

Batch random_batch(const ModelConfig& c, int64_t B, int64_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * T; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % c.vocab_size));
  for (int64_t i = 0; i < B * T; ++i) b.targets.push_back(i % T == T - 1 ? -1 : b.tokens[i + 1]);
  b.finalize(c.vocab_size);
  return b;
}

struct RunResult {
  double loss = 0;
  std::vector<std::vector<float>> grads;
  int64_t act_bytes = 0;
};

RunResult run(const ModelConfig& c, const PrecisionConfig& p, const Batch& batch) {
  Transformer m(c, p);
  m.init(11);
  Activations acts;
  RunResult r;
  r.loss = m.forward(batch, acts, static_cast<double>(batch.n_targets()));
  r.act_bytes = activation_bytes(acts);
  m.backward(acts);
  for (const ParamRef& ref : m.params()) {
    if (!ref.param->grad.defined()) continue;
    r.grads.emplace_back(ref.param->g(), ref.param->g() + ref.param->value.numel());
  }
  return r;
}

// ||a - b|| / ||b|| over all gradients.
double grad_rel_diff(const RunResult& a, const RunResult& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.grads.size(); ++i)
    for (size_t j = 0; j < a.grads[i].size(); ++j) {
      num += std::pow(double(a.grads[i][j]) - b.grads[i][j], 2);
      den += std::pow(double(b.grads[i][j]), 2);
    }
  return std::sqrt(num / den);
}

PrecisionConfig fp8(Fp8Recipe recipe, bool cache = false) {
  PrecisionConfig p;
  p.mode = PrecisionMode::kFp8;
  p.fp8.recipe = recipe;
  p.fp8.cache_activations = cache;
  return p;
}

TEST(Fp8Model, CloseToFp32AndBf16InBetween) {
  const ModelConfig c = moe_config();
  const Batch batch = random_batch(c, 4, 48, 1);
  PrecisionConfig bf16;
  bf16.mode = PrecisionMode::kBf16;
  const RunResult ref = run(c, PrecisionConfig{}, batch), b = run(c, bf16, batch);
  const RunResult blk = run(c, fp8(Fp8Recipe::kBlockwise), batch), del = run(c, fp8(Fp8Recipe::kTensorwiseDelayed), batch);
  EXPECT_LT(std::fabs(b.loss - ref.loss), 1e-3 * ref.loss);
  EXPECT_LT(std::fabs(blk.loss - ref.loss), 2e-3 * ref.loss);
  EXPECT_LT(std::fabs(del.loss - ref.loss), 2e-3 * ref.loss);
  EXPECT_NE(blk.loss, ref.loss);  // fp8 really ran
  const double gb = grad_rel_diff(b, ref), g8 = grad_rel_diff(blk, ref), gd = grad_rel_diff(del, ref);
  EXPECT_LT(gb, 0.02);
  EXPECT_LT(g8, 0.15);
  EXPECT_LT(gd, 0.15);
  EXPECT_LT(gb, g8) << "bf16 should sit between fp32 and fp8";
}

TEST(Fp8Model, CachedInputsBlockwiseRetileOnlyWeightGradients) {
  const ModelConfig c = moe_config();
  const Batch batch = random_batch(c, 4, 48, 2);
  const RunResult plain = run(c, fp8(Fp8Recipe::kBlockwise), batch);
  const RunResult cached = run(c, fp8(Fp8Recipe::kBlockwise, true), batch);
  EXPECT_EQ(cached.loss, plain.loss);  // the forward consumes the same quantisation
  const double d = grad_rel_diff(cached, plain);
  EXPECT_GT(d, 0.0) << "two quantisations (1x128 then 128x1) must differ from one";
  EXPECT_LT(d, 0.05);
  EXPECT_LT(cached.act_bytes, plain.act_bytes);
}

TEST(Fp8Model, CachedInputsDelayedChangeNothing) {
  const ModelConfig c = moe_config();
  const Batch batch = random_batch(c, 4, 48, 3);
  const RunResult plain = run(c, fp8(Fp8Recipe::kTensorwiseDelayed), batch);
  const RunResult cached = run(c, fp8(Fp8Recipe::kTensorwiseDelayed, true), batch);
  EXPECT_EQ(cached.loss, plain.loss);
  EXPECT_EQ(grad_rel_diff(cached, plain), 0.0);
  EXPECT_LT(cached.act_bytes, plain.act_bytes);
}

TEST(Fp8Model, WeightCacheFollowsTheEpoch) {
  const ModelConfig c = moe_config();
  const Batch batch = random_batch(c, 2, 16, 4);
  Transformer m(c, fp8(Fp8Recipe::kBlockwise));
  m.init(5);
  const Tensor before = m.logits(batch);
  for (const ParamRef& p : m.params())
    for (int64_t i = 0; i < p.param->value.numel(); ++i) p.param->v()[i] *= 1.5f;
  const Tensor stale = m.logits(batch);  // weights changed without telling the model
  m.mark_weights_changed();
  const Tensor fresh = m.logits(batch);

  Transformer other(c, fp8(Fp8Recipe::kBlockwise));
  other.init(5);
  for (const ParamRef& p : other.params())
    for (int64_t i = 0; i < p.param->value.numel(); ++i) p.param->v()[i] *= 1.5f;
  other.mark_weights_changed();
  const Tensor want = other.logits(batch);
  int64_t same_as_want = 0, stale_differs = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    same_as_want += fresh.f32()[i] == want.f32()[i];
    stale_differs += stale.f32()[i] != want.f32()[i];
  }
  EXPECT_EQ(same_as_want, want.numel());
  EXPECT_GT(stale_differs, 0) << "the stale logits should show the cached (old) weights were used";
  EXPECT_GT(before.numel(), 0);
}

TEST(Fp8Model, HighPrecisionModulesPerKind) {
  const ModelConfig c = moe_config();
  PrecisionConfig p = fp8(Fp8Recipe::kBlockwise);
  p.fp8.high_precision_modules = {"embedding", "head", "router", "norm", "attention_core", "experts"};
  Transformer m(c, p);
  std::set<std::string> names;
  for (LinearGemm* g : m.linear_gemms()) {
    EXPECT_TRUE(names.insert(g->name()).second) << "duplicate GEMM name " << g->name();
    const std::string& n = g->name();
    if (n.find(".experts.") != std::string::npos || n == "head") {
      EXPECT_EQ(g->mode(), PrecisionMode::kBf16) << n;
    } else if (n.find(".router") != std::string::npos) {
      EXPECT_EQ(g->mode(), PrecisionMode::kFp32) << n;
    } else {
      EXPECT_EQ(g->mode(), PrecisionMode::kFp8) << n;  // attention projections, dense MLP
    }
  }
  EXPECT_TRUE(names.count("layers.1.moe.experts.3.w_down"));
  EXPECT_TRUE(names.count("layers.0.mlp.w_up"));
  p.fp8.high_precision_modules = {"embedding", "head", "norm", "attention_core"};  // router in fp8
  Transformer r(c, p);
  for (LinearGemm* g : r.linear_gemms())
    if (g->name().find(".router") != std::string::npos) EXPECT_EQ(g->mode(), PrecisionMode::kFp8);
}

}  // namespace
}  // namespace strata
