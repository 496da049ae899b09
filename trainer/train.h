// The pretrain / SFT training loop (train.mode: pretrain | sft), driven by an ExperimentConfig.
//
// One optimizer step = the global batch (data.global_batch_size sequences, sample ids from the
// layout-independent loader) split into micro-batches; the loss of every micro-batch divides by
// the number of target tokens of the whole step, so accumulation never changes the loss. Then
// NaN/Inf check (skip or stop per train.nan_policy), global-norm clipping, the scheduled AdamW
// update and the aux-loss-free router-bias update. Checkpoints hold everything needed to resume
// bitwise: parameters, optimizer moments, step and data position.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "trainer/checkpoint.h"
#include "trainer/experiment_config.h"
#include "trainer/metrics.h"

namespace strata {

struct TrainOptions {
  std::string config_path;   // for messages and the saved config
  std::string resume;        // overrides checkpoint.resume when set
  int64_t stop_after = -1;   // exit after this many steps of this process (tests: a crash after N/2)
};

// Runs the loop of train.mode pretrain or sft. Returns OK at the end of training.
Status run_training(const ExperimentConfig& config, const TrainOptions& options);

// Model + tokenizer + optimizer state of a finished or partial run, for generate and eval.
struct LoadedModel {
  ExperimentConfig config;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tokenizer;
  int64_t step = 0;
};
// Loads a Strata checkpoint (a step directory, a checkpoint root with `latest`, or a run
// directory) or a Hugging Face directory (hf:DIR, with --tokenizer given separately).
StatusOr<LoadedModel> load_model_for_inference(const std::string& path, const std::string& tokenizer_override = "");

}  // namespace strata
