// Unicode text as `tokenizers` sees it (what lives here: unicode_text.h). The tables were measured
// over every code point against `tokenizers` 0.23, with ICU 72 (Unicode 15.0) and PCRE2 10.42
// (Unicode 14) underneath; each comment names the version gap it closes.
#include "data/unicode_text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>                // Oniguruma patterns run as PCRE2 (UTF + UCP, JIT)
#include <unicode/bytestream.h>   // StringByteSink for NFC output
#include <unicode/normalizer2.h>  // NFC
#include <unicode/uchar.h>        // Alphabetic, Join_Control, general categories for \w
#include <unicode/uniset.h>       // [:age=9.0:] for NFC as `tokenizers` does it

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <sstream>

#include "core/check.h"

namespace strata {
namespace {

// Concatenates anything ostream prints (absl::StrCat here does not take std::string_view).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when there is none; then *bad
// is the length of its "maximal subpart" (Unicode ch. 3), which one U+FFFD replaces, as in Rust's
// String::from_utf8_lossy.
size_t utf8_sequence(std::string_view s, size_t i, size_t* bad) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = byte(i);
  if (c < 0x80) return 1;
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (i + k >= s.size() || byte(i + k) < l || byte(i + k) > h) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

}  // namespace

bool utf8_valid(std::string_view s) {
  size_t bad = 0;
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_sequence(s, i, &bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Each ill-formed part becomes U+FFFD.
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t bad = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence(s, i, &bad);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

// Unicode White_Space, which Oniguruma's \s and Rust regex's \s both match (PCRE2 10.42 also
// takes U+180E, which stopped being a space in Unicode 6.3).
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Rust regex's Unicode \w (what `tokenizers` uses for single_word): Alphabetic, marks, decimal
// digits, connector punctuation, Join_Control. ICU 72 has Unicode 15.0; the Rust tables are
// Unicode 16, whose additions are these (measured over every code point with `tokenizers` 0.23).
constexpr std::pair<char32_t, char32_t> kRustWordExtra[] = {
    {0x897, 0x897},     {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3},
    {0x10D40, 0x10D65}, {0x10D69, 0x10D6D}, {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x10EFC, 0x10EFC},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113C0},
    {0x113C2, 0x113C2}, {0x113C5, 0x113C5}, {0x113C7, 0x113CA}, {0x113CC, 0x113D3}, {0x113E1, 0x113E2},
    {0x116D0, 0x116E3}, {0x11BC0, 0x11BE0}, {0x11BF0, 0x11BF9}, {0x11F5A, 0x11F5A}, {0x13460, 0x143FA},
    {0x16100, 0x16139}, {0x16D40, 0x16D6C}, {0x16D70, 0x16D79}, {0x18CFF, 0x18CFF}, {0x1CCF0, 0x1CCF9},
    {0x1E5D0, 0x1E5FA}, {0x2EBF0, 0x2EE5D}};

bool is_word_char(char32_t c) {
  for (const auto& [lo, hi] : kRustWordExtra) {
    if (c >= lo && c <= hi) return true;
  }
  const UChar32 u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL)) return true;
  const int8_t t = u_charType(u);
  return t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK ||
         t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character alphabet (bytes_to_unicode): printable Latin-1 bytes stand for
// themselves, the other 68 bytes for U+0100..U+0143 in byte order.
// ---------------------------------------------------------------------------------------------

namespace {

constexpr char32_t kByteCharEnd = 0x144;

struct ByteAlphabet {
  std::array<std::string, 256> encode;      // byte -> UTF-8 of its character
  std::array<int16_t, kByteCharEnd> decode;  // character -> byte, -1 when it stands for none
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    a.decode.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? static_cast<char32_t>(b) : next++;
      append_utf8(a.encode[b], c);
      a.decode[c] = static_cast<int16_t>(b);
    }
    return a;
  }();
  return alphabet;
}

}  // namespace

std::string byte_level_encode(std::string_view s) {
  const ByteAlphabet& a = byte_alphabet();
  std::string out;
  out.reserve(s.size() * 2);
  for (const char c : s) out += a.encode[static_cast<uint8_t>(c)];
  return out;
}

// ByteLevel decoder, per token: its bytes when every character is in the alphabet, else the
// token's own text (`tokenizers` does the same for added tokens such as "hello world").
void byte_level_decode_token(std::string_view token, std::string& out) {
  const ByteAlphabet& a = byte_alphabet();
  const size_t mark = out.size();
  for (size_t i = 0; i < token.size();) {
    const char32_t c = next_code_point(token, i);
    if (c >= kByteCharEnd || a.decode[c] < 0) {
      out.resize(mark);
      out.append(token);
      return;
    }
    out += static_cast<char>(a.decode[c]);
  }
}

// ---------------------------------------------------------------------------------------------
// NFC (ICU)
// ---------------------------------------------------------------------------------------------

namespace {

// `tokenizers` normalises with unicode-normalization-alignments, whose tables are Unicode 9.0:
// characters assigned later pass through untouched and nothing reorders or composes across them.
// ICU's FilteredNormalizer2 over [:age=9.0:] does exactly that (measured over every code point).
const icu::Normalizer2* nfc_normalizer() {
  struct Nfc9 {
    icu::UnicodeSet unicode9;
    std::unique_ptr<icu::FilteredNormalizer2> normalizer;
  };
  static const Nfc9* const nfc9 = []() -> const Nfc9* {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
    auto n = std::make_unique<Nfc9>();
    n->unicode9.applyPattern(icu::UnicodeString("[:age=9.0:]", -1, US_INV), status);
    if (U_FAILURE(status)) return nullptr;
    n->unicode9.freeze();  // frozen sets are safe to share between threads
    n->normalizer = std::make_unique<icu::FilteredNormalizer2>(*nfc, n->unicode9);
    return n.release();  // immutable and kept for the process, like ICU's own NFC instance
  }();
  return nfc9 != nullptr ? nfc9->normalizer.get() : nullptr;
}

}  // namespace

bool nfc_available() { return nfc_normalizer() != nullptr; }

// `s` is valid UTF-8; ASCII and already-NFC text come back unchanged without copying twice.
void nfc(std::string_view s, std::string& out) {
  out.clear();
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
    out.assign(s);
    return;
  }
  const icu::Normalizer2* n = nfc_normalizer();
  CHECK(n != nullptr) << "ICU NFC normalizer vanished after load checked it";
  UErrorCode status = U_ZERO_ERROR;
  const icu::StringPiece piece(s.data(), static_cast<int32_t>(s.size()));
  if (n->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) {
    out.assign(s);
    return;
  }
  status = U_ZERO_ERROR;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(s.size()));
  n->normalizeUTF8(0, piece, sink, nullptr, status);
  CHECK(U_SUCCESS(status)) << "ICU NFC failed: " << u_errorName(status);
}

// ---------------------------------------------------------------------------------------------
// Regexes: Oniguruma patterns run by PCRE2
// ---------------------------------------------------------------------------------------------

namespace {

// Class bodies that give PCRE2 10.42 (Unicode 14) Oniguruma's membership as `tokenizers` 0.23
// uses it (Unicode 16), measured over every code point (\s, \S, \p{L}, \p{N}, \w, \d, \h, \p{M},
// ".", "(?i:s)" all agree exactly). The extras are what Unicode 15.0-16.0 added; a newer PCRE2
// already has them, which the union makes harmless. Other properties (\p{Lu}, ...) pass through
// with PCRE2's own tables.
constexpr std::string_view kSpaceClass =  // Unicode White_Space (PCRE2 also takes U+180E)
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";
constexpr std::string_view kLetterExtra =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}"
    "\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}"
    "\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}"
    "\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
constexpr std::string_view kDigitExtra =  // Nd
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1E4F0}-\\x{1E4F9}"
    "\\x{1E5F1}-\\x{1E5FA}";
constexpr std::string_view kNumberExtra = "\\x{1D2C0}-\\x{1D2D3}";  // Kaktovik numerals (No)
constexpr std::string_view kMarkExtra =
    "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}"
    "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D0}"
    "\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}"
    "\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}"
    "\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}\\x{1E5EE}-\\x{1E5EF}";
// Oniguruma's \w is [\p{Alphabetic}\p{M}\p{Nd}\p{Pc}] plus these (¹²³¼½¾ and Unicode 15-16).
constexpr std::string_view kWordExtra =
    "\\x{B2}-\\x{B3}\\x{B9}\\x{BC}-\\x{BE}\\x{897}\\x{CF3}\\x{ECE}\\x{1C89}-\\x{1C8A}"
    "\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D40}-\\x{10D65}"
    "\\x{10D69}-\\x{10D6D}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{10EFC}-\\x{10EFF}"
    "\\x{1123F}-\\x{11241}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}"
    "\\x{113B7}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D3}"
    "\\x{113E1}-\\x{113E2}\\x{116D0}-\\x{116E3}\\x{11BC0}-\\x{11BE0}\\x{11BF0}-\\x{11BF9}"
    "\\x{11F00}-\\x{11F10}\\x{11F12}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{11F50}-\\x{11F5A}"
    "\\x{1342F}\\x{13440}-\\x{13455}\\x{13460}-\\x{143FA}\\x{16100}-\\x{16139}"
    "\\x{16D40}-\\x{16D6C}\\x{16D70}-\\x{16D79}\\x{18CFF}\\x{1B132}\\x{1B155}"
    "\\x{1CCF0}-\\x{1CCF9}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E08F}"
    "\\x{1E4D0}-\\x{1E4F9}\\x{1E5D0}-\\x{1E5FA}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}"
    "\\x{31350}-\\x{323AF}";

}  // namespace

// Oniguruma (Ruby syntax, UTF-8) to PCRE2: class shorthands become explicit classes with
// Oniguruma's membership; `(?m)` (Ruby: dot matches newline) becomes `(?s)`; `\uHHHH` becomes
// `\x{HHHH}`; ^ and $ are line anchors in both once PCRE2 gets MULTILINE.
StatusOr<std::string> onig_to_pcre2(std::string_view p) {
  const std::string letters = cat("\\p{L}", kLetterExtra);
  const std::string numbers = cat("\\p{N}", kDigitExtra, kNumberExtra);
  const std::string digits = cat("\\p{Nd}", kDigitExtra);
  const std::string word = cat("\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}", kWordExtra);
  const std::string marks = cat("\\p{M}", kMarkExtra);
  const std::string hex = "0-9a-fA-F";
  std::string out;
  bool in_class = false;
  const auto unsupported = [&](std::string_view what) {
    return absl::InvalidArgumentError(cat(what, " is not supported in a regex"));
  };
  // A class body: spliced into the enclosing class, or wrapped in [...] / [^...] outside one.
  const auto emit = [&](std::string_view body, bool negate, std::string_view what) -> Status {
    if (in_class) {
      if (negate) return unsupported(cat(what, " inside a character class"));
      out += body;
    } else {
      out += cat(negate ? "[^" : "[", body, "]");
    }
    return OkStatus();
  };
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) return absl::InvalidArgumentError("the regex ends with a lone backslash");
      const char e = p[i + 1];
      const std::string esc(p.substr(i, 2));
      Status s = OkStatus();
      switch (e) {
        case 's': case 'S': s = emit(kSpaceClass, e == 'S', esc); break;
        case 'w': case 'W': s = emit(word, e == 'W', esc); break;
        case 'd': case 'D': s = emit(digits, e == 'D', esc); break;
        case 'h': case 'H': s = emit(hex, e == 'H', esc); break;
        case 'p': case 'P': {
          std::string name;
          size_t end = i + 2;
          if (end < p.size() && p[end] == '{') {
            const size_t close = p.find('}', end);
            if (close == std::string_view::npos) return absl::InvalidArgumentError("unterminated \\p{");
            name = std::string(p.substr(end + 1, close - end - 1));
            end = close + 1;
          } else if (end < p.size()) {
            name = std::string(1, p[end]);
            end += 1;
          }
          bool negate = e == 'P';
          if (!name.empty() && name[0] == '^') {
            negate = !negate;
            name.erase(0, 1);
          }
          const std::string text(p.substr(i, end - i));
          if (name == "L" || name == "Letter") {
            s = emit(letters, negate, text);
          } else if (name == "N" || name == "Number") {
            s = emit(numbers, negate, text);
          } else if (name == "M" || name == "Mark") {
            s = emit(marks, negate, text);
          } else {
            out += cat(negate ? "\\P{" : "\\p{", name, "}");
          }
          if (!s.ok()) return s;
          i = end;
          continue;
        }
        case 'u': {
          const auto hex_digit = [](char h) { return std::isxdigit(static_cast<unsigned char>(h)) != 0; };
          if (i + 6 > p.size() || !std::all_of(p.begin() + i + 2, p.begin() + i + 6, hex_digit)) {
            return absl::InvalidArgumentError("\\u needs four hex digits");
          }
          out += cat("\\x{", p.substr(i + 2, 4), "}");
          i += 6;
          continue;
        }
        default:
          out += esc;
      }
      if (!s.ok()) return s;
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX bracket [:alpha:]
          const size_t close = p.find(":]", i + 2);
          if (close == std::string_view::npos) return absl::InvalidArgumentError("unterminated [: in a class");
          out += p.substr(i, close + 2 - i);
          i = close + 2;
          continue;
        }
        return unsupported("a nested character class");
      }
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') return unsupported("class intersection (&&)");
      if (c == ']') in_class = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      ++i;
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') out += p[i++];  // a leading ] is literal
      continue;
    }
    if (c == '(' && i + 1 < p.size() && p[i + 1] == '?') {
      size_t j = i + 2;
      while (j < p.size() && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) ++j;
      if (j > i + 2 && j < p.size() && (p[j] == ':' || p[j] == ')')) {
        std::string flags(p.substr(i + 2, j - i - 2));
        std::replace(flags.begin(), flags.end(), 'm', 's');
        out += cat("(?", flags);
        i = j;
        continue;
      }
    }
    out += c;
    ++i;
  }
  if (in_class) return absl::InvalidArgumentError("unterminated character class");
  return out;
}

struct OnigRegex::Code {
  explicit Code(pcre2_code* c) : code(c) {}
  Code(const Code&) = delete;
  Code& operator=(const Code&) = delete;
  ~Code() { pcre2_code_free(code); }
  pcre2_code* code;
};

StatusOr<OnigRegex> OnigRegex::compile(std::string_view pattern) {
  ASSIGN_OR_RETURN(std::string translated, onig_to_pcre2(pattern));
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(cat("PCRE2 cannot compile it (", reinterpret_cast<char*>(message),
                                          " at offset ", offset, " of ", translated, ")"));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // no JIT (unsupported CPU) falls back to the interpreter
  OnigRegex r;
  r.code_ = std::make_shared<const Code>(code);
  return r;
}

std::vector<std::pair<size_t, size_t>> OnigRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr), &pcre2_match_data_free);
  std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> context(nullptr,
                                                                                     &pcre2_match_context_free);
  std::unique_ptr<pcre2_jit_stack, decltype(&pcre2_jit_stack_free)> stack(nullptr, &pcre2_jit_stack_free);
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  std::optional<size_t> last_end;
  while (pos <= text.size()) {
    int rc = pcre2_match(code_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, data.get(), context.get());
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !stack) {  // long runs: retry with a 64 MiB JIT stack
      stack.reset(pcre2_jit_stack_create(1 << 16, 64 << 20, nullptr));
      context.reset(pcre2_match_context_create(nullptr));
      pcre2_jit_stack_assign(context.get(), nullptr, stack.get());
      continue;
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    CHECK_GE(rc, 0) << "PCRE2 match failed with error " << rc << " on a " << text.size() << "-byte piece";
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t start = ovector[0], end = ovector[1];
    if (start == end && last_end == end) {
      if (pos >= text.size()) break;
      next_code_point(text, pos);
      continue;
    }
    matches.emplace_back(start, end);
    pos = end;
    last_end = end;
  }
  return matches;
}

}  // namespace strata
