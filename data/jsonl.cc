#include "data/jsonl.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace strata {
namespace {

using Json = nlohmann::ordered_json;

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// The example on one non-blank line, or what is wrong with it.
StatusOr<Example> parse_line(const std::string& line) {
  Json j;
  try {
    j = Json::parse(line);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON at byte ", e.byte));
  }
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got ", j.type_name()));
  Example ex;
  for (const char* key : {"prompt", "completion"}) {
    auto it = j.find(key);
    if (it == j.end()) return absl::InvalidArgumentError(absl::StrCat("missing \"", key, "\""));
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" must be a string, got ", it->type_name()));
    }
    (std::string(key) == "prompt" ? ex.prompt : ex.completion) = it->get<std::string>();
  }
  if (auto it = j.find("answer"); it != j.end()) ex.answer = it->dump();
  return ex;
}

}  // namespace

StatusOr<std::vector<Example>> read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  std::vector<Example> examples;
  std::vector<std::string> errors;
  int64_t n_bad = 0, line_no = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (is_blank(line)) continue;
    auto ex = parse_line(line);
    if (ex.ok()) {
      examples.push_back(*std::move(ex));
    } else if (++n_bad <= kMaxReportedErrors) {
      errors.push_back(absl::StrCat(path, ":", line_no, ": ", ex.status().message()));
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error after line ", line_no));
  if (n_bad > kMaxReportedErrors) errors.push_back(absl::StrCat(path, ": ", n_bad - kMaxReportedErrors, " more bad lines"));
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  return examples;
}

std::string to_jsonl_line(const Example& example) {
  Json j;
  j["prompt"] = example.prompt;
  j["completion"] = example.completion;
  if (!example.answer.empty()) {
    Json answer = Json::parse(example.answer, nullptr, /*allow_exceptions=*/false);
    j["answer"] = answer.is_discarded() ? Json(example.answer) : answer;
  }
  // Invalid UTF-8 in a string is replaced rather than thrown on.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Status write_jsonl(const std::string& path, const std::vector<Example>& examples) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create (", std::strerror(errno), ")"));
    for (const Example& ex : examples) out << to_jsonl_line(ex) << '\n';
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat(tmp, ": write failed (", std::strerror(errno), ")"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot rename ", tmp, " into place (", std::strerror(errno), ")"));
  }
  return OkStatus();
}

}  // namespace strata
