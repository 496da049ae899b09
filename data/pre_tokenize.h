// How the byte-level BPE tokenizer (data/bpe_tokenizer.h) cuts text into the pieces its model
// merges, as `tokenizers` does before the model runs:
//   added tokens   literal matches, leftmost-longest (AddedTokenSet), kept or dropped by
//                  single_word and widened by lstrip/rstrip as AddedVocabulary does (split_added);
//   pre-tokenizer  a pre_tokenizer's steps, in order (apply_step): Split (Oniguruma regex or
//                  literal, five behaviours, invert) and ByteLevel (prefix space, GPT-2 regex,
//                  byte alphabet).
// Reading these from tokenizer.json, NFC and the BPE merges are in data/bpe_tokenizer.cc; UTF-8,
// \w, \s and the regex engine in data/unicode_text.h.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/unicode_text.h"

namespace strata {

// ---------------------------------------------------------------------------------------------
// Added tokens
// ---------------------------------------------------------------------------------------------

struct AddedToken {
  int32_t id = -1;
  std::string content;
  std::string decoded;  // what decode() writes: the normalised content when normalized is true
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Literal patterns matched leftmost-longest, as aho-corasick's MatchKind::LeftmostLongest does.
class AddedTokenSet {
 public:
  struct Match {
    size_t start, length;
    int token;  // index into the tokenizer's added tokens
  };
  void add(std::string pattern, int token);
  void finish();  // call once after the last add(): longest first; equal lengths keep insertion order
  bool empty() const { return patterns_.empty(); }
  // The leftmost match starting at or after `from`, the longest there.
  std::optional<Match> find(std::string_view text, size_t from) const;

 private:
  std::vector<std::pair<std::string, int>> patterns_;
  std::array<std::vector<int>, 256> by_first_byte_;
};

// [begin, end) of the text split_added cut: an added token, or text for the next stage.
struct AddedSegment {
  size_t begin, end;
  int32_t id;  // -1: text for the next stage
};

// AddedVocabulary::find_matches: the added tokens of `set` in `s` (valid UTF-8), with the text
// around them, in order; `tokens` are what `set` indexes. `out` is cleared first.
void split_added(std::string_view s, const AddedTokenSet& set, const std::vector<AddedToken>& tokens,
                 std::vector<AddedSegment>& out);

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer steps
// ---------------------------------------------------------------------------------------------

// GPT-2's pre-tokenizer regex, built into the ByteLevel pre-tokenizer.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel } kind = Kind::kSplit;
  std::optional<OnigRegex> regex;  // Split with a Regex pattern; ByteLevel with use_regex
  std::string literal;             // Split with a String pattern
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
};

// Runs one step over every piece (valid UTF-8, not empty); `pieces` becomes what it yields.
void apply_step(const PreTokenizerStep& step, std::vector<std::string>& pieces);

}  // namespace strata
