// Byte-level BPE from a Hugging Face tokenizer.json (what is supported: bpe_tokenizer.h). encode()
// follows `tokenizers` step by step, so each step can be checked against its Rust original:
//   1. added tokens with normalized: false are cut out of the raw text (AddedVocabulary);
//   2. each other piece is normalised (NFC), then added tokens with normalized: true are cut out;
//   3. each remaining piece goes through the pre-tokenizer steps in order (Split, ByteLevel);
//   4. each pre-token is merged by BPE: lowest merge rank first, leftmost on ties (Word::merge_all).
// Invalid UTF-8 input is first repaired to U+FFFD (Rust's from_utf8_lossy rule); `tokenizers` only
// ever sees valid strings. Here: the BPE model, the tokenizer and reading tokenizer.json; steps 1
// and 3 are in data/pre_tokenize.h, UTF-8, NFC and the regex engine in data/unicode_text.h.
#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>  // tokenizer.json, tokenizer_config.json
#include <optional>
#include <queue>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/check.h"
#include "data/pre_tokenize.h"
#include "data/unicode_text.h"

namespace strata {
namespace {

using Json = nlohmann::json;

// flat_hash_map's string lookups take absl::string_view, which is not std::string_view here.
absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Concatenates anything ostream prints (absl::StrCat here does not take std::string_view).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// The BPE model
// ---------------------------------------------------------------------------------------------

struct BpeModel {
  struct Merge {
    int32_t rank, new_id;
  };
  absl::flat_hash_map<std::string, int32_t> vocab;
  absl::flat_hash_map<int32_t, std::string> vocab_r;
  absl::flat_hash_map<char32_t, int32_t> char_ids;  // single-character vocabulary entries
  absl::flat_hash_map<uint64_t, Merge> merges;      // (left id, right id) -> merge
  bool ignore_merges = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  // Bpe::tokenize for one pre-token (valid UTF-8, not empty), appending ids.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const {
    if (ignore_merges) {
      if (const auto it = vocab.find(av(word)); it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    struct Symbol {
      int32_t id, prev, next;
      bool alive;
    };
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    const auto push = [&](int32_t id) {
      const int32_t n = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, n - 1, -1, true});
      if (n > 0) symbols[n - 1].next = n;
    };
    int32_t pending_unk = -1;  // a run of unknown characters waiting to become one (fuse_unk) or more unks
    for (size_t i = 0; i < word.size();) {
      const char32_t c = next_code_point(word, i);
      if (const auto it = char_ids.find(c); it != char_ids.end()) {
        if (pending_unk >= 0) push(pending_unk);
        pending_unk = -1;
        push(it->second);
      } else if (unk_id >= 0) {
        if (pending_unk >= 0 && !fuse_unk) push(pending_unk);
        pending_unk = unk_id;
      }  // no unk token: the character is dropped, as `tokenizers` does
    }
    if (pending_unk >= 0) push(pending_unk);
    if (symbols.empty()) return;

    struct Candidate {
      int32_t rank, pos, new_id;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    const auto consider = [&](int32_t left) {
      const int32_t right = symbols[left].next;
      if (right < 0) return;
      if (const auto it = merges.find(pair_key(symbols[left].id, symbols[right].id)); it != merges.end()) {
        queue.push({it->second.rank, left, it->second.new_id});
      }
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = symbols[left.next];
      // A stale entry: the pair at pos changed since it was queued (compared by result, as
      // Word::merge_all does).
      const auto it = merges.find(pair_key(left.id, right.id));
      if (it == merges.end() || it->second.new_id != top.new_id) continue;
      left.id = top.new_id;
      right.alive = false;
      left.next = right.next;
      if (left.next >= 0) symbols[left.next].prev = top.pos;
      if (left.prev >= 0) consider(left.prev);
      consider(top.pos);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
  }
};

// ---------------------------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------------------------

class BpeTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::string repaired;
    if (!utf8_valid(text)) {
      repaired = utf8_lossy(text);
      text = repaired;
    }
    std::vector<int32_t> out;
    std::vector<AddedSegment> raw, normalized_segments;
    std::string normalized;
    std::vector<std::string> pieces;
    split_added(text, raw_tokens_, added_, raw);
    for (const AddedSegment& seg : raw) {
      if (seg.id >= 0) {
        out.push_back(seg.id);
        continue;
      }
      const std::string_view piece = text.substr(seg.begin, seg.end - seg.begin);
      std::string_view norm = piece;
      if (nfc_) {
        nfc(piece, normalized);
        norm = normalized;
      }
      split_added(norm, normalized_tokens_, added_, normalized_segments);
      for (const AddedSegment& sub : normalized_segments) {
        if (sub.id >= 0) {
          out.push_back(sub.id);
          continue;
        }
        if (sub.end == sub.begin) continue;
        pieces.clear();
        pieces.emplace_back(norm.substr(sub.begin, sub.end - sub.begin));
        for (const PreTokenizerStep& step : pre_tokenizer_) apply_step(step, pieces);
        for (const std::string& p : pieces) model_.tokenize(p, out);
      }
    }
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    bool first = true;
    for (const int32_t id : ids) {
      const std::string* token = nullptr;
      if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) {
        token = &added_[it->second].decoded;
      } else if (const auto v = model_.vocab_r.find(id); v != model_.vocab_r.end()) {
        token = &v->second;
      } else {
        continue;  // unknown ids are skipped, as `tokenizers` does
      }
      if (byte_level_decoder_) {
        byte_level_decode_token(*token, out);
      } else {
        if (!first) out += ' ';
        out += *token;
      }
      first = false;
    }
    return byte_level_decoder_ ? utf8_lossy(out) : out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t pad_id() const override { return pad_id_ >= 0 ? pad_id_ : eos_id_; }

  std::optional<int32_t> token_id(std::string_view token) const override {
    if (const auto it = added_by_content_.find(av(token)); it != added_by_content_.end()) return it->second;
    if (const auto it = model_.vocab.find(av(token)); it != model_.vocab.end()) return it->second;
    if (byte_level_) {
      if (const auto it = model_.vocab.find(byte_level_encode(token)); it != model_.vocab.end()) return it->second;
    }
    return std::nullopt;
  }

  std::string name() const override { return name_; }

  // tokenizer_config.json's choice ("eos_token" or "pad_token").
  void set_special(std::string_view key, int32_t id) { (key == "eos_token" ? eos_id_ : pad_id_) = id; }

 private:
  friend class Loader;
  std::string name_;
  BpeModel model_;
  std::vector<AddedToken> added_;
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;  // index into added_
  AddedTokenSet raw_tokens_;         // normalized: false, matched before normalisation
  AddedTokenSet normalized_tokens_;  // normalized: true, matched (as NFC) after it
  bool nfc_ = false;
  std::vector<PreTokenizerStep> pre_tokenizer_;
  bool byte_level_ = false;  // a ByteLevel pre-tokenizer: vocabulary entries are in its alphabet
  bool byte_level_decoder_ = false;
  int64_t vocab_size_ = 0;
  int32_t eos_id_ = -1;
  int32_t pad_id_ = -1;
};

// ---------------------------------------------------------------------------------------------
// Loading tokenizer.json
// ---------------------------------------------------------------------------------------------

std::string quote_json(const Json& j) { return j.dump(); }
std::string quote(std::string_view s) { return Json(std::string(s)).dump(); }

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  StatusOr<std::unique_ptr<BpeTokenizer>> load(const Json& root) {
    if (!root.is_object()) return error("(top level)", "expected a JSON object, got " + std::string(root.type_name()));
    tok_ = std::make_unique<BpeTokenizer>();
    tok_->name_ = source_;
    if (!root.contains("model")) return error("model", "missing: a tokenizer.json needs a BPE model");
    RETURN_IF_ERROR(load_model(root["model"]));
    RETURN_IF_ERROR(load_normalizer(root.contains("normalizer") ? root["normalizer"] : Json(), "normalizer"));
    if (root.contains("pre_tokenizer")) RETURN_IF_ERROR(load_pre_tokenizer(root["pre_tokenizer"], "pre_tokenizer"));
    RETURN_IF_ERROR(load_decoder(root.contains("decoder") ? root["decoder"] : Json()));
    if (root.contains("added_tokens")) RETURN_IF_ERROR(load_added_tokens(root["added_tokens"]));
    int64_t max_id = -1;
    for (const auto& [id, token] : tok_->model_.vocab_r) max_id = std::max<int64_t>(max_id, id);
    for (const AddedToken& t : tok_->added_) max_id = std::max<int64_t>(max_id, t.id);
    tok_->vocab_size_ = max_id + 1;
    for (const char* eos : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>"}) {
      if (const auto id = tok_->token_id(eos)) {
        tok_->eos_id_ = *id;
        break;
      }
    }
    return std::move(tok_);
  }

 private:
  Status error(std::string_view path, std::string_view what) const {
    return absl::InvalidArgumentError(cat(source_, ": ", path, ": ", what));
  }

  // obj[key] as a bool; `fallback` when absent or null.
  StatusOr<bool> get_bool(const Json& obj, const char* key, const std::string& path, bool fallback) const {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    if (!obj[key].is_boolean()) {
      return error(cat(path, ".", key), cat("expected true or false, got ", quote_json(obj[key])));
    }
    return obj[key].get<bool>();
  }

  // obj["type"] as a string, or "" when the object has none.
  StatusOr<std::string> get_type(const Json& obj, const std::string& path) const {
    if (!obj.is_object()) return error(path, cat("expected an object or null, got ", obj.type_name()));
    if (!obj.contains("type")) return std::string();
    if (!obj["type"].is_string()) return error(path + ".type", "expected a string, got " + quote_json(obj["type"]));
    return obj["type"].get<std::string>();
  }

  Status not_supported(const std::string& path, std::string_view value, std::string_view supported) const {
    return error(path, cat(quote(value), " is not supported (supported: ", supported, ")"));
  }

  Status load_model(const Json& m) {
    ASSIGN_OR_RETURN(const std::string type, get_type(m, "model"));
    if (!type.empty() && type != "BPE") return not_supported("model.type", type, "BPE");
    if (m.contains("dropout") && !m["dropout"].is_null() &&
        !(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0)) {
      return error("model.dropout",
                   cat(quote_json(m["dropout"]), " is not supported (only null: encoding must be deterministic)"));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (m.contains(key) && !m[key].is_null() && !(m[key].is_string() && m[key].get<std::string>().empty())) {
        return error(cat("model.", key), cat(quote_json(m[key]), " is not supported (only null or \"\")"));
      }
    }
    ASSIGN_OR_RETURN(const bool byte_fallback, get_bool(m, "byte_fallback", "model", false));
    if (byte_fallback) return error("model.byte_fallback", "true is not supported (byte-level BPE needs no fallback)");
    BpeModel& model = tok_->model_;
    ASSIGN_OR_RETURN(model.ignore_merges, get_bool(m, "ignore_merges", "model", false));
    ASSIGN_OR_RETURN(model.fuse_unk, get_bool(m, "fuse_unk", "model", false));

    if (!m.contains("vocab")) return error("model.vocab", "missing");
    const Json& vocab = m["vocab"];
    if (!vocab.is_object()) return error("model.vocab", cat("expected an object {token: id}, got ", vocab.type_name()));
    model.vocab.reserve(vocab.size());
    for (const auto& [token, id_json] : vocab.items()) {
      const std::string path = cat("model.vocab[", quote(token), "]");
      if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 || id_json.get<int64_t>() > INT32_MAX) {
        return error(path, cat("expected an id in [0, 2^31), got ", quote_json(id_json)));
      }
      const int32_t id = id_json.get<int32_t>();
      if (!utf8_valid(token)) return error(path, "the token is not valid UTF-8");
      if (const auto [it, fresh] = model.vocab_r.emplace(id, token); !fresh) {
        return error(path, cat("id ", id, " is also the id of ", quote(it->second)));
      }
      model.vocab.emplace(token, id);
      size_t i = 0;
      if (!token.empty()) {
        const char32_t c = next_code_point(token, i);
        if (i == token.size()) model.char_ids.emplace(c, id);
      }
    }

    if (m.contains("unk_token") && !m["unk_token"].is_null()) {
      if (!m["unk_token"].is_string()) {
        return error("model.unk_token", "expected a string or null, got " + quote_json(m["unk_token"]));
      }
      const std::string unk = m["unk_token"].get<std::string>();
      const auto it = model.vocab.find(unk);
      if (it == model.vocab.end()) return error("model.unk_token", quote(unk) + " is not in model.vocab");
      model.unk_id = it->second;
    }

    if (!m.contains("merges")) return error("model.merges", "missing");
    const Json& merges = m["merges"];
    if (!merges.is_array()) return error("model.merges", cat("expected an array, got ", merges.type_name()));
    model.merges.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const Json& entry = merges[rank];
      const std::string path = cat("model.merges[", rank, "]");
      std::string a, b;
      if (entry.is_string()) {  // "a b": exactly one space, as `tokenizers` requires
        const std::string s = entry.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          return error(path, cat(quote(s), " is not two tokens separated by one space"));
        }
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
        a = entry[0].get<std::string>();
        b = entry[1].get<std::string>();
      } else {
        return error(path, cat("expected \"a b\" or [\"a\", \"b\"], got ", quote_json(entry)));
      }
      const auto ia = model.vocab.find(a), ib = model.vocab.find(b), iab = model.vocab.find(a + b);
      if (ia == model.vocab.end()) return error(path, quote(a) + " is not in model.vocab");
      if (ib == model.vocab.end()) return error(path, quote(b) + " is not in model.vocab");
      if (iab == model.vocab.end()) {
        return error(path, cat("the merged token ", quote(a + b), " is not in model.vocab"));
      }
      // A repeated pair takes its last rank, as the HashMap `tokenizers` builds does.
      model.merges[BpeModel::pair_key(ia->second, ib->second)] = {static_cast<int32_t>(rank), iab->second};
    }
    return OkStatus();
  }

  Status load_normalizer(const Json& n, const std::string& path) {
    if (n.is_null()) return OkStatus();
    ASSIGN_OR_RETURN(const std::string type, get_type(n, path));
    if (type == "NFC") {
      if (!nfc_available()) return error(path, "ICU's NFC normalizer is unavailable");
      tok_->nfc_ = true;
      return OkStatus();
    }
    if (type == "Sequence") {
      if (!n.contains("normalizers") || !n["normalizers"].is_array()) {
        return error(path + ".normalizers", "expected an array");
      }
      for (size_t i = 0; i < n["normalizers"].size(); ++i) {
        RETURN_IF_ERROR(load_normalizer(n["normalizers"][i], cat(path, ".normalizers[", i, "]")));
      }
      return OkStatus();
    }
    return not_supported(path + ".type", type, "null, NFC, Sequence of NFC");
  }

  Status load_pre_tokenizer(const Json& p, const std::string& path) {
    if (p.is_null()) return OkStatus();
    ASSIGN_OR_RETURN(const std::string type, get_type(p, path));
    if (type == "Sequence") {
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array()) {
        return error(path + ".pretokenizers", "expected an array");
      }
      for (size_t i = 0; i < p["pretokenizers"].size(); ++i) {
        RETURN_IF_ERROR(load_pre_tokenizer(p["pretokenizers"][i], cat(path, ".pretokenizers[", i, "]")));
      }
      return OkStatus();
    }
    PreTokenizerStep step;
    if (type == "ByteLevel") {
      step.kind = PreTokenizerStep::Kind::kByteLevel;
      ASSIGN_OR_RETURN(step.add_prefix_space, get_bool(p, "add_prefix_space", path, true));
      ASSIGN_OR_RETURN(const bool use_regex, get_bool(p, "use_regex", path, true));
      if (use_regex) {
        auto regex = OnigRegex::compile(kGpt2Pattern);
        CHECK(regex.ok()) << "the built-in GPT-2 pattern: " << regex.status();
        step.regex = std::move(*regex);
      }
      tok_->byte_level_ = true;
    } else if (type == "Split") {
      if (!p.contains("pattern") || !p["pattern"].is_object() || p["pattern"].size() != 1) {
        return error(path + ".pattern", "expected {\"Regex\": \"...\"} or {\"String\": \"...\"}");
      }
      const auto pattern = p["pattern"].begin();
      const std::string kind = pattern.key();
      const Json& value = pattern.value();
      if (!value.is_string()) return error(cat(path, ".pattern.", kind), "expected a string");
      if (kind == "Regex") {
        auto regex = OnigRegex::compile(value.get<std::string>());
        if (!regex.ok()) return error(path + ".pattern.Regex", std::string(regex.status().message()));
        step.regex = std::move(*regex);
      } else if (kind == "String") {
        step.literal = value.get<std::string>();
      } else {
        return not_supported(path + ".pattern", kind, "Regex, String");
      }
      if (!p.contains("behavior") || !p["behavior"].is_string()) return error(path + ".behavior", "expected a string");
      static const std::pair<const char*, SplitBehavior> kBehaviors[] = {
          {"Removed", SplitBehavior::kRemoved},
          {"Isolated", SplitBehavior::kIsolated},
          {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
          {"MergedWithNext", SplitBehavior::kMergedWithNext},
          {"Contiguous", SplitBehavior::kContiguous}};
      const std::string behavior = p["behavior"].get<std::string>();
      const auto it = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                   [&](const auto& b) { return behavior == b.first; });
      if (it == std::end(kBehaviors)) {
        return not_supported(path + ".behavior", behavior,
                             "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
      }
      step.behavior = it->second;
      ASSIGN_OR_RETURN(step.invert, get_bool(p, "invert", path, false));
    } else {
      return not_supported(path + ".type", type, "null, ByteLevel, Split, Sequence of these");
    }
    tok_->pre_tokenizer_.push_back(std::move(step));
    return OkStatus();
  }

  Status load_decoder(const Json& d) {
    if (d.is_null()) return OkStatus();
    ASSIGN_OR_RETURN(const std::string type, get_type(d, "decoder"));
    if (type != "ByteLevel") return not_supported("decoder.type", type, "null, ByteLevel");
    tok_->byte_level_decoder_ = true;
    return OkStatus();
  }

  Status load_added_tokens(const Json& list) {
    if (!list.is_array()) return error("added_tokens", cat("expected an array, got ", list.type_name()));
    const BpeModel& model = tok_->model_;
    std::vector<AddedToken>& added = tok_->added_;
    for (size_t i = 0; i < list.size(); ++i) {
      const Json& t = list[i];
      const std::string path = cat("added_tokens[", i, "]");
      if (!t.is_object()) return error(path, "expected an object");
      AddedToken a;
      if (!t.contains("id") || !t["id"].is_number_integer() || t["id"].get<int64_t>() < 0 ||
          t["id"].get<int64_t>() > INT32_MAX) {
        return error(path + ".id", "expected an id in [0, 2^31)");
      }
      a.id = t["id"].get<int32_t>();
      if (!t.contains("content") || !t["content"].is_string()) return error(path + ".content", "expected a string");
      a.content = t["content"].get<std::string>();
      if (a.content.empty()) return error(path + ".content", "an added token cannot be empty");
      if (!utf8_valid(a.content)) return error(path + ".content", "not valid UTF-8");
      ASSIGN_OR_RETURN(a.special, get_bool(t, "special", path, false));
      ASSIGN_OR_RETURN(a.single_word, get_bool(t, "single_word", path, false));
      ASSIGN_OR_RETURN(a.lstrip, get_bool(t, "lstrip", path, false));
      ASSIGN_OR_RETURN(a.rstrip, get_bool(t, "rstrip", path, false));
      ASSIGN_OR_RETURN(a.normalized, get_bool(t, "normalized", path, !a.special));
      // `tokenizers` 0.23 decodes a normalized token as its normalised form (NFC: "e\u0301" as "\u00e9").
      if (a.normalized && tok_->nfc_) {
        nfc(a.content, a.decoded);
      } else {
        a.decoded = a.content;
      }
      // The ids `tokenizers` would give: the vocabulary's own id, else one no vocabulary entry uses.
      if (const auto it = model.vocab.find(a.content); it != model.vocab.end() && it->second != a.id) {
        return error(path + ".id", cat(a.id, " but model.vocab gives ", quote(a.content), " id ", it->second));
      }
      if (const auto it = model.vocab_r.find(a.id); it != model.vocab_r.end() && it->second != a.content) {
        return error(path + ".id", cat(a.id, " is the id of ", quote(it->second), " in model.vocab"));
      }
      if (!tok_->added_by_content_.emplace(a.content, a.id).second) {
        return error(path + ".content", quote(a.content) + " is listed twice");
      }
      if (!tok_->added_by_id_.emplace(a.id, added.size()).second) {
        return error(path + ".id", cat(a.id, " is the id of another added token"));
      }
      added.push_back(std::move(a));
    }
    // Matching order: special tokens, then the others, as AddedVocabulary builds its tries.
    for (const bool special : {true, false}) {
      for (size_t k = 0; k < added.size(); ++k) {
        const AddedToken& a = added[k];
        if (a.special != special) continue;
        (a.normalized ? tok_->normalized_tokens_ : tok_->raw_tokens_).add(a.decoded, static_cast<int>(k));
      }
    }
    tok_->raw_tokens_.finish();
    tok_->normalized_tokens_.finish();
    return OkStatus();
  }

  std::string source_;
  std::unique_ptr<BpeTokenizer> tok_;
};

StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(cat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(cat(path, ": read failed"));
  return ss.str();
}

StatusOr<Json> parse_json(std::string_view text, const std::string& source) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    try {  // parse again only to learn where it fails
      const Json again = Json::parse(text);
    } catch (const Json::parse_error& e) {
      return absl::InvalidArgumentError(cat(source, ": not valid JSON: ", e.what()));
    }
    return absl::InvalidArgumentError(cat(source, ": not valid JSON"));
  }
  return j;
}

// "eos_token": "<x>" or {"content": "<x>", ...} (tokenizer_config.json's two forms); "" if absent.
StatusOr<std::string> config_token(const Json& config, const char* key, const std::string& source) {
  if (!config.contains(key) || config[key].is_null()) return std::string();
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return absl::InvalidArgumentError(
      cat(source, ": ", key, ": expected a string or {\"content\": ...}, got ", quote_json(v)));
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> parse_bpe_tokenizer(std::string_view json_text, const std::string& source) {
  ASSIGN_OR_RETURN(const Json root, parse_json(json_text, source));
  try {
    ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok, Loader(source).load(root));
    return std::unique_ptr<Tokenizer>(std::move(tok));
  } catch (const Json::exception& e) {  // a shape the checks above missed: still an error, not a crash
    return absl::InvalidArgumentError(cat(source, ": unexpected JSON structure: ", e.what()));
  }
}

StatusOr<std::unique_ptr<Tokenizer>> load_bpe_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "tokenizer.json").string() : path;
  ASSIGN_OR_RETURN(const std::string text, read_file(file));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, parse_bpe_tokenizer(text, file));

  const std::string config_path = (fs::path(file).parent_path() / "tokenizer_config.json").string();
  if (!fs::exists(config_path, ec)) return tok;
  ASSIGN_OR_RETURN(const std::string config_text, read_file(config_path));
  ASSIGN_OR_RETURN(const Json config, parse_json(config_text, config_path));
  if (!config.is_object()) return absl::InvalidArgumentError(config_path + ": expected a JSON object");
  auto* bpe = static_cast<BpeTokenizer*>(tok.get());
  for (const char* key : {"eos_token", "pad_token"}) {
    ASSIGN_OR_RETURN(const std::string token, config_token(config, key, config_path));
    if (token.empty()) continue;
    const std::optional<int32_t> id = bpe->token_id(token);
    if (!id) {
      return absl::InvalidArgumentError(
          cat(config_path, ": ", key, ": ", quote(token), " is not a token of ", file));
    }
    bpe->set_special(key, *id);
  }
  return tok;
}

}  // namespace strata
