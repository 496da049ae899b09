#include "core/config_schema.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strata {

std::string Range::describe() const {
  auto num = [](double x) { return absl::StrFormat("%g", x); };
  if (lo && hi) return absl::StrCat("in ", lo_open ? "(" : "[", num(*lo), ", ", num(*hi), "]");
  if (lo) return absl::StrCat(lo_open ? "> " : ">= ", num(*lo));
  if (hi) return absl::StrCat("<= ", num(*hi));
  return "any number";
}

void ConfigChecker::fail(const std::string& key, const std::string& message,
                         std::initializer_list<std::string> also) {
  Problem p;
  p.keys.push_back(full_key(key));
  for (const auto& k : also) p.keys.push_back(full_key(k));
  p.message = message;
  problems_.push_back(std::move(p));
}

ConfigChecker ConfigChecker::nested(const std::string& section) const { return ConfigChecker(full_key(section)); }

void ConfigChecker::absorb(const ConfigChecker& other) {
  problems_.insert(problems_.end(), other.problems_.begin(), other.problems_.end());
}

}  // namespace strata
