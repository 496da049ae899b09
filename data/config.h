// DataConfig: where training text comes from, how it is tokenised and batched. Batch sizes are
// global (summed over data-parallel ranks), so changing the layout never changes what a step
// sees. The loaders and tokenizers land with the Training issue.
#pragma once

#include <cstdint>
#include <string>

#include "core/config_schema.h"

namespace strata {

enum class DataFormat { kJsonl, kShards, kTask };
enum class TaskKind { kCountdown, kArithmetic };

struct DataConfig {
  DataFormat format = DataFormat::kTask;
  std::string path;
  std::string eval_path;
  std::string tokenizer = "char";
  TaskKind task = TaskKind::kCountdown;
  int64_t task_size = 10000;
  int64_t seq_len = 256;
  int64_t micro_batch_size = 8;
  int64_t global_batch_size = 16;
  bool r1_template = false;
  bool shuffle = true;
  double teacher_error_rate = 0.0;

  template <class V>
  void visit(V& v) {
    v.choice("format", format,
             "jsonl (prompt/completion lines), shards (tokenised binary), task (a synthetic task generated from the seed)",
             Choices<DataFormat>{{"jsonl", DataFormat::kJsonl}, {"shards", DataFormat::kShards}, {"task", DataFormat::kTask}});
    v.field("path", path, "training file or shard directory (jsonl, shards)");
    v.field("eval_path", eval_path, "held-out file for evaluation; \"\" = none");
    v.field("tokenizer", tokenizer, "\"char\" for the character tokenizer, or a path to a Hugging Face tokenizer.json");
    v.choice("task", task, "synthetic reasoning task (format: task)",
             Choices<TaskKind>{{"countdown", TaskKind::kCountdown}, {"arithmetic", TaskKind::kArithmetic}});
    v.field("task_size", task_size, "examples generated for a synthetic task", Range::at_least(1));
    v.field("seq_len", seq_len, "tokens per training sequence", Range::at_least(2));
    v.field("micro_batch_size", micro_batch_size, "sequences per forward/backward on one rank", Range::at_least(1));
    v.field("global_batch_size", global_batch_size, "sequences per optimizer step over all data-parallel ranks",
            Range::at_least(1));
    v.field("r1_template", r1_template, "wrap prompts in the DeepSeek-R1 conversation template");
    v.field("shuffle", shuffle, "shuffle examples each epoch (keyed by seed and epoch)");
    v.field("teacher_error_rate", teacher_error_rate,
            "task arithmetic: share of SFT traces written by a teacher that forgets every carry and borrow "
            "(the gold answers used for rewards and evaluation stay exact)",
            Range::between(0, 1));
  }
  void validate(ConfigChecker& c) const;
};

}  // namespace strata
