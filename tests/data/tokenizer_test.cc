// Tokenizers (data/tokenizer.h, data/bpe_tokenizer.h):
//   - the character tokenizer: ids, '?' for non-ASCII bytes, PAD/EOS decode to nothing;
//   - golden: the ids and decoded text the Hugging Face `tokenizers` library gives for ~75 strings
//     with GPT-2, Llama-3 and Qwen2 style tokenizer.json files and one using every added-token
//     flag (tests/golden/tokenizers, scripts/make_golden_tokenizers.py), and lossy decoding;
//   - Split behaviours, unk handling, invalid UTF-8 input, very long runs, concurrent encodes;
//   - eos/pad choice, with and without tokenizer_config.json;
//   - malformed tokenizer.json files: each error names the JSON path of what is wrong;
//   - encode throughput (reported, not asserted).
#include <gtest/gtest.h>
#include <unistd.h>  // getpid

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>  // golden files, malformed tokenizer.json built here
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "data/tokenizer.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const fs::path kGoldenDir = fs::path(STRATA_SOURCE_DIR) / "tests" / "golden" / "tokenizers";

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Tokenizer> load_style(const std::string& style) {
  auto tok = load_tokenizer((kGoldenDir / style / "tokenizer.json").string());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// ---------------------------------------------------------------------------------------------
// The character tokenizer
// ---------------------------------------------------------------------------------------------

TEST(CharTokenizerTest, AsciiRoundTripsAndIdsAreCodes) {
  auto tok = load_tokenizer("char");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.name(), "char");
  EXPECT_EQ(t.vocab_size(), 128);
  EXPECT_EQ(t.eos_id(), 4);
  EXPECT_EQ(t.pad_id(), 0);
  const std::string text = "Compute 12+34 = 46.\n\tOK? {x: [1, 2]} ~";
  const std::vector<int32_t> ids = t.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], static_cast<int32_t>(text[i]));
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.token_id("a"), 97);
  EXPECT_EQ(t.token_id("ab"), std::nullopt);
  EXPECT_EQ(t.token_id("\xC3\xA9"), std::nullopt);
}

TEST(CharTokenizerTest, NonAsciiBytesAreQuestionMarksAndPadEosDecodeToNothing) {
  auto t = make_char_tokenizer();
  EXPECT_EQ(t->encode("\xC3\xA9t\xC3\xA9"), (std::vector<int32_t>{'?', '?', 't', '?', '?'}));
  EXPECT_EQ(t->decode({'a', 4, 'b', 0, 0, 'c', 4}), "abc");
  EXPECT_EQ(t->decode({-1, 128, 'x', 1000}), "??x?");
  EXPECT_EQ(t->encode(""), std::vector<int32_t>{});
}

// ---------------------------------------------------------------------------------------------
// Golden: what `tokenizers` encodes and decodes
// ---------------------------------------------------------------------------------------------

class GoldenTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTokenizerTest, EncodeAndDecodeMatchTokenizers) {
  const std::string style = GetParam();
  const Json golden = Json::parse(read_text(kGoldenDir / style / "golden.json"));
  auto tok = load_style(style);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), golden["vocab_size"].get<int64_t>());
  for (const auto& [content, id] : golden["added_tokens"].items()) {
    EXPECT_EQ(tok->token_id(content), id.get<int32_t>()) << content;
  }
  int n = 0;
  for (const Json& c : golden["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok->encode(text);
    EXPECT_EQ(got, want) << style << " encode of " << Json(text).dump();
    EXPECT_EQ(tok->decode(want), c["decoded"].get<std::string>()) << style << " decode of " << Json(text).dump();
    ++n;
  }
  for (const Json& c : golden["decode_cases"]) {
    EXPECT_EQ(tok->decode(c["ids"].get<std::vector<int32_t>>()), c["decoded"].get<std::string>())
        << style << " decode of " << c["ids"].dump();
  }
  EXPECT_GE(n, 60);
  std::printf("%s: %d strings match tokenizers %s\n", style.c_str(), n,
              golden["tokenizers_version"].get<std::string>().c_str());
}

INSTANTIATE_TEST_SUITE_P(Styles, GoldenTokenizerTest, ::testing::Values("gpt2", "llama3", "qwen2", "flags"));

TEST(BpeTokenizerTest, EosIsTheBaseModelEndOfTextByDefault) {
  for (const auto& [style, eos] : std::vector<std::pair<std::string, std::string>>{
           {"gpt2", "<|endoftext|>"}, {"llama3", "<|end_of_text|>"}, {"qwen2", "<|endoftext|>"}}) {
    auto tok = load_style(style);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->eos_id(), tok->token_id(eos).value()) << style;
    EXPECT_EQ(tok->pad_id(), tok->eos_id()) << style;
    EXPECT_EQ(tok->name(), (kGoldenDir / style / "tokenizer.json").string());
  }
}

TEST(BpeTokenizerTest, TokenIdFindsAddedTokensAndByteLevelText) {
  auto tok = load_style("gpt2");
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> space_the = tok->encode(" the");
  ASSERT_EQ(space_the.size(), 1u);
  EXPECT_EQ(tok->token_id(" the"), space_the[0]);       // as text
  EXPECT_EQ(tok->token_id("\xC4\xA0the"), space_the[0]);  // as stored ("Ġthe")
  EXPECT_EQ(tok->token_id("<|endoftext|>"), 1500);
  EXPECT_EQ(tok->token_id("no such token here"), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Behaviours checked on tokenizer.json files built here
// ---------------------------------------------------------------------------------------------

// A tokenizer.json whose vocabulary holds each single character of `chars` and each of `words`.
Json small_tokenizer(const std::string& chars, const std::vector<std::string>& words) {
  Json vocab = Json::object();
  for (const char c : chars) vocab[std::string(1, c)] = static_cast<int>(vocab.size());
  for (const std::string& w : words) vocab[w] = static_cast<int>(vocab.size());
  return Json{{"version", "1.0"},
              {"added_tokens", Json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"decoder", nullptr},
              {"model", {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", Json::array()}}}};
}

std::unique_ptr<Tokenizer> parse_ok(const Json& j) {
  auto tok = parse_bpe_tokenizer(j.dump(), "test.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// The pieces of NormalizedString::split's own documentation example, "the-final--countdown".
TEST(BpeTokenizerTest, SplitBehavioursCutAsTokenizersDocuments) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Removed", "the final countdown"},
      {"Isolated", "the - final - - countdown"},
      {"MergedWithPrevious", "the- final- - countdown"},
      {"MergedWithNext", "the -final - -countdown"},
      {"Contiguous", "the - final -- countdown"}};
  for (const char* kind : {"Regex", "String"}) {
    for (const auto& [behavior, pieces] : cases) {
      Json j = small_tokenizer("-acdefhilnortuw", {"the", "final", "countdown", "the-", "final-", "-final",
                                                   "-countdown", "--"});
      j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{kind, "-"}}}, {"behavior", behavior}, {"invert", false}};
      j["decoder"] = nullptr;  // no decoder: decode joins tokens with spaces
      auto tok = parse_ok(j);
      ASSERT_NE(tok, nullptr);
      EXPECT_EQ(tok->decode(tok->encode("the-final--countdown")), pieces) << kind << " " << behavior;
    }
  }
}

TEST(BpeTokenizerTest, UnknownCharactersBecomeUnkFusedOrNotOrAreDropped) {
  Json j = small_tokenizer("ab", {"<unk>"});
  j["model"]["ignore_merges"] = false;
  auto dropped = parse_ok(j);
  ASSERT_NE(dropped, nullptr);
  EXPECT_EQ(dropped->encode("axxb"), (std::vector<int32_t>{0, 1}));  // no unk_token: dropped
  j["model"]["unk_token"] = "<unk>";
  auto unk = parse_ok(j);
  ASSERT_NE(unk, nullptr);
  EXPECT_EQ(unk->encode("axxb\xC3\xA9"), (std::vector<int32_t>{0, 2, 2, 1, 2}));
  j["model"]["fuse_unk"] = true;
  auto fused = parse_ok(j);
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(fused->encode("axxb\xC3\xA9"), (std::vector<int32_t>{0, 2, 1, 2}));
}

TEST(BpeTokenizerTest, InvalidUtf8IsRepairedToReplacementCharacters) {
  auto tok = load_style("qwen2");
  ASSERT_NE(tok, nullptr);
  // Maximal subparts: E2 82 is one U+FFFD, ED A0 80 is three, a lone C3 at the end is one.
  EXPECT_EQ(tok->encode("a\xE2\x82z\xED\xA0\x80\xC3"),
            tok->encode("a\xEF\xBF\xBDz\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST(BpeTokenizerTest, VeryLongRunsEncodeAndRoundTrip) {
  for (const std::string style : {"gpt2", "llama3"}) {
    auto tok = load_style(style);
    ASSERT_NE(tok, nullptr);
    for (const std::string& text : {std::string(1 << 20, ' '), std::string(200000, 'a'),
                                    std::string(100000, '7'), std::string(50000, '\n') + "x"}) {
      const auto start = std::chrono::steady_clock::now();
      const std::vector<int32_t> ids = tok->encode(text);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_EQ(tok->decode(ids), text) << style;
      EXPECT_LT(s, 10.0) << style << ": " << text.size() << " bytes of '" << text[0] << "' took " << s << " s";
    }
  }
}

TEST(BpeTokenizerTest, ConcurrentEncodesAgree) {
  auto tok = load_style("llama3");
  ASSERT_NE(tok, nullptr);
  const Json golden = Json::parse(read_text(kGoldenDir / "llama3" / "golden.json"));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        for (const Json& c : golden["cases"]) {
          if (tok->encode(c["text"].get<std::string>()) != c["ids"].get<std::vector<int32_t>>()) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// ---------------------------------------------------------------------------------------------
// tokenizer_config.json and paths
// ---------------------------------------------------------------------------------------------

class TokenizerFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("strata_tok_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(getpid()));
    fs::create_directories(dir_);
    fs::copy_file(kGoldenDir / "qwen2" / "tokenizer.json", dir_ / "tokenizer.json");
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }
  fs::path dir_;
};

TEST_F(TokenizerFilesTest, ConfigChoosesEosAndPadAndAFolderFindsTokenizerJson) {
  write("tokenizer_config.json",
        R"({"eos_token": {"__type": "AddedToken", "content": "<|im_end|>"}, "pad_token": "<|endoftext|>"})");
  auto tok = load_tokenizer(dir_.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->eos_id(), 1502);
  EXPECT_EQ((*tok)->pad_id(), 1500);
  EXPECT_EQ((*tok)->name(), (dir_ / "tokenizer.json").string());
}

TEST_F(TokenizerFilesTest, ConfigNamingAnUnknownTokenIsAnError) {
  write("tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  auto tok = load_tokenizer((dir_ / "tokenizer.json").string());
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("tokenizer_config.json: eos_token: \"<|nope|>\" is not a token"),
            std::string::npos)
      << tok.status();
}

TEST_F(TokenizerFilesTest, MissingFileIsNotFound) {
  auto tok = load_tokenizer((dir_ / "absent.json").string());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("absent.json: cannot open"), std::string::npos) << tok.status();
}

// ---------------------------------------------------------------------------------------------
// Malformed tokenizer.json: "<source>: <json path>: <what>"
// ---------------------------------------------------------------------------------------------

void expect_error(const Json& j, const std::string& want) {
  auto tok = parse_bpe_tokenizer(j.dump(), "tokenizer.json");
  ASSERT_FALSE(tok.ok()) << "loaded; expected: " << want;
  const std::string msg(tok.status().message());
  EXPECT_NE(msg.find("tokenizer.json: " + want), std::string::npos) << "message: " << msg << "\nexpected: " << want;
}

TEST(MalformedTokenizerTest, EachErrorNamesItsJsonPath) {
  const Json good = small_tokenizer("abc", {"ab"});
  ASSERT_NE(parse_ok(good), nullptr);
  {
    auto tok = parse_bpe_tokenizer("{\"model\": ", "tokenizer.json");
    ASSERT_FALSE(tok.ok());
    EXPECT_NE(tok.status().message().find("tokenizer.json: not valid JSON"), std::string::npos) << tok.status();
  }
  Json j = good;
  j.erase("model");
  expect_error(j, "model: missing");

  j = good;
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error(j, R"(normalizer.type: "Lowercase" is not supported)");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "NFKC"}}}}};
  expect_error(j, R"(normalizer.normalizers[1].type: "NFKC" is not supported)");

  j = good;
  j["model"]["merges"] = {{"a", "b", "c"}};
  expect_error(j, R"(model.merges[0]: expected "a b" or ["a", "b"])");
  j["model"]["merges"] = {"a b", "ab c d"};
  expect_error(j, R"(model.merges[1]: "ab c d" is not two tokens separated by one space)");
  j["model"]["merges"] = {"a z"};
  expect_error(j, R"(model.merges[0]: "z" is not in model.vocab)");
  j["model"]["merges"] = {"a b", "b c"};
  expect_error(j, R"(model.merges[1]: the merged token "bc" is not in model.vocab)");
  j["model"]["merges"] = 3;
  expect_error(j, "model.merges: expected an array, got number");

  j = good;
  j["model"]["type"] = "WordPiece";
  expect_error(j, R"(model.type: "WordPiece" is not supported)");
  j = good;
  j["model"]["byte_fallback"] = true;
  expect_error(j, "model.byte_fallback: true is not supported");
  j = good;
  j["model"]["dropout"] = 0.1;
  expect_error(j, "model.dropout: 0.1 is not supported");
  j = good;
  j["model"]["vocab"]["c"] = "two";
  expect_error(j, R"(model.vocab["c"]: expected an id in [0, 2^31), got "two")");
  j = good;
  j["model"]["vocab"]["c"] = 0;
  expect_error(j, R"(model.vocab["c"]: id 0 is also the id of "a")");
  j = good;
  j["model"].erase("vocab");
  expect_error(j, "model.vocab: missing");

  j = good;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(j, R"(pre_tokenizer.type: "Whitespace" is not supported)");
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                                            {"behavior", "Isolated"}, {"invert", false}}}}};
  expect_error(j, "pre_tokenizer.pretokenizers[0].pattern.Regex: PCRE2 cannot compile it");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "[^\\S]"}};
  expect_error(j, "pre_tokenizer.pretokenizers[0].pattern.Regex: \\S inside a character class is not supported");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "x"}};
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  expect_error(j, R"(pre_tokenizer.pretokenizers[0].behavior: "Sideways" is not supported)");

  j = good;
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, R"(decoder.type: "WordPiece" is not supported)");

  j = good;
  j["added_tokens"] = {{{"id", 7}, {"content", "ab"}, {"special", true}}};
  expect_error(j, R"(added_tokens[0].id: 7 but model.vocab gives "ab" id 3)");
  j["added_tokens"] = {{{"id", 1}, {"content", "<x>"}}};
  expect_error(j, R"(added_tokens[0].id: 1 is the id of "b" in model.vocab)");
  j["added_tokens"] = {{{"id", 9}, {"content", "<x>"}, {"lstrip", "yes"}}};
  expect_error(j, R"(added_tokens[0].lstrip: expected true or false, got "yes")");
}

TEST(OnigToPcre2Test, ShorthandsGetOnigurumaMeaning) {
  auto p = onig_to_pcre2(R"((?i:'s)|\s+(?!\S)|[^\s\p{L}]|\p{N}{1,3}|\h|(?m:.))");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_NE(p->find("(?i:'s)"), std::string::npos);
  EXPECT_NE(p->find("[^\\t\\n\\x0B"), std::string::npos);  // \S outside a class: [^White_Space]
  EXPECT_NE(p->find("[^\\t\\n\\x0B\\f\\r\\x20\\x{85}"), std::string::npos);
  EXPECT_NE(p->find("[0-9a-fA-F]"), std::string::npos);  // Ruby's \h is a hex digit
  EXPECT_NE(p->find("(?s:.)"), std::string::npos);       // Ruby's (?m) is PCRE2's (?s)
  EXPECT_EQ(p->find("\\s"), std::string::npos);
  EXPECT_FALSE(onig_to_pcre2("[a-z&&[^aeiou]]").ok());
  EXPECT_FALSE(onig_to_pcre2("[abc").ok());
}

// ---------------------------------------------------------------------------------------------
// Throughput (reported, never asserted)
// ---------------------------------------------------------------------------------------------

TEST(TokenizerSpeedTest, ReportEncodeThroughput) {
  for (const std::string style : {"gpt2", "llama3", "qwen2"}) {
    auto tok = load_style(style);
    ASSERT_NE(tok, nullptr);
    const Json golden = Json::parse(read_text(kGoldenDir / style / "golden.json"));
    std::string text;
    while (text.size() < (2u << 20)) {
      for (const Json& c : golden["cases"]) text += c["text"].get<std::string>() + "\n";
    }
    const auto start = std::chrono::steady_clock::now();
    const size_t n = tok->encode(text).size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("encode %s: %.2f MB in %.3f s = %.1f MB/s (%zu tokens)\n", style.c_str(), text.size() / 1e6, s,
                text.size() / 1e6 / s, n);
  }
}

}  // namespace
}  // namespace strata
