// Byte-level BPE read from a Hugging Face tokenizer.json (GPT-2, Llama-3 and Qwen2 styles), with
// the encode and decode of the `tokenizers` library (0.23), id for id and byte for byte:
// tests/golden/tokenizers (scripts/make_golden_tokenizers.py) hold the evidence.
//
// Supported components; anything else is an error that names its JSON path
// ("<file>: normalizer.type: \"Lowercase\" is not supported (supported: ...)"):
//   added_tokens   every flag (single_word, lstrip, rstrip, normalized, special); matched
//                  literally, leftmost-longest, before normalisation (normalized: false) and after
//                  it (normalized: true), as `tokenizers` does
//   normalizer     null, NFC, or a Sequence of NFC. NFC uses Unicode 9.0 data, like `tokenizers`
//   pre_tokenizer  null, ByteLevel (GPT-2 regex when use_regex, add_prefix_space), Split (Regex or
//                  String pattern, any behavior, invert), or a Sequence of these
//   model          BPE: merges as "a b" strings or ["a", "b"] pairs, ignore_merges, unk_token,
//                  fuse_unk. Rejected: dropout, byte_fallback, subword prefix/suffix
//   decoder        null (tokens joined by spaces) or ByteLevel
//   ignored        post_processor, truncation, padding: encode never adds BOS/EOS
// encode: plain text; special tokens written in it are recognised; invalid UTF-8 is first
// repaired (each ill-formed part becomes U+FFFD). decode: as `tokenizers` with
// skip_special_tokens=False; normalized added tokens come out normalised; unknown ids are skipped;
// bytes that do not form UTF-8 become U+FFFD.
// Split regexes are Oniguruma patterns (what `tokenizers` compiles); onig_to_pcre2 translates them
// for PCRE2 so that \s, \S, \w, \d, \h, \p{L}, \p{N}, \p{M} keep Oniguruma's Unicode 16 meaning.
// The implementation is split: data/unicode_text.h (UTF-8, NFC, regexes), data/pre_tokenize.h
// (added tokens, pre-tokenizer steps), data/bpe_tokenizer.cc (BPE, tokenizer.json).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"
#include "data/tokenizer.h"

namespace strata {

// Reads `path`: a tokenizer.json, or a folder holding one. A tokenizer_config.json beside it, when
// present, gives eos_token and pad_token (as transformers reads them); without one, eos is the
// first of <|endoftext|>, <|end_of_text|>, </s>, <eos>, <|eot_id|>, <|im_end|> that exists (-1 if
// none) and pad is eos. vocab_size() is the largest id + 1. token_id() looks up added tokens, then
// the vocabulary as stored ("Ġthe"), then as text (" the").
StatusOr<std::unique_ptr<Tokenizer>> load_bpe_tokenizer(const std::string& path);

// Parses tokenizer.json text. `source` prefixes every error ("<source>: model.merges[3]: ...")
// and is the tokenizer's name().
StatusOr<std::unique_ptr<Tokenizer>> parse_bpe_tokenizer(std::string_view json_text,
                                                         const std::string& source);

// The PCRE2 pattern (to compile with UTF, UCP and MULTILINE) that matches what Oniguruma's Ruby
// syntax, as `tokenizers` uses it, matches for `pattern`. Errors name what is not supported
// (\S or \W inside a character class, nested classes, &&). Exposed for tests; defined, with
// the other Unicode machinery, in data/unicode_text.cc.
StatusOr<std::string> onig_to_pcre2(std::string_view pattern);

}  // namespace strata
