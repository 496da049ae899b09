// Reading, overriding, validating, writing and documenting an ExperimentConfig.
//
// One generic reader walks the `visit()` description of every config struct, so a field added to
// any library's config is parsed, type-checked, overridable with --set, printed and documented
// with no code here. Every error is one line naming where (file:line, or the --set that caused
// it), the full key, the bad value and what is allowed:
//
//   configs/x.yaml:12: parallel.ep: ep=3 must divide moe.n_experts=8
//   configs/x.yaml:7: model.d_modle: unknown key; did you mean model.d_model?
//   --set optim.lr=fast: optim.lr: expected a number, got "fast"
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "trainer/experiment_config.h"

namespace strata {

// Reads `path`, applies `overrides` ("a.b.c=value", YAML-typed), checks every field and clash.
// All problems are reported, one per line, in the Status message (InvalidArgument).
StatusOr<ExperimentConfig> load_experiment_config(const std::string& path,
                                                  const std::vector<std::string>& overrides = {});
// The same from text; `source_name` stands in for the file name in messages.
StatusOr<ExperimentConfig> parse_experiment_config(const std::string& yaml_text, const std::string& source_name,
                                                   const std::vector<std::string>& overrides = {});

// The fully resolved config as YAML, every key present, each with its doc as a comment.
// Loading this text gives back the same structs.
std::string experiment_config_to_yaml(const ExperimentConfig& config);

// Markdown reference of every key: type, default, allowed values, doc (the README's table).
std::string config_reference_markdown();

// The closest of `candidates` to `word` by edit distance, or "" when none is close.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace strata
