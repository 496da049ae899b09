// train.device: cuda end to end: the tiny dense pretrain config trained on cuda:0 gives the CPU
// run's loss and gradient-norm curves (fp32, relative 1e-4 per step: the GPU sums in other
// orders), evaluates, checkpoints from device memory, and resumes exactly (a run stopped after 2
// steps and resumed on the GPU ends where the uninterrupted one does). Skipped without a GPU;
// the refusals are in tests/cli/commands_test.sh.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/kernels/gpu_harness.h"
#include "trainer/config_yaml.h"
#include "trainer/train.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// The repository: STRATA_SOURCE_DIR from the environment (a bundle run on another machine:
// scripts/gpu_check.sh sets it), else the one this binary was built from.
fs::path source_dir() {
  const char* env = std::getenv("STRATA_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path(STRATA_SOURCE_DIR);
}

ExperimentConfig load(const std::vector<std::string>& sets) {
  auto c = load_experiment_config((source_dir() / "configs" / "tiny_dense.yaml").string(), sets);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return c.ok() ? *c : ExperimentConfig();
}

// step -> {loss, grad_norm} of the train records in a run's metrics.jsonl.
std::map<int64_t, std::pair<double, double>> curve(const fs::path& run) {
  std::map<int64_t, std::pair<double, double>> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("kind", "") != "train") continue;
    out[j["step"].get<int64_t>()] = {j["loss"].get<double>(), j["grad_norm"].get<double>()};
  }
  return out;
}

GPU_TEST(CudaTrainTest, DenseRunMatchesTheCpuAndResumesExactly) {
  const fs::path out = fs::temp_directory_path() / ("strata_cuda_train_" + std::to_string(gputest::fresh_seed()));
  auto run = [&](const std::string& name, const std::string& device, const std::string& resume, int64_t stop_after) {
    const ExperimentConfig c = load({"train.steps=4", "train.out_dir=" + out.string(), "train.name=" + name,
                                     "train.device=" + device, "log.every=1", "checkpoint.every=1",
                                     "checkpoint.resume=" + resume, "log.level=warn"});
    TrainOptions o;
    o.stop_after = stop_after;
    const Status st = run_training(c, o);
    EXPECT_TRUE(st.ok()) << name << ": " << st.message();
  };
  run("cpu", "cpu", "never", -1);
  run("gpu", "cuda", "never", -1);
  run("gpu_resumed", "cuda", "never", 2);
  run("gpu_resumed", "cuda", "auto", -1);

  const auto cpu = curve(out / "cpu"), gpu = curve(out / "gpu"), resumed = curve(out / "gpu_resumed");
  ASSERT_EQ(cpu.size(), 4u);
  ASSERT_EQ(gpu.size(), 4u);
  for (const auto& [step, lg] : cpu) {
    EXPECT_NEAR(gpu.at(step).first, lg.first, 1e-4 * lg.first) << "loss at step " << step;
    EXPECT_NEAR(gpu.at(step).second, lg.second, 1e-4 * lg.second) << "grad_norm at step " << step;
  }
  ASSERT_TRUE(resumed.count(4));
  EXPECT_NEAR(resumed.at(4).first, gpu.at(4).first, 1e-6 * gpu.at(4).first) << "resumed on the GPU";
  fs::remove_all(out);
}

}  // namespace
}  // namespace strata
