#include "parallel/config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strata {

bool parse_rank_order(const std::string& order, std::vector<std::string>* names) {
  names->clear();
  for (absl::string_view part : absl::StrSplit(order, ',')) {
    names->push_back(std::string(absl::StripAsciiWhitespace(part)));
  }
  std::vector<std::string> sorted = *names;
  std::sort(sorted.begin(), sorted.end());
  return sorted == std::vector<std::string>{"edp", "ep", "pp"};
}

void PipelineConfig::validate(ConfigChecker& c) const {
  if (schedule == PipelineSchedule::kInterleaved1F1B && virtual_stages < 2) {
    c.fail("virtual_stages", "interleaved_1f1b needs virtual_stages >= 2", {"schedule"});
  }
  if (schedule != PipelineSchedule::kInterleaved1F1B && schedule != PipelineSchedule::kDualPipeV &&
      virtual_stages != 1) {
    c.fail("virtual_stages", absl::StrCat(virtual_stages, " virtual stages need schedule: interleaved_1f1b"),
           {"schedule"});
  }
  for (int64_t n : layout) {
    if (n < 1) {
      c.fail("layout", absl::StrCat("every stage needs at least one block, got ", n));
      break;
    }
  }
}

void ParallelConfig::validate(ConfigChecker& c) const {
  std::vector<std::string> names;
  if (!parse_rank_order(order, &names)) {
    c.fail("order", absl::StrCat("\"", order, "\" is not a permutation of ep,edp,pp"));
  }
  if (dp > 0 && dp % ep != 0) {
    c.fail("ep", absl::StrCat("ep=", ep, " must divide dp=", dp), {"dp"});
  }
  if (dp == 0) c.fail("dp", "0 ranks; use -1 to infer dp from the world size");
  if (!pipeline.layout.empty() &&
      static_cast<int64_t>(pipeline.layout.size()) != pp * pipeline.virtual_stages) {
    c.fail("pipeline.layout",
           absl::StrCat("has ", pipeline.layout.size(), " entries; expected pp x virtual_stages = ",
                        pp * pipeline.virtual_stages),
           {"pp"});
  }
}

}  // namespace strata
