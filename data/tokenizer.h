// Tokenizers: text <-> token ids. Two kinds: the character tokenizer for tiny experiments (ids =
// ASCII codes, vocabulary 128) and byte-level BPE loaded from a Hugging Face tokenizer.json
// (GPT-2, Llama-3 and Qwen2 styles), which must match the `tokenizers` library exactly.
// load_tokenizer("char") or load_tokenizer("path/to/tokenizer.json") picks one.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace strata {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Plain encoding: no BOS/EOS added (callers add the special tokens their format needs).
  // Special/added tokens written literally in the text are recognised, as `tokenizers` does.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // End-of-sequence id (appended after every SFT completion); -1 when the tokenizer has none.
  virtual int32_t eos_id() const = 0;
  // Padding id (its positions never carry loss); defaults to eos.
  virtual int32_t pad_id() const { return eos_id(); }
  // Id of a token given by its text (e.g. "<|endoftext|>"), if it exists.
  virtual std::optional<int32_t> token_id(std::string_view token) const = 0;
  virtual std::string name() const = 0;  // "char" or the file path
};

// The character tokenizer: ids 0..127 are ASCII; EOS = 4 (EOT); PAD = 0 (NUL). Bytes >= 128
// encode as '?'.
// decode writes PAD and EOS as nothing and ids outside 0..127 as '?'.
std::unique_ptr<Tokenizer> make_char_tokenizer();

// "char" -> the character tokenizer; anything else is a path to a tokenizer.json.
// Byte-level BPE (data/bpe_tokenizer.h) decodes like `tokenizers` with skip_special_tokens=False:
// special tokens are written out, unknown ids skipped; a folder holding tokenizer.json also works.
StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& spec);

}  // namespace strata
