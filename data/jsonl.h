// JSONL prompt/completion files: one JSON object per line, {"prompt": "...", "completion": "...",
// "answer": <any JSON>?}; other keys are ignored and blank lines skipped. The answer is kept as its
// compact JSON text (Example::answer) for the verifiers. Reading is strict: every bad line is an
// error naming file:line, so a dataset never trains on half of what its author meant.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "data/tasks.h"

namespace strata {

// Reads every example of `path`. Each bad line is one error line "path:LINE: <what>":
//   not valid JSON at byte B | expected a JSON object, got <type> | missing "prompt" |
//   "prompt" must be a string, got <type>  (the same for "completion")
// The status (InvalidArgument) lists the first kMaxReportedErrors of them, one per line, and
// "path: N more bad lines" when there are more. A file that cannot be opened is NotFound.
StatusOr<std::vector<Example>> read_jsonl(const std::string& path);
constexpr int kMaxReportedErrors = 5;

// One line (no newline) of the format above: {"prompt":...,"completion":...,"answer":...}; the
// answer is written as JSON when it parses as JSON, as a string otherwise, and left out when "".
std::string to_jsonl_line(const Example& example);

// Writes the examples one per line, through a temporary file renamed into place.
Status write_jsonl(const std::string& path, const std::vector<Example>& examples);

}  // namespace strata
