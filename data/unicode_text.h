// Unicode text as the Hugging Face `tokenizers` library (Rust, 0.23) sees it, for the byte-level
// BPE tokenizer (data/bpe_tokenizer.h): UTF-8 decoding and repair (Rust's from_utf8_lossy), the
// classes Rust regex and Oniguruma give \s and \w, NFC restricted to Unicode 9.0 (ICU), GPT-2's
// byte <-> character alphabet, and Oniguruma regexes (tokenizer.json's patterns) run by PCRE2.
// Every table here was measured over all code points against `tokenizers`; each names the ICU or
// PCRE2 shortfall it makes up for. What uses them (added tokens, pre-tokenizer steps, BPE merges,
// reading tokenizer.json) is not here: data/pre_tokenize.h and data/bpe_tokenizer.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace strata {

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

bool utf8_valid(std::string_view s);

// Each ill-formed part (a "maximal subpart", Unicode ch. 3) becomes U+FFFD, as in Rust's
// String::from_utf8_lossy.
std::string utf8_lossy(std::string_view s);

// Decodes the code point at s[i] of valid UTF-8 and advances i past it.
inline char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<uint8_t>(s[k])); };
  const char32_t c = b(i);
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    i += 2;
    return ((c & 0x1F) << 6) | (b(i - 1) & 0x3F);
  }
  if (c < 0xF0) {
    i += 3;
    return ((c & 0x0F) << 12) | ((b(i - 2) & 0x3F) << 6) | (b(i - 1) & 0x3F);
  }
  i += 4;
  return ((c & 0x07) << 18) | ((b(i - 3) & 0x3F) << 12) | ((b(i - 2) & 0x3F) << 6) | (b(i - 1) & 0x3F);
}

// The code point that ends at s[end) (valid UTF-8, end > 0); *begin is where it starts.
inline char32_t previous_code_point(std::string_view s, size_t end, size_t* begin) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  *begin = i;
  return next_code_point(s, i);
}

// ---------------------------------------------------------------------------------------------
// Unicode classes, as Rust regex has them (what `tokenizers` uses for added tokens)
// ---------------------------------------------------------------------------------------------

// Unicode White_Space: Rust regex's \s (and Oniguruma's).
bool is_white_space(char32_t c);

// Rust regex's Unicode \w (Unicode 16): what single_word added tokens must not touch.
bool is_word_char(char32_t c);

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character alphabet (bytes_to_unicode)
// ---------------------------------------------------------------------------------------------

// Every byte of `s` as its alphabet character (UTF-8).
std::string byte_level_encode(std::string_view s);

// The ByteLevel decoder for one token (valid UTF-8), appended to `out`: its bytes when every
// character is in the alphabet, else the token's own text.
void byte_level_decode_token(std::string_view token, std::string& out);

// ---------------------------------------------------------------------------------------------
// NFC with Unicode 9.0 data, as `tokenizers` normalises
// ---------------------------------------------------------------------------------------------

// Whether ICU could build the normaliser; nfc() may be called only when it could.
bool nfc_available();

// out = NFC of `s` (valid UTF-8); characters assigned after Unicode 9.0 pass through untouched.
void nfc(std::string_view s, std::string& out);

// ---------------------------------------------------------------------------------------------
// Oniguruma regexes run by PCRE2
// ---------------------------------------------------------------------------------------------

// The PCRE2 pattern (to compile with UTF, UCP and MULTILINE) that matches what Oniguruma's Ruby
// syntax, as `tokenizers` uses it, matches for `pattern`. Errors name what is not supported
// (\S or \W inside a character class, nested classes, &&). Also declared, for tests, in
// data/bpe_tokenizer.h.
StatusOr<std::string> onig_to_pcre2(std::string_view pattern);

// A compiled Oniguruma pattern (immutable; match data is per call, so concurrent use is safe).
// Copies share one compiled pattern.
class OnigRegex {
 public:
  // Errors are "<why>" for the caller to prefix with a path.
  static StatusOr<OnigRegex> compile(std::string_view pattern);

  // [begin, end) byte offsets of the matches in `text` (valid UTF-8) as Oniguruma's find_iter
  // yields them: left to right, each search starting where the last match ended; an empty match
  // right at the end of the previous one is skipped.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Code;  // the PCRE2 code, freed with the last copy
  std::shared_ptr<const Code> code_;
};

}  // namespace strata
