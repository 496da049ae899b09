// The character tokenizer and load_tokenizer (tokenizer.h); byte-level BPE is bpe_tokenizer.cc.
#include "data/tokenizer.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/bpe_tokenizer.h"
#include "data/unicode_text.h"

namespace strata {
namespace {

// ids 0..127 are the ASCII codes. encode: each byte >= 128 becomes '?' (so a 2-byte UTF-8
// character is two '?'). decode: PAD (0) and EOS (4) write nothing, ids outside 0..127 write '?',
// every other id writes its byte; so decode(encode(s)) == s for ASCII s without NUL or EOT.
class CharTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kVocab = 128;
  static constexpr int32_t kPad = 0;  // NUL
  static constexpr int32_t kEos = 4;  // EOT

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (const char c : text) {
      const auto b = static_cast<uint8_t>(c);
      ids.push_back(b < kVocab ? static_cast<int32_t>(b) : int32_t{'?'});
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (const int32_t id : ids) {
      if (id == kPad || id == kEos) continue;
      text += (id > 0 && id < kVocab) ? static_cast<char>(id) : '?';
    }
    return text;
  }

  int64_t vocab_size() const override { return kVocab; }
  int32_t eos_id() const override { return kEos; }
  int32_t pad_id() const override { return kPad; }

  // A one-character ASCII string is its own token.
  std::optional<int32_t> token_id(std::string_view token) const override {
    if (token.size() == 1 && static_cast<uint8_t>(token[0]) < kVocab) return static_cast<int32_t>(token[0]);
    return std::nullopt;
  }

  std::string name() const override { return "char"; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_char_tokenizer() { return std::make_unique<CharTokenizer>(); }

namespace {

// A tokenizer.json that is the char tokenizer written out (strata export): a BPE without merges
// whose vocabulary is exactly the 128 ASCII bytes, in GPT-2's byte-level alphabet, at their codes.
bool is_exported_char_tokenizer(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;  // a folder is the BPE loader's
  std::ifstream in(path);
  if (!in) return false;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    return false;  // unreadable: the BPE loader reports it
  }
  if (j.is_discarded() || !j.contains("model") || !j["model"].is_object()) return false;
  const nlohmann::json& m = j["model"];
  if (m.value("type", "") != "BPE" || !m.contains("vocab") || !m["vocab"].is_object() || m["vocab"].size() != 128 ||
      !m.contains("merges") || !m["merges"].is_array() || !m["merges"].empty()) {
    return false;
  }
  for (int b = 0; b < 128; ++b) {
    const std::string c = byte_level_encode(std::string(1, static_cast<char>(b)));
    if (!m["vocab"].contains(c) || m["vocab"][c] != b) return false;
  }
  return true;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& spec) {
  if (spec == "char" || is_exported_char_tokenizer(spec)) return make_char_tokenizer();
  return load_bpe_tokenizer(spec);
}

}  // namespace strata
