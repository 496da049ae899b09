// Hugging Face export (trainer/hf_export.h) and import in any layout, for every architecture of
// tests/golden/models (transformers' own tiny models): their weights as a Strata checkpoint,
// exported in fp32, load back bitwise (import(export(ckpt))) and their config.json round-trips;
// bf16 rounds to nearest even; an ep = 2 rank imports only its experts; an injected write failure
// leaves no directory; the data held at once is one tensor (fp32 + bf16), not a shard.
#include "trainer/hf_export.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/safetensors.h"
#include "data/tokenizer.h"
#include "model/hf.h"
#include "trainer/checkpoint.h"
#include "trainer/config_yaml.h"
#include "trainer/experiment_config.h"
#include "trainer/run_common.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const char* kArchs[] = {"llama", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "glm4_moe"};

fs::path golden(const std::string& arch) { return fs::path(STRATA_SOURCE_DIR) / "tests/golden/models" / arch; }

class HfExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() / ("strata_export_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // The golden model of `arch` as a one-process Strata checkpoint; returns its step directory.
  std::string checkpoint_of(const std::string& arch, Transformer** model_out = nullptr) {
    auto c = load_hf_config(golden(arch).string());
    EXPECT_TRUE(c.ok()) << c.status().message();
    ExperimentConfig cfg;
    cfg.model = *c;
    cfg.data.tokenizer = "char";
    cfg.data.seq_len = 32;
    model_ = std::make_unique<Transformer>(cfg.model, PrecisionConfig{});
    EXPECT_TRUE(load_hf_weights(*model_, golden(arch).string()).ok());
    std::vector<CheckpointTensor> tensors;
    for (const ParamRef& p : model_->params()) tensors.push_back(param_tensor(p.name, p));
    CheckpointMeta meta;
    meta.step = 1;
    meta.config_yaml = experiment_config_to_yaml(cfg);
    const std::string ckpt_root = (root_ / arch / "ckpt").string();
    Status s = save_checkpoint(ckpt_root, meta, tensors, 0);
    EXPECT_TRUE(s.ok()) << s.message();
    if (model_out) *model_out = model_.get();
    return ckpt_root;
  }

  fs::path root_;
  std::unique_ptr<Transformer> model_;
};

TEST_F(HfExportTest, Fp32RoundTripIsBitwiseForEveryArchitecture) {
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    Transformer* original = nullptr;
    const std::string ckpt = checkpoint_of(arch, &original);
    ExportOptions o;
    o.out = (root_ / arch / "hf").string();
    o.bf16 = false;
    o.progress = false;
    o.max_shard_bytes = 20'000;  // several shards even for these tiny models
    auto r = export_hf(ckpt, o);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_GT(r->shards, 1);
    // The config survives: read back and written again, it is the same text.
    auto back = load_hf_config(o.out);
    ASSERT_TRUE(back.ok()) << back.status().message();
    auto j1 = model_config_to_hf_json(original->config(), "float32", -1, 4);
    auto j2 = model_config_to_hf_json(*back, "float32", -1, 4);
    ASSERT_TRUE(j1.ok() && j2.ok());
    EXPECT_EQ(*j1, *j2);
    // The weights: bitwise.
    Transformer imported(*back, PrecisionConfig{});
    Status s = load_hf_weights(imported, o.out);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_EQ(imported.params().size(), original->params().size());
    for (size_t i = 0; i < imported.params().size(); ++i) {
      const Tensor& a = original->params()[i].param->value;
      const Tensor& b = imported.params()[i].param->value;
      ASSERT_EQ(a.numel(), b.numel()) << original->params()[i].name;
      EXPECT_EQ(std::memcmp(a.f32(), b.f32(), a.numel() * sizeof(float)), 0) << original->params()[i].name;
    }
    // Streaming: one tensor's fp32 data at a time.
    EXPECT_EQ(r->buffer_peak_bytes, r->largest_tensor_bytes);
    // transformers' layout: an index naming every tensor's shard, config and tokenizer files.
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
                          "tokenizer_config.json"})
      EXPECT_TRUE(fs::exists(fs::path(o.out) / f)) << f;
  }
}

TEST_F(HfExportTest, Bf16RoundsToNearestEvenAndHoldsOneTensor) {
  Transformer* original = nullptr;
  const std::string ckpt = checkpoint_of("qwen3_moe", &original);
  ExportOptions o;
  o.out = (root_ / "bf16").string();
  o.progress = false;
  auto r = export_hf(ckpt, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->shards, 1);
  EXPECT_EQ(r->buffer_peak_bytes, r->largest_tensor_bytes * 3 / 2);  // fp32 + its bf16 copy
  auto f = SafetensorsFile::open((fs::path(o.out) / "model-00001-of-00001.safetensors").string());
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  const Param* wq = original->find_param("layers.0.attn.wq");
  auto t = f->read_f32("model.layers.0.self_attn.q_proj.weight");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(f->find("model.layers.0.self_attn.q_proj.weight")->dtype, "BF16");
  for (int64_t i = 0; i < wq->value.numel(); ++i) ASSERT_EQ(t->f32()[i], round_to_bf16(wq->v()[i])) << i;
}

TEST_F(HfExportTest, ExpertParallelRanksImportTheirExperts) {
  Transformer* original = nullptr;
  const std::string ckpt = checkpoint_of("qwen3_moe", &original);
  ExportOptions o;
  o.out = (root_ / "hf").string();
  o.bf16 = false;
  o.progress = false;
  ASSERT_TRUE(export_hf(ckpt, o).ok());
  for (int64_t r = 0; r < 2; ++r) {
    Transformer shard(original->config(), PrecisionConfig{}, StageSpec{}, ExpertShard{2, r});
    Status s = load_hf_weights(shard, o.out);
    ASSERT_TRUE(s.ok()) << s.message();
    const Param* mine = shard.find_param("layers.1.moe.experts.w_gate");
    const Param* all = original->find_param("layers.1.moe.experts.w_gate");
    const int64_t n = mine->value.numel();
    EXPECT_EQ(n * 2, all->value.numel());
    EXPECT_EQ(std::memcmp(mine->v(), all->v() + r * n, n * sizeof(float)), 0) << "rank " << r;
  }
}

TEST_F(HfExportTest, FailureLeavesNothingAndExistingOutputIsKept) {
  const std::string ckpt = checkpoint_of("llama");
  ExportOptions o;
  o.out = (root_ / "hf").string();
  o.progress = false;
  o.max_shard_bytes = 20'000;
  setenv("STRATA_EXPORT_FAULT", "shard:2", 1);
  auto r = export_hf(ckpt, o);
  unsetenv("STRATA_EXPORT_FAULT");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("write failed"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("nothing was written"));
  for (const auto& e : fs::directory_iterator(root_)) EXPECT_THAT(e.path().filename().string(), ::testing::Not(HasSubstr("hf")));
  // A finished export is not overwritten without force; with force it is replaced.
  ASSERT_TRUE(export_hf(ckpt, o).ok());
  auto again = export_hf(ckpt, o);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("pass --force"));
  o.force = true;
  EXPECT_TRUE(export_hf(ckpt, o).ok());
}

TEST(HfConfig, WhatAnArchitectureCannotExpressIsRefusedByName) {
  auto c = load_hf_config(golden("qwen3_moe").string());
  ASSERT_TRUE(c.ok());
  ModelConfig m = *c;
  m.moe.scoring = RouterScoring::kSigmoid;
  auto j = model_config_to_hf_json(m, "float32", -1, -1);
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(std::string(j.status().message()), HasSubstr("model.moe.scoring"));
  m = *c;
  m.qkv_bias = true;
  j = model_config_to_hf_json(m, "float32", -1, -1);
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(std::string(j.status().message()), HasSubstr("model.qkv_bias"));
}

TEST(HfTokenizer, CharTokenizerJsonHasEveryAsciiCharacter) {
  auto j = nlohmann::json::parse(char_tokenizer_json());
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["vocab"].size(), 128u);
  EXPECT_EQ(j["model"]["vocab"]["a"], 97);
  EXPECT_EQ(j["model"]["vocab"]["\u010a"], 10);  // newline in GPT-2's byte alphabet (U+010A)
  EXPECT_EQ(j["model"]["vocab"]["\u0120"], 32);  // space (U+0120)
  EXPECT_EQ(j["added_tokens"][1]["id"], 4);
  // Strata reads it back as the char tokenizer.
  const fs::path dir = fs::temp_directory_path() / ("strata_chartok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << char_tokenizer_json();
  auto tok = load_tokenizer((dir / "tokenizer.json").string());
  fs::remove_all(dir);
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ((*tok)->name(), "char");
}

}  // namespace
}  // namespace strata
