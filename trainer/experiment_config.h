// ExperimentConfig: one YAML file = one experiment. It gathers the config struct each library
// owns (model/, parallel/, kernels/precision/, optim/, data/, rl/) plus the trainer's own
// sections (train, checkpoint, log). trainer/config_yaml.h reads, overrides, validates and writes
// it; cross-section clashes (ep vs n_experts, batch sizes vs dp) are checked here.
#pragma once

#include <cstdint>
#include <string>

#include "core/config_schema.h"
#include "data/config.h"
#include "kernels/precision/config.h"
#include "model/config.h"
#include "optim/config.h"
#include "parallel/config.h"
#include "rl/config.h"

namespace strata {

enum class TrainMode { kPretrain, kSft, kGrpo };
enum class DeviceChoice { kCpu, kCuda };
enum class NanPolicy { kSkip, kStop };

struct TrainConfig {
  std::string name = "run";
  TrainMode mode = TrainMode::kSft;
  int64_t steps = 100;
  int64_t seed = 1234;
  DeviceChoice device = DeviceChoice::kCpu;
  std::string out_dir = "runs";
  NanPolicy nan_policy = NanPolicy::kSkip;
  int64_t eval_every = 0;

  template <class V>
  void visit(V& v) {
    v.field("name", name, "run name; results go to <out_dir>/<name>/");
    v.choice("mode", mode, "what the run trains: pretrain (next token), sft (completion tokens), grpo (RL)",
             Choices<TrainMode>{{"pretrain", TrainMode::kPretrain}, {"sft", TrainMode::kSft}, {"grpo", TrainMode::kGrpo}});
    v.field("steps", steps, "optimizer steps", Range::at_least(1));
    v.field("seed", seed, "seed for init, data order and sampling (keyed, never by rank)", Range::at_least(0));
    v.choice("device", device, "where tensors live", Choices<DeviceChoice>{{"cpu", DeviceChoice::kCpu}, {"cuda", DeviceChoice::kCuda}});
    v.field("out_dir", out_dir, "parent directory of run directories");
    v.choice("nan_policy", nan_policy, "on NaN/Inf in loss or gradients: skip the step or stop the run",
             Choices<NanPolicy>{{"skip", NanPolicy::kSkip}, {"stop", NanPolicy::kStop}});
    v.field("eval_every", eval_every, "evaluate every N steps; 0 = only at the end", Range::at_least(0));
  }
  void validate(ConfigChecker& c) const;
};

struct CheckpointConfig {
  std::string dir;
  int64_t every = 0;
  int64_t keep_last = 3;
  std::string resume = "auto";

  template <class V>
  void visit(V& v) {
    v.field("dir", dir, "checkpoint directory; \"\" = <run dir>/checkpoints");
    v.field("every", every, "save every N steps; 0 = only at the end", Range::at_least(0));
    v.field("keep_last", keep_last, "checkpoints kept (older ones are deleted); 0 = keep all", Range::at_least(0));
    v.field("resume", resume, "auto (latest in dir, if any), never, or a checkpoint path");
  }
};

struct LogConfig {
  int64_t every = 1;
  std::string level = "info";
  bool metrics_jsonl = true;
  bool tensorboard = false;

  template <class V>
  void visit(V& v) {
    v.field("every", every, "print and record metrics every N steps", Range::at_least(1));
    v.field("level", level, "console and rank-log verbosity: debug, info, warn, error");
    v.field("metrics_jsonl", metrics_jsonl, "write <run dir>/metrics.jsonl");
    v.field("tensorboard", tensorboard, "also write TensorBoard event files");
  }
  void validate(ConfigChecker& c) const;
};

struct ExperimentConfig {
  TrainConfig train;
  ModelConfig model;
  ParallelConfig parallel;
  PrecisionConfig precision;
  OptimConfig optim;
  DataConfig data;
  GrpoConfig grpo;
  CheckpointConfig checkpoint;
  LogConfig log;

  template <class V>
  void visit(V& v) {
    v.section("train", train, "the run: mode, steps, seed, device");
    v.section("model", model, "model architecture");
    v.section("parallel", parallel, "parallel layout over MPI ranks");
    v.section("precision", precision, "number formats");
    v.section("optim", optim, "optimizer and learning-rate schedule");
    v.section("data", data, "training data");
    v.section("grpo", grpo, "GRPO reinforcement learning (train.mode: grpo)");
    v.section("checkpoint", checkpoint, "checkpointing and resume");
    v.section("log", log, "console, metrics and logs");
  }
  // Clashes between sections (the per-section ones are in each struct's validate()).
  void validate(ConfigChecker& c) const;
};

}  // namespace strata
