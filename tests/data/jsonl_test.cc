// JSONL prompt/completion files: good lines load (answers kept as compact JSON), blank lines are
// skipped, and each kind of bad line is an error naming file:line.
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include <gtest/gtest.h>

#include "data/jsonl.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class JsonlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("strata_jsonl_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  fs::path dir_;
};

TEST_F(JsonlTest, ReadsGoodLinesAndSkipsBlankOnes) {
  std::string path = write("good.jsonl",
                           "{\"prompt\": \"Compute 1+2\", \"completion\": \"<answer>3</answer>\", \"answer\": {\"result\": 3}}\n"
                           "\n"
                           "   \n"
                           "{\"completion\": \"b\", \"prompt\": \"a\", \"id\": 7}\r\n"
                           "{\"prompt\": \"\\u00e9t\\u00e9\", \"completion\": \"x\\ny\", \"answer\": \"42\"}\n"
                           "{\"prompt\": \"p\", \"completion\": \"c\", \"answer\": [1, 2.5, null]}");  // no final newline
  auto ex = read_jsonl(path);
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 4u);
  EXPECT_EQ((*ex)[0].prompt, "Compute 1+2");
  EXPECT_EQ((*ex)[0].completion, "<answer>3</answer>");
  EXPECT_EQ((*ex)[0].answer, "{\"result\":3}");
  EXPECT_EQ((*ex)[1].prompt, "a");
  EXPECT_EQ((*ex)[1].completion, "b");
  EXPECT_EQ((*ex)[1].answer, "");
  EXPECT_EQ((*ex)[2].prompt, "\xc3\xa9t\xc3\xa9");
  EXPECT_EQ((*ex)[2].completion, "x\ny");
  EXPECT_EQ((*ex)[2].answer, "\"42\"");
  EXPECT_EQ((*ex)[3].answer, "[1,2.5,null]");
}

TEST_F(JsonlTest, EachBadLineKindHasItsMessage) {
  struct Case {
    std::string line, message;
  };
  const Case cases[] = {
      {"{\"prompt\": \"a\", \"completion\": ", "not valid JSON at byte 31"},
      {"not json", "not valid JSON at byte 2"},
      {"[\"prompt\", \"completion\"]", "expected a JSON object, got array"},
      {"\"just a string\"", "expected a JSON object, got string"},
      {"{\"completion\": \"c\"}", "missing \"prompt\""},
      {"{\"prompt\": \"p\"}", "missing \"completion\""},
      {"{\"prompt\": 3, \"completion\": \"c\"}", "\"prompt\" must be a string, got number"},
      {"{\"prompt\": \"p\", \"completion\": null}", "\"completion\" must be a string, got null"},
      {"{\"prompt\": \"p\", \"completion\": [\"c\"]}", "\"completion\" must be a string, got array"},
  };
  for (const Case& c : cases) {
    std::string path = write("bad.jsonl", "{\"prompt\": \"ok\", \"completion\": \"ok\"}\n\n" + c.line + "\n");
    auto ex = read_jsonl(path);
    ASSERT_FALSE(ex.ok()) << c.line;
    EXPECT_EQ(ex.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ex.status().message(), path + ":3: " + c.message) << c.line;
  }
}

TEST_F(JsonlTest, ReportsTheFirstFewBadLinesOnePerLine) {
  std::string text;
  for (int i = 1; i <= 8; ++i) text += i % 2 ? "{\"prompt\": \"p\", \"completion\": \"c\"}\n" : "{}\n";
  text += "x\n[]\n{\"prompt\": 1}\n";
  std::string path = write("many.jsonl", text);
  auto ex = read_jsonl(path);
  ASSERT_FALSE(ex.ok());
  EXPECT_EQ(ex.status().message(), path + ":2: missing \"prompt\"\n" + path + ":4: missing \"prompt\"\n" + path +
                                       ":6: missing \"prompt\"\n" + path + ":8: missing \"prompt\"\n" + path +
                                       ":9: not valid JSON at byte 1\n" + path + ": 2 more bad lines");
}

TEST_F(JsonlTest, MissingFileIsNotFound) {
  auto ex = read_jsonl((dir_ / "nope.jsonl").string());
  ASSERT_FALSE(ex.ok());
  EXPECT_EQ(ex.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ex.status().message(), (dir_ / "nope.jsonl").string() + ": cannot open (No such file or directory)");
}

TEST_F(JsonlTest, EmptyFileHasNoExamples) {
  auto ex = read_jsonl(write("empty.jsonl", "\n\n"));
  ASSERT_TRUE(ex.ok());
  EXPECT_TRUE(ex->empty());
}

TEST_F(JsonlTest, WriteThenReadRoundTrips) {
  std::vector<Example> in = {{"Compute 347+589", "<think>x</think> <answer>936</answer>", "{\"result\":936}"},
                             {"quote \" and \\ and\nnewline", "tab\t", ""},
                             {"p", "c", "{\"numbers\":[25,4,3],\"target\":87}"},
                             {"p", "c", "not json"}};
  std::string path = (dir_ / "out.jsonl").string();
  ASSERT_TRUE(write_jsonl(path, in).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  auto out = read_jsonl(path);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*out)[i].prompt, in[i].prompt);
    EXPECT_EQ((*out)[i].completion, in[i].completion);
    EXPECT_EQ((*out)[i].answer, in[i].answer);
  }
  EXPECT_EQ((*out)[3].answer, "\"not json\"");  // an answer that is not JSON is kept as a string
  EXPECT_EQ(to_jsonl_line(in[0]),
            "{\"prompt\":\"Compute 347+589\",\"completion\":\"<think>x</think> <answer>936</answer>\",\"answer\":{"
            "\"result\":936}}");
}

}  // namespace
}  // namespace strata
