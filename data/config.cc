#include "data/config.h"

#include "absl/strings/str_cat.h"

namespace strata {

void DataConfig::validate(ConfigChecker& c) const {
  if (format != DataFormat::kTask && path.empty()) {
    c.fail("path", "is required when data.format is jsonl or shards", {"format"});
  }
  if (global_batch_size % micro_batch_size != 0) {
    c.fail("global_batch_size",
           absl::StrCat(global_batch_size, " is not a multiple of micro_batch_size=", micro_batch_size),
           {"micro_batch_size"});
  }
  if (teacher_error_rate > 0 && !(format == DataFormat::kTask && task == TaskKind::kArithmetic)) {
    c.fail("teacher_error_rate", "applies to the synthetic arithmetic task only (format: task, task: arithmetic)",
           {"format", "task"});
  }
}

}  // namespace strata
