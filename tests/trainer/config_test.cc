// Config system: every malformed config under tests/configs/bad/ gives exactly the one-line error
// its first line promises; overrides are typed; the resolved YAML loads back to the same structs.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "trainer/config_yaml.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ConfigBad, EveryMalformedConfigGivesItsOneLineError) {
  fs::path dir = fs::path(STRATA_SOURCE_DIR) / "tests/configs/bad";
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    std::string text = read_file(entry.path());
    const std::string tag = "# expect: ";
    ASSERT_EQ(text.rfind(tag, 0), 0u) << entry.path() << " must start with '" << tag << "'";
    std::string expected = text.substr(tag.size(), text.find('\n') - tag.size());
    std::string name = "tests/configs/bad/" + entry.path().filename().string();
    auto cfg = parse_experiment_config(text, name);
    ASSERT_FALSE(cfg.ok()) << name << " parsed without error";
    EXPECT_EQ(std::string(cfg.status().message()), expected) << name;
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

TEST(ConfigBad, AllProblemsAreReportedOnePerLine) {
  auto cfg = parse_experiment_config("model:\n  n_layers: x\n  d_modle: 3\noptim:\n  lr: 0\n", "t.yaml");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(std::string(cfg.status().message()),
            "t.yaml:2: model.n_layers: expected an integer, got \"x\"\n"
            "t.yaml:3: model.d_modle: unknown key; did you mean model.d_model?\n"
            "t.yaml:5: optim.lr: 0 is out of range (must be > 0)");
}

TEST(ConfigBad, MissingFileIsNotFound) {
  auto cfg = load_experiment_config("/nonexistent/x.yaml");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(cfg.status().message().find("/nonexistent/x.yaml: cannot open config file"), std::string::npos);
}

TEST(ConfigSet, OverridesAreTypedAndWin) {
  auto cfg = parse_experiment_config("optim:\n  lr: 0.001\n", "t.yaml",
                                     {"optim.lr=0.01", "model.arch=qwen3_moe", "model.qk_norm=true",
                                      "model.moe.n_experts=8", "model.moe.expert_ffn_hidden=32",
                                      "precision.mode=fp8", "grpo.rewards={countdown: 1, format: 0.25}",
                                      "parallel.pipeline.layout=[2, 2]", "parallel.pp=2", "grpo.stop=[\"</answer>\"]"});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_DOUBLE_EQ(cfg->optim.lr, 0.01);
  EXPECT_EQ(cfg->model.moe.n_experts, 8);
  EXPECT_EQ(cfg->precision.mode, PrecisionMode::kFp8);
  EXPECT_EQ(cfg->grpo.rewards.at("format"), 0.25);
  EXPECT_EQ(cfg->parallel.pipeline.layout, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(cfg->grpo.stop, (std::vector<std::string>{"</answer>"}));
}

TEST(ConfigSet, BadOverridesNameTheSet) {
  struct Case {
    std::string set, expected;
  };
  std::vector<Case> cases = {
      {"optim.lr=fast", "--set optim.lr=fast: optim.lr: expected a finite number, got \"fast\""},
      {"optim.lrr=1", "--set optim.lrr=1: optim.lrr: unknown key; did you mean optim.lr?"},
      {"optim.lr", "--set optim.lr: expected key=value, e.g. --set optim.lr=1e-3"},
      {"optim.lr.x=1", "--set optim.lr.x=1: optim.lr is a value, not a section"},
      {"parallel.ep=3", "--set parallel.ep=3: parallel.ep: ep=3 needs an MoE model (model.moe.n_experts > 0)"},
  };
  for (const auto& c : cases) {
    auto cfg = parse_experiment_config("optim:\n  lr: 0.001\n", "t.yaml", {c.set});
    ASSERT_FALSE(cfg.ok()) << c.set;
    EXPECT_EQ(std::string(cfg.status().message()), c.expected);
  }
}

TEST(ConfigRoundTrip, ResolvedYamlLoadsToTheSameStructs) {
  auto cfg = parse_experiment_config(
      "train:\n  name: \"my run\"\n  steps: 7\nmodel:\n  rope_theta: 500000\n  init_std: 0.0123456789\n"
      "optim:\n  lr: 3e-4\n  eps: 1e-10\ngrpo:\n  stop: [\"</answer>\", \"a: b\", \"\\\"q\\\"\"]\n"
      "  rewards: {countdown: 1.0, format: 0.1}\nprecision:\n  mode: bf16\n",
      "t.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  std::string yaml = experiment_config_to_yaml(*cfg);
  auto again = parse_experiment_config(yaml, "resolved.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
  EXPECT_EQ(experiment_config_to_yaml(*again), yaml);
  EXPECT_EQ(again->train.name, "my run");
  EXPECT_EQ(again->optim.lr, 3e-4);
  EXPECT_EQ(again->model.init_std, 0.0123456789);
  EXPECT_EQ(again->optim.eps, 1e-10);
  EXPECT_EQ(again->grpo.stop, (std::vector<std::string>{"</answer>", "a: b", "\"q\""}));
  EXPECT_EQ(again->precision.mode, PrecisionMode::kBf16);
}

TEST(ConfigRoundTrip, DefaultsRoundTripAndEveryKeyIsDocumented) {
  ExperimentConfig defaults;
  std::string yaml = experiment_config_to_yaml(defaults);
  auto again = parse_experiment_config(yaml, "defaults.yaml");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(experiment_config_to_yaml(*again), yaml);
  std::string docs = config_reference_markdown();
  // One table row per leaf key, and every line of the resolved YAML carries a doc comment.
  std::istringstream lines(yaml);
  for (std::string line; std::getline(lines, line);) EXPECT_NE(line.find("# "), std::string::npos) << line;
  EXPECT_NE(docs.find("| `model.moe.n_experts` | int | `0` |"), std::string::npos);
  EXPECT_NE(docs.find("| `precision.mode` | fp32 \\| bf16 \\| fp8 | `fp32` |"), std::string::npos);
}

TEST(ConfigRepo, EveryShippedConfigIsValid) {
  fs::path dir = fs::path(STRATA_SOURCE_DIR) / "configs";
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    auto cfg = load_experiment_config(entry.path().string());
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    ++n;
  }
  EXPECT_GE(n, 1);
}

TEST(ClosestMatch, SuggestsOnlyCloseWords) {
  EXPECT_EQ(closest_match("d_modle", {"d_model", "n_layers"}), "d_model");
  EXPECT_EQ(closest_match("zzzzzz", {"d_model", "n_layers"}), "");
}

}  // namespace
}  // namespace strata
