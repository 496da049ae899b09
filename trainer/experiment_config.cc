#include "trainer/experiment_config.h"

#include "absl/strings/str_cat.h"
#include "core/device.h"
#include "core/log.h"
#include "data/tasks.h"

namespace strata {

void TrainConfig::validate(ConfigChecker& c) const {
  if (name.empty() || name.find('/') != std::string::npos) {
    c.fail("name", absl::StrCat("\"", name, "\" must be a non-empty name without '/'"));
  }
  if (device == DeviceChoice::kCuda && !built_with_cuda()) {
    c.fail("device", "cuda, but this strata binary was built without CUDA (-DSTRATA_CUDA=ON)");
  }
}

void LogConfig::validate(ConfigChecker& c) const {
  LogLevel level_value;
  if (!parse_log_level(level, &level_value)) {
    c.fail("level", absl::StrCat("\"", level, "\" is not one of debug, info, warn, error"));
  }
}

void ExperimentConfig::validate(ConfigChecker& c) const {
  if (model.is_moe() && model.moe.n_experts % parallel.ep != 0) {
    c.fail("parallel.ep", absl::StrCat("ep=", parallel.ep, " must divide moe.n_experts=", model.moe.n_experts),
           {"model.moe.n_experts"});
  }
  if (!model.is_moe() && parallel.dispatch_fp8) {
    c.fail("parallel.dispatch_fp8", "needs an MoE model (model.moe.n_experts > 0): only MoE layers dispatch tokens",
           {"model.moe.n_experts"});
  }
  if (!model.is_moe() && parallel.ep > 1) {
    c.fail("parallel.ep", absl::StrCat("ep=", parallel.ep, " needs an MoE model (model.moe.n_experts > 0)"),
           {"model.moe.n_experts"});
  }
  if (parallel.pp * parallel.pipeline.virtual_stages > model.n_layers) {
    c.fail("parallel.pp",
           absl::StrCat("pp x virtual_stages = ", parallel.pp * parallel.pipeline.virtual_stages,
                        " stages for only n_layers=", model.n_layers, " blocks"),
           {"model.n_layers"});
  }
  if (!parallel.pipeline.layout.empty()) {
    int64_t total = 0;
    for (int64_t n : parallel.pipeline.layout) total += n;
    if (total != model.n_layers) {
      c.fail("parallel.pipeline.layout",
             absl::StrCat("assigns ", total, " blocks but model.n_layers=", model.n_layers), {"model.n_layers"});
    }
  }
  // GRPO's batch is grpo.prompts_per_step groups, each sampled and trained on one rank.
  if (train.mode == TrainMode::kGrpo && parallel.dp > 0 && grpo.prompts_per_step % parallel.dp != 0) {
    c.fail("grpo.prompts_per_step",
           absl::StrCat(grpo.prompts_per_step, " is not a multiple of dp = ", parallel.dp,
                        " (each rank samples whole groups)"),
           {"parallel.dp"});
  }
  if (train.mode != TrainMode::kGrpo && parallel.dp > 0 &&
      data.global_batch_size % (data.micro_batch_size * parallel.dp) != 0) {
    c.fail("data.global_batch_size",
           absl::StrCat(data.global_batch_size, " is not a multiple of micro_batch_size x dp = ",
                        data.micro_batch_size, " x ", parallel.dp),
           {"data.micro_batch_size", "parallel.dp"});
  }
  if (data.seq_len > model.max_seq_len) {
    c.fail("data.seq_len", absl::StrCat(data.seq_len, " exceeds model.max_seq_len=", model.max_seq_len),
           {"model.max_seq_len"});
  }
  if (train.mode == TrainMode::kGrpo && grpo.max_new_tokens >= model.max_seq_len) {
    c.fail("grpo.max_new_tokens",
           absl::StrCat(grpo.max_new_tokens, " leaves no room for a prompt in model.max_seq_len=", model.max_seq_len),
           {"model.max_seq_len"});
  }
  // A task reward scores the answers of its own task only.
  if (train.mode == TrainMode::kGrpo && data.format == DataFormat::kTask) {
    for (const char* task : {"countdown", "arithmetic"}) {
      const bool other = data.task != (std::string(task) == "countdown" ? TaskKind::kCountdown : TaskKind::kArithmetic);
      if (grpo.rewards.count(task) && other) {
        c.fail(absl::StrCat("grpo.rewards.", task),
               absl::StrCat("scores ", task, " answers, but data.task is ", task_name(data.task)), {"data.task"});
      }
    }
  }
}

}  // namespace strata
