// The vocabulary that config structs use to describe themselves, so that one generic reader
// (trainer/config_yaml.cc) can parse, override, validate, print and document every field.
//
// Each library owns its config struct (ModelConfig in model/, ...). A struct lists its fields in
// a member template `visit(V& v)`, each with its key, a one-line doc and optional limits:
//
//   template <class V> void visit(V& v) {
//     v.field("d_model", d_model, "hidden size (HF hidden_size)", Range::at_least(1));
//     v.choice("scoring", scoring, "router scoring function", {{"softmax", Scoring::kSoftmax},
//                                                              {"sigmoid", Scoring::kSigmoid}});
//     v.section("moe", moe, "Mixture-of-Experts settings");
//   }
//
// and states clashes between its fields in `void validate(ConfigChecker& c) const`, naming the
// keys involved; the reader turns those into "file:line: model.n_heads: ..." errors.
// Supported field types: bool, int64_t, double, std::string, std::vector<std::string>,
// std::vector<int64_t>, std::map<std::string, double> (e.g. reward weights), enums via choice().
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace strata {

// Inclusive numeric limits for int64_t and double fields; open bounds when unset.
struct Range {
  std::optional<double> lo, hi;
  bool lo_open = false;  // lo excluded: (lo, hi]
  static Range at_least(double lo) { return Range{lo, std::nullopt, false}; }
  static Range above(double lo) { return Range{lo, std::nullopt, true}; }
  static Range between(double lo, double hi) { return Range{lo, hi, false}; }
  bool contains(double x) const {
    if (lo && (lo_open ? !(x > *lo) : !(x >= *lo))) return false;
    if (hi && !(x <= *hi)) return false;
    return true;
  }
  std::string describe() const;  // ">= 1", "> 0", "in [0, 1]"
};

template <typename E>
using Choices = std::initializer_list<std::pair<const char*, E>>;

// Collects clashes found by a struct's validate(); keys are relative to the struct's section.
class ConfigChecker {
 public:
  struct Problem {
    std::vector<std::string> keys;  // full key paths; the first one locates the error
    std::string message;
  };
  explicit ConfigChecker(std::string prefix = "") : prefix_(std::move(prefix)) {}

  // Records that `message` concerns `key` (and optionally other keys it clashes with).
  void fail(const std::string& key, const std::string& message,
            std::initializer_list<std::string> also = {});
  ConfigChecker nested(const std::string& section) const;
  void absorb(const ConfigChecker& other);
  const std::vector<Problem>& problems() const { return problems_; }
  std::string full_key(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

 private:
  std::string prefix_;
  std::vector<Problem> problems_;
};

// True for config structs that state clashes between their fields; the reader calls validate()
// on every section that has one, after parsing.
template <typename T>
concept HasValidate = requires(const T& t, ConfigChecker& c) { t.validate(c); };

}  // namespace strata
