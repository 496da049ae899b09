#include "trainer/config_yaml.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace strata {
namespace {

// ---- value formatting, shared by the writer and the reference ------------------------------

std::string format_double(double x) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x);  // shortest text that reads back exactly
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it visibly a float
  return s;
}

bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  static const std::set<std::string> kReserved = {"true", "false", "True", "False", "TRUE", "FALSE", "null",
                                                  "Null", "NULL", "~",    "yes",   "no",   "on",   "off"};
  if (kReserved.count(s)) return true;
  double d;
  if (absl::SimpleAtod(s, &d)) return true;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '/')) return true;
  }
  return s.front() == '-' || s.front() == '.';
}

std::string quote(const std::string& s) {
  if (!needs_quotes(s)) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(int64_t v) { return std::to_string(v); }
std::string format_value(double v) { return format_double(v); }
std::string format_value(const std::string& v) { return quote(v); }
std::string format_value(const std::vector<std::string>& v) {
  std::vector<std::string> parts;
  for (const auto& s : v) parts.push_back(quote(s));
  return "[" + absl::StrJoin(parts, ", ") + "]";
}
std::string format_value(const std::vector<int64_t>& v) { return "[" + absl::StrJoin(v, ", ") + "]"; }
std::string format_value(const std::map<std::string, double>& v) {
  std::vector<std::string> parts;
  for (const auto& [k, x] : v) parts.push_back(quote(k) + ": " + format_double(x));
  return "{" + absl::StrJoin(parts, ", ") + "}";
}

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "bool";
  else if constexpr (std::is_same_v<T, int64_t>) return "int";
  else if constexpr (std::is_same_v<T, double>) return "float";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return "list of strings";
  else if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "list of ints";
  else if constexpr (std::is_same_v<T, std::map<std::string, double>>) return "map of name: number";
  else static_assert(sizeof(T) == 0, "unsupported config field type");
}

template <typename E>
std::vector<std::string> choice_names(Choices<E> choices) {
  std::vector<std::string> names;
  for (const auto& [name, value] : choices) names.push_back(name);
  return names;
}

template <typename E>
std::string choice_name(E value, Choices<E> choices) {
  for (const auto& [name, v] : choices)
    if (v == value) return name;
  return "?";
}

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string scalar_text(const YAML::Node& n) {
  if (n.IsScalar()) return "\"" + n.Scalar() + "\"";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

// ---- collecting every key path (for "did you mean" across sections and the reference) ------

struct KeyInfo {
  std::string path, type, default_value, allowed, doc;
  bool is_section = false;
};

class KeyCollector {
 public:
  explicit KeyCollector(std::vector<KeyInfo>* out, std::string prefix = "") : out_(out), prefix_(std::move(prefix)) {}

  template <typename T>
  void field(const char* key, T& ref, const char* doc, Range range = {}) {
    std::string allowed = (range.lo || range.hi) ? range.describe() : "";
    out_->push_back({join_key(prefix_, key), type_name<T>(), format_value(ref), allowed, doc, false});
  }
  template <typename E>
  void choice(const char* key, E& ref, const char* doc, std::type_identity_t<Choices<E>> choices) {
    out_->push_back({join_key(prefix_, key), "choice", choice_name(ref, choices),
                     absl::StrJoin(choice_names(choices), " \\| "), doc, false});
  }
  template <typename S>
  void section(const char* key, S& s, const char* doc) {
    out_->push_back({join_key(prefix_, key), "section", "", "", doc, true});
    KeyCollector sub(out_, join_key(prefix_, key));
    s.visit(sub);
  }

 private:
  std::vector<KeyInfo>* out_;
  std::string prefix_;
};

const std::vector<KeyInfo>& all_keys() {
  static const std::vector<KeyInfo> keys = [] {
    std::vector<KeyInfo> k;
    ExperimentConfig defaults;
    KeyCollector c(&k);
    defaults.visit(c);
    return k;
  }();
  return keys;
}

// ---- reading ------------------------------------------------------------------------------

// Shared state of one parse: where each key came from, and the problems found.
struct ParseContext {
  std::string source;                                  // file name as given
  std::map<std::string, std::string> set_origins;      // key path -> "--set a.b=v"
  std::map<std::string, std::string> locations;        // key path -> "file:line" or "--set ..."
  std::vector<std::string> errors;

  std::string where(const std::string& path, const YAML::Mark& mark) const {
    for (std::string p = path;;) {  // an override of a key, or of a section above it
      auto it = set_origins.find(p);
      if (it != set_origins.end()) return it->second;
      auto dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p = p.substr(0, dot);
    }
    if (mark.line >= 0) return absl::StrCat(source, ":", mark.line + 1);
    return source;
  }
  void error(const std::string& where, const std::string& path, const std::string& message) {
    errors.push_back(absl::StrCat(where, ": ", path, ": ", message));
  }
};

class Reader {
 public:
  Reader(ParseContext* ctx, const YAML::Node& node, std::string prefix)
      : ctx_(ctx), prefix_(std::move(prefix)) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      YAML::Node k = it->first;  // a copy: the iterator yields a temporary pair
      if (!k.IsScalar()) {
        ctx_->error(ctx_->where(prefix_, k.Mark()), prefix_.empty() ? "(top level)" : prefix_,
                    "keys must be plain names");
        continue;
      }
      std::string name = k.Scalar();
      std::string path = join_key(prefix_, name);
      std::string where = ctx_->where(path, k.Mark());
      if (entries_.count(name)) {
        ctx_->error(where, path, absl::StrCat("duplicate key (first at ", entries_[name].where, ")"));
        continue;
      }
      entries_[name] = Entry{it->second, where, false};
      order_.push_back(name);
      ctx_->locations[path] = where;
    }
  }

  template <typename T>
  void field(const char* key, T& ref, const char* doc, Range range = {}) {
    known_.push_back(key);
    Entry* e = find(key);
    if (!e) return;
    std::string path = join_key(prefix_, key);
    if (!e->node.IsDefined() || e->node.IsNull()) {
      ctx_->error(e->where, path, absl::StrCat("has no value; expected ", type_name<T>()));
      return;
    }
    std::string problem = convert(e->node, &ref, range);
    if (!problem.empty()) ctx_->error(e->where, path, problem);
  }

  template <typename E>
  void choice(const char* key, E& ref, const char* doc, std::type_identity_t<Choices<E>> choices) {
    known_.push_back(key);
    Entry* e = find(key);
    if (!e) return;
    std::string path = join_key(prefix_, key);
    std::vector<std::string> names = choice_names(choices);
    if (!e->node.IsScalar()) {
      ctx_->error(e->where, path, absl::StrCat("expected one of ", absl::StrJoin(names, ", "), ", got ",
                                               scalar_text(e->node)));
      return;
    }
    const std::string& text = e->node.Scalar();
    for (const auto& [name, value] : choices) {
      if (text == name) {
        ref = value;
        return;
      }
    }
    std::string hint = closest_match(text, names);
    ctx_->error(e->where, path,
                absl::StrCat("\"", text, "\" is not one of ", absl::StrJoin(names, ", "),
                             hint.empty() ? "" : absl::StrCat("; did you mean ", hint, "?")));
  }

  template <typename S>
  void section(const char* key, S& s, const char* doc) {
    known_.push_back(key);
    Entry* e = find(key);
    if (!e) return;
    std::string path = join_key(prefix_, key);
    if (e->node.IsNull()) return;  // "model:" with nothing under it keeps the defaults
    if (!e->node.IsMap()) {
      ctx_->error(e->where, path, absl::StrCat("expected a section (key: value lines), got ", scalar_text(e->node)));
      return;
    }
    Reader sub(ctx_, e->node, path);
    s.visit(sub);
    sub.report_unknown();
  }

  // Every key the struct did not claim is a typo or a key of another section: say which.
  void report_unknown() {
    for (const std::string& name : order_) {
      const Entry& e = entries_[name];
      if (e.claimed) continue;
      std::string path = join_key(prefix_, name);
      std::string suggestion;
      for (const KeyInfo& k : all_keys()) {  // a right key in the wrong section
        std::string leaf = k.path.substr(k.path.rfind('.') == std::string::npos ? 0 : k.path.rfind('.') + 1);
        if (leaf == name) {
          suggestion = k.path;
          break;
        }
      }
      if (suggestion.empty()) {  // else a typo of a key that belongs here
        std::string hint = closest_match(name, known_);
        if (!hint.empty()) suggestion = join_key(prefix_, hint);
      }
      std::string allowed = prefix_.empty() ? absl::StrCat("sections: ", absl::StrJoin(known_, ", "))
                                            : absl::StrCat("keys of ", prefix_, ": ", absl::StrJoin(known_, ", "));
      ctx_->error(e.where, path,
                  suggestion.empty() ? absl::StrCat("unknown key (", allowed, ")")
                                     : absl::StrCat("unknown key; did you mean ", suggestion, "?"));
    }
  }

 private:
  struct Entry {
    YAML::Node node;
    std::string where;
    bool claimed = false;
  };

  Entry* find(const char* key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return nullptr;
    it->second.claimed = true;
    return &it->second;
  }

  static std::string range_problem(double x, const Range& range, const std::string& text) {
    if (range.contains(x)) return "";
    return absl::StrCat(text, " is out of range (must be ", range.describe(), ")");
  }

  static std::string convert(const YAML::Node& n, bool* out, const Range&) {
    if (n.IsScalar()) {
      const std::string& s = n.Scalar();
      if (s == "true" || s == "True" || s == "TRUE") return (*out = true), "";
      if (s == "false" || s == "False" || s == "FALSE") return (*out = false), "";
    }
    return absl::StrCat("expected true or false, got ", scalar_text(n));
  }
  static std::string convert(const YAML::Node& n, int64_t* out, const Range& range) {
    int64_t v;
    if (!n.IsScalar() || !absl::SimpleAtoi(n.Scalar(), &v)) {
      return absl::StrCat("expected an integer, got ", scalar_text(n));
    }
    std::string p = range_problem(static_cast<double>(v), range, n.Scalar());
    if (p.empty()) *out = v;
    return p;
  }
  static std::string convert(const YAML::Node& n, double* out, const Range& range) {
    double v;
    if (!n.IsScalar() || !absl::SimpleAtod(n.Scalar(), &v) || !std::isfinite(v)) {
      return absl::StrCat("expected a finite number, got ", scalar_text(n));
    }
    std::string p = range_problem(v, range, n.Scalar());
    if (p.empty()) *out = v;
    return p;
  }
  static std::string convert(const YAML::Node& n, std::string* out, const Range&) {
    if (!n.IsScalar()) return absl::StrCat("expected a string, got ", scalar_text(n));
    *out = n.Scalar();
    return "";
  }
  static std::string convert(const YAML::Node& n, std::vector<std::string>* out, const Range&) {
    if (!n.IsSequence()) return absl::StrCat("expected a list of strings like [a, b], got ", scalar_text(n));
    std::vector<std::string> v;
    for (const auto& item : n) {
      if (!item.IsScalar()) return absl::StrCat("list items must be strings, got ", scalar_text(item));
      v.push_back(item.Scalar());
    }
    *out = std::move(v);
    return "";
  }
  static std::string convert(const YAML::Node& n, std::vector<int64_t>* out, const Range&) {
    if (!n.IsSequence()) return absl::StrCat("expected a list of integers like [2, 2], got ", scalar_text(n));
    std::vector<int64_t> v;
    for (const auto& item : n) {
      int64_t x;
      if (!item.IsScalar() || !absl::SimpleAtoi(item.Scalar(), &x)) {
        return absl::StrCat("list items must be integers, got ", scalar_text(item));
      }
      v.push_back(x);
    }
    *out = std::move(v);
    return "";
  }
  static std::string convert(const YAML::Node& n, std::map<std::string, double>* out, const Range&) {
    if (!n.IsMap()) return absl::StrCat("expected a mapping like {name: 1.0}, got ", scalar_text(n));
    std::map<std::string, double> m;
    for (auto it = n.begin(); it != n.end(); ++it) {
      double x;
      if (!it->first.IsScalar()) return "mapping keys must be names";
      if (!it->second.IsScalar() || !absl::SimpleAtod(it->second.Scalar(), &x) || !std::isfinite(x)) {
        return absl::StrCat("value of \"", it->first.Scalar(), "\" must be a number, got ", scalar_text(it->second));
      }
      m[it->first.Scalar()] = x;
    }
    *out = std::move(m);
    return "";
  }

  ParseContext* ctx_;
  std::string prefix_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
  std::vector<std::string> known_;
};

// Runs validate() on every section that has one, with key paths relative to the root.
class Validator {
 public:
  explicit Validator(ConfigChecker* checker) : checker_(checker) {}
  template <typename T>
  void field(const char*, T&, const char*, Range = {}) {}
  template <typename E>
  void choice(const char*, E&, const char*, std::type_identity_t<Choices<E>>) {}
  template <typename S>
  void section(const char* key, S& s, const char*) {
    ConfigChecker nested = checker_->nested(key);
    if constexpr (HasValidate<S>) s.validate(nested);
    Validator sub(&nested);
    s.visit(sub);
    checker_->absorb(nested);
  }

 private:
  ConfigChecker* checker_;
};

// Applies one "a.b.c=value" override to the YAML tree before it is read.
Status apply_override(YAML::Node& root, const std::string& text, ParseContext* ctx) {
  std::string origin = absl::StrCat("--set ", text);
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": expected key=value, e.g. --set optim.lr=1e-3"));
  }
  std::string key = std::string(absl::StripAsciiWhitespace(text.substr(0, eq)));
  std::string value = text.substr(eq + 1);
  std::vector<std::string> parts = absl::StrSplit(key, '.');
  for (const auto& p : parts) {
    if (p.empty()) return absl::InvalidArgumentError(absl::StrCat(origin, ": \"", key, "\" has an empty key part"));
  }
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", key, ": value is not valid YAML: ", e.msg));
  }
  YAML::Node cur = root;
  std::string path;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    path = join_key(path, parts[i]);
    YAML::Node next = cur[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
    } else if (!next.IsMap()) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": ", path, " is a value, not a section"));
    }
    cur.reset(next);
  }
  cur[parts.back()] = parsed;
  ctx->set_origins[key] = origin;
  return OkStatus();
}

StatusOr<ExperimentConfig> parse_node(YAML::Node root, const std::string& source,
                                      const std::vector<std::string>& overrides) {
  ParseContext ctx;
  ctx.source = source;
  if (root.IsNull() || !root.IsDefined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":1: (top level): the file is empty; expected sections such as train:, model:, data:"));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(ctx.where("", root.Mark()),
                                                   ": (top level): expected sections (train:, model:, ...), got ",
                                                   scalar_text(root)));
  }
  for (const auto& o : overrides) RETURN_IF_ERROR(apply_override(root, o, &ctx));

  ExperimentConfig config;
  Reader reader(&ctx, root, "");
  config.visit(reader);
  reader.report_unknown();
  if (ctx.errors.empty()) {
    ConfigChecker checker;
    Validator v(&checker);
    config.visit(v);
    config.validate(checker);
    for (const auto& problem : checker.problems()) {
      std::string where;
      for (const auto& k : problem.keys) {  // the first key the user wrote locates the error
        auto it = ctx.locations.find(k);
        if (it != ctx.locations.end()) {
          where = it->second;
          break;
        }
      }
      if (where.empty()) {  // all keys at their defaults: point at the nearest section written
        for (std::string p = problem.keys[0]; where.empty();) {
          auto dot = p.rfind('.');
          if (dot == std::string::npos) break;
          p = p.substr(0, dot);
          auto it = ctx.locations.find(p);
          if (it != ctx.locations.end()) where = it->second;
        }
      }
      if (where.empty()) where = source;
      ctx.errors.push_back(absl::StrCat(where, ": ", problem.keys[0], ": ", problem.message));
    }
  }
  if (!ctx.errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(ctx.errors, "\n"));
  return config;
}

// ---- writing ------------------------------------------------------------------------------

class Writer {
 public:
  Writer(std::ostringstream* out, int depth) : out_(out), depth_(depth) {}

  template <typename T>
  void field(const char* key, T& ref, const char* doc, Range = {}) {
    line(absl::StrCat(key, ": ", format_value(ref)), doc);
  }
  template <typename E>
  void choice(const char* key, E& ref, const char* doc, std::type_identity_t<Choices<E>> choices) {
    line(absl::StrCat(key, ": ", choice_name(ref, choices)),
         absl::StrCat(doc, " [", absl::StrJoin(choice_names(choices), "|"), "]"));
  }
  template <typename S>
  void section(const char* key, S& s, const char* doc) {
    line(absl::StrCat(key, ":"), doc);
    Writer sub(out_, depth_ + 1);
    s.visit(sub);
  }

 private:
  void line(const std::string& text, const std::string& doc) {
    std::string indent(2 * depth_, ' ');
    *out_ << indent << text;
    int pad = std::max(1, 44 - static_cast<int>(indent.size() + text.size()));
    *out_ << std::string(pad, ' ') << "# " << doc << "\n";
  }
  std::ostringstream* out_;
  int depth_;
};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_d <= limit ? best : "";
}

StatusOr<ExperimentConfig> parse_experiment_config(const std::string& yaml_text, const std::string& source_name,
                                                   const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ":", e.mark.line + 1, ": (syntax): YAML syntax error: ", e.msg));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": (syntax): ", e.msg));
  }
  return parse_node(root, source_name, overrides);
}

StatusOr<ExperimentConfig> load_experiment_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open config file (", std::strerror(errno), ")"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_experiment_config(buf.str(), path, overrides);
}

std::string experiment_config_to_yaml(const ExperimentConfig& config) {
  ExperimentConfig copy = config;  // visit() is shared with the reader, so it takes a mutable struct
  std::ostringstream out;
  Writer w(&out, 0);
  copy.visit(w);
  return out.str();
}

std::string config_reference_markdown() {
  std::ostringstream out;
  for (const KeyInfo& k : all_keys()) {
    if (k.is_section) {
      if (k.path.find('.') == std::string::npos) {
        out << "\n#### `" << k.path << "`: " << k.doc << "\n\n";
      } else {
        out << "| **`" << k.path << "`** | section | | " << k.doc << " |\n";
        continue;
      }
      out << "| key | type | default | doc |\n|---|---|---|---|\n";
      continue;
    }
    std::string type = k.type == "choice" ? k.allowed : k.type;
    std::string doc = absl::StrReplaceAll(k.doc, {{"<", "&lt;"}, {">", "&gt;"}, {"|", "\\|"}});
    if (k.type != "choice" && !k.allowed.empty()) doc += " (" + k.allowed + ")";
    out << "| `" << k.path << "` | " << type << " | `" << k.default_value << "` | " << doc << " |\n";
  }
  return out.str();
}

}  // namespace strata
