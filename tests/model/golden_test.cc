// Strata's model against Hugging Face transformers 5.23 on tiny random models of every supported
// architecture (tests/golden/models, made by scripts/make_golden_models.py): each is imported
// through the Hugging Face import path, then logits and loss must match to 1e-4 relative, every
// parameter gradient to 1e-3 relative, and MoE routers must choose the same experts.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "model/hf.h"
#include "model/transformer.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

double rel_err(const float* a, const float* ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, MatchesTransformers) {
  const std::string dir = (fs::path(STRATA_SOURCE_DIR) / "tests/golden/models" / GetParam()).string();
  auto config = load_hf_config(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  Transformer model(*config, PrecisionConfig{});
  Status loaded = load_hf_weights(model, dir);
  ASSERT_TRUE(loaded.ok()) << loaded;

  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto ids = golden->read("input_ids");
  auto labels = golden->read("labels");
  ASSERT_TRUE(ids.ok() && labels.ok());
  const int64_t B = ids->dim(0), T = ids->dim(1), V = config->vocab_size;
  Batch batch;
  batch.B = B;
  batch.T = T;
  const int64_t* id = ids->data<int64_t>();
  const int64_t* lab = labels->data<int64_t>();
  for (int64_t i = 0; i < B * T; ++i) {
    batch.tokens.push_back(static_cast<int32_t>(id[i]));
    // transformers shifts labels: position t predicts labels[t + 1]; -100 means no loss.
    const bool last = i % T == T - 1;
    batch.targets.push_back(last || lab[i + 1] < 0 ? -1 : static_cast<int32_t>(lab[i + 1]));
  }
  batch.finalize(V);

  zero_grads(model.params());
  Activations acts;
  const double loss = model.forward(batch, acts, static_cast<double>(batch.n_targets()));
  auto ref_loss = golden->read_f32("loss");
  ASSERT_TRUE(ref_loss.ok());
  EXPECT_NEAR(loss, ref_loss->f32()[0], 1e-4 * std::fabs(ref_loss->f32()[0])) << "loss";
  auto ref_logits = golden->read_f32("logits");
  ASSERT_TRUE(ref_logits.ok());
  EXPECT_LT(rel_err(acts.logits.f32(), ref_logits->f32(), B * T * V), 1e-4) << "logits";

  // Router choices, per MoE block, compared as sets (glm4_moe's top-k is unsorted).
  for (size_t bi = 0; bi < model.blocks().size(); ++bi) {
    const Block& blk = model.blocks()[bi];
    if (!blk.is_moe) continue;
    auto topk = golden->read("router_topk." + std::to_string(blk.index));
    ASSERT_TRUE(topk.ok()) << topk.status();
    const int64_t K = blk.moe.K;
    const auto& mine = acts.blocks[bi].moe.topk_idx;
    int mismatches = 0;
    for (int64_t t = 0; t < B * T; ++t) {
      std::set<int64_t> a(topk->data<int64_t>() + t * K, topk->data<int64_t>() + (t + 1) * K);
      std::set<int64_t> b(mine.begin() + t * K, mine.begin() + (t + 1) * K);
      mismatches += a != b;
    }
    EXPECT_EQ(mismatches, 0) << "layer " << blk.index;
  }

  model.backward(acts);
  int compared = 0;
  for (const ParamRef& p : model.params()) {
    if (!p.param->grad.defined()) continue;
    const std::vector<std::string> names = hf_tensor_names(*config, p.name);
    const int64_t per = p.param->value.numel() / static_cast<int64_t>(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      auto ref = golden->read_f32("grad." + names[i]);
      ASSERT_TRUE(ref.ok()) << ref.status();
      EXPECT_LT(rel_err(p.param->g() + i * per, ref->f32(), per), 1e-3) << p.name << " <- " << names[i];
      ++compared;
    }
  }
  EXPECT_GT(compared, 10);
}

INSTANTIATE_TEST_SUITE_P(Architectures, Golden,
                         ::testing::Values("llama", "llama3_rope", "qwen2", "qwen3", "mixtral", "qwen2_moe",
                                           "qwen3_moe", "glm4_moe"));

TEST(HfConfig, UnsupportedFieldsAreNamed) {
  auto bad = model_config_from_hf_json(R"({"model_type": "gpt2"})", "x/config.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("x/config.json: model_type: \"gpt2\" is not supported"), std::string::npos);
  auto missing = model_config_from_hf_json(R"({"model_type": "llama", "vocab_size": 10})", "c.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "c.json: hidden_size: missing");
  auto partial = model_config_from_hf_json(
      R"({"model_type": "glm4_moe", "vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 2, "rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.5}})",
      "g.json");
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.status().message().find("partial_rotary_factor: 0.5: only full rotary"), std::string::npos);
}

TEST(HfWeights, MissingAndForeignTensorsAreRefused) {
  const std::string src = (fs::path(STRATA_SOURCE_DIR) / "tests/golden/models/llama").string();
  auto config = load_hf_config(src);
  ASSERT_TRUE(config.ok());
  ModelConfig bigger = *config;
  bigger.n_layers += 1;  // the file lacks the third block
  Transformer model(bigger, PrecisionConfig{});
  Status s = load_hf_weights(model, src);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.layers.2.input_layernorm.weight (for layers.2.attn_norm) is missing"),
            std::string::npos) << s;
  ModelConfig smaller = *config;
  smaller.n_layers -= 1;
  Transformer model2(smaller, PrecisionConfig{});
  s = load_hf_weights(model2, src);
  EXPECT_TRUE(s.ok()) << "layers past n_layers are treated as multi-token-prediction extras: " << s;
}

}  // namespace
}  // namespace strata
