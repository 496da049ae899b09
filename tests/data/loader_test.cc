// The loader: each epoch's order is a permutation keyed by (seed, epoch); the global batch never
// depends on how it is sliced over ranks; resuming is continuing the sample counter; SFT rows
// carry loss only on the completion and its EOS; pretraining rows are windows of the stream.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "data/jsonl.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/tasks.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// The character tokenizer's contract (ids = ASCII, EOS 4, PAD 0), local so these tests do not
// depend on data/tokenizer.cc.
class TestCharTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c < 128 ? c : '?');
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s += static_cast<char>(id);
    return s;
  }
  int64_t vocab_size() const override { return 128; }
  int32_t eos_id() const override { return 4; }
  int32_t pad_id() const override { return 0; }
  std::optional<int32_t> token_id(std::string_view) const override { return std::nullopt; }
  std::string name() const override { return "char"; }
};

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("strata_loader_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  DataConfig task_config(int64_t task_size = 100) {
    DataConfig c;
    c.format = DataFormat::kTask;
    c.task = TaskKind::kArithmetic;
    c.task_size = task_size;
    c.seq_len = 128;
    return c;
  }
  DataConfig jsonl_config(const std::vector<Example>& examples, int64_t seq_len) {
    DataConfig c;
    c.format = DataFormat::kJsonl;
    c.path = (dir_ / "train.jsonl").string();
    c.seq_len = seq_len;
    EXPECT_TRUE(write_jsonl(c.path, examples).ok());
    return c;
  }
  std::unique_ptr<DataLoader> make(const DataConfig& c, uint64_t seed = 1, Split split = Split::kTrain) {
    auto dl = DataLoader::create(c, tok_, seed, split);
    EXPECT_TRUE(dl.ok()) << dl.status();
    return dl.ok() ? *std::move(dl) : nullptr;
  }
  std::string error_of(const DataConfig& c, Split split = Split::kTrain) {
    auto dl = DataLoader::create(c, tok_, 1, split);
    return dl.ok() ? "ok" : std::string(dl.status().message());
  }

  TestCharTokenizer tok_;
  fs::path dir_;
};

std::vector<int32_t> ids_of(const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); }

TEST_F(LoaderTest, EachEpochIsAPermutationKeyedBySeedAndEpoch) {
  auto dl = make(task_config(1000));
  std::vector<int64_t> e0 = dl->epoch_order(0), e1 = dl->epoch_order(1);
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  for (auto* e : {&e0, &e1}) {
    std::vector<int64_t> sorted = *e;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, iota);
    EXPECT_NE(*e, iota);
  }
  EXPECT_NE(e0, e1);
  EXPECT_EQ(make(task_config(1000))->epoch_order(1), e1);           // another loader, same seed
  EXPECT_NE(make(task_config(1000), 2)->epoch_order(1), e1);        // another seed
  DataConfig c = task_config(1000);
  c.shuffle = false;
  EXPECT_EQ(make(c)->epoch_order(3), iota);
  EXPECT_EQ(make(task_config(1000), 1, Split::kEval)->epoch_order(0), iota);  // eval is never shuffled
}

TEST_F(LoaderTest, GlobalSampleNumbersWalkTheEpochs) {
  auto dl = make(task_config(10));
  std::vector<int64_t> ids = dl->sample_ids(0, 35);
  std::vector<int64_t> want;
  for (int e = 0; e < 4; ++e) {
    std::vector<int64_t> order = dl->epoch_order(e);
    want.insert(want.end(), order.begin(), order.end());
  }
  want.resize(35);
  EXPECT_EQ(ids, want);
}

TEST_F(LoaderTest, ResumeContinuesTheCounter) {
  auto dl = make(task_config(37));
  std::vector<int64_t> all = dl->sample_ids(0, 200);
  for (int64_t first : {0, 5, 36, 37, 38, 111}) {
    auto fresh = make(task_config(37));  // a restarted process
    std::vector<int64_t> tail = fresh->sample_ids(first, 200 - first);
    EXPECT_EQ(tail, std::vector<int64_t>(all.begin() + first, all.end())) << first;
  }
}

// Step s's global batch is samples [s*G, s*G + G); however many ranks split it, the rows are the
// same rows, so the batch (and the loss over it) does not depend on the layout.
TEST_F(LoaderTest, GlobalBatchDoesNotDependOnHowItIsSliced) {
  constexpr int64_t G = 12, T = 96;
  auto dl = make(task_config(50));
  for (int64_t step : {0, 3, 4, 9}) {
    std::vector<int64_t> ids = dl->sample_ids(step * G, G);
    TokenBatch whole = dl->make_sft_batch(ids, T);
    for (int64_t dp : {1, 2, 3, 4, 6}) {
      std::vector<int32_t> tokens, targets;
      for (int64_t r = 0; r < dp; ++r) {
        std::vector<int64_t> mine(ids.begin() + r * G / dp, ids.begin() + (r + 1) * G / dp);
        auto fresh = make(task_config(50));  // each rank has its own loader
        EXPECT_EQ(fresh->sample_ids(step * G + r * G / dp, G / dp), mine);
        TokenBatch part = fresh->make_sft_batch(mine, T);
        tokens.insert(tokens.end(), part.tokens.begin(), part.tokens.end());
        targets.insert(targets.end(), part.targets.begin(), part.targets.end());
      }
      EXPECT_EQ(tokens, whole.tokens) << "dp=" << dp;
      EXPECT_EQ(targets, whole.targets) << "dp=" << dp;
    }
  }
}

TEST_F(LoaderTest, SftRowsLearnOnlyTheCompletionAndItsEos) {
  auto dl = make(jsonl_config({{"ab", "cd", ""}, {"wxyz", "0123456789", ""}}, 8));
  TokenBatch b = dl->make_sft_batch({0, 1}, 8);
  ASSERT_EQ(b.B, 2);
  ASSERT_EQ(b.T, 8);
  // Row 0: a b c d EOS, padded. Position t predicts token t + 1.
  EXPECT_EQ(std::vector<int32_t>(b.tokens.begin(), b.tokens.begin() + 8),
            (std::vector<int32_t>{'a', 'b', 'c', 'd', 4, 0, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(b.targets.begin(), b.targets.begin() + 8),
            (std::vector<int32_t>{-1, 'c', 'd', 4, -1, -1, -1, -1}));
  // Row 1: 15 tokens truncated to T + 1 = 9: w x y z 0 1 2 3 | 4.
  EXPECT_EQ(std::vector<int32_t>(b.tokens.begin() + 8, b.tokens.end()), ids_of("wxyz0123"));
  EXPECT_EQ(std::vector<int32_t>(b.targets.begin() + 8, b.targets.end()),
            (std::vector<int32_t>{-1, -1, -1, '0', '1', '2', '3', '4'}));
  EXPECT_EQ(b.n_targets(), 3 + 5);
  EXPECT_EQ(dl->stats().scanned, 2);
  EXPECT_EQ(dl->stats().truncated, 1);
  EXPECT_EQ(dl->stats().longest, 15);
  // A shorter T than seq_len takes a prefix of the same rows.
  TokenBatch s = dl->make_batch({0}, 3);
  EXPECT_EQ(s.tokens, (std::vector<int32_t>{'a', 'b', 'c'}));
  EXPECT_EQ(s.targets, (std::vector<int32_t>{-1, 'c', 'd'}));
}

TEST_F(LoaderTest, EosEndsEveryTaskCompletion) {
  auto dl = make(task_config(20));
  TokenBatch b = dl->make_sft_batch(dl->sample_ids(0, 20), 128);
  for (int64_t r = 0; r < b.B; ++r) {
    Example ex = dl->example(dl->sample_ids(0, 20)[r]);
    const int32_t* tgt = &b.targets[r * 128];
    std::vector<int32_t> live;
    for (int t = 0; t < 128; ++t) {
      if (tgt[t] >= 0) live.push_back(tgt[t]);
    }
    std::vector<int32_t> want = ids_of(ex.completion);
    want.push_back(4);
    EXPECT_EQ(live, want) << ex.completion;
    // The first live target sits at the last prompt position.
    EXPECT_EQ(tgt[ex.prompt.size() - 1], ex.completion[0]);
    EXPECT_EQ(tgt[ex.prompt.size() - 2], -1);
  }
}

TEST_F(LoaderTest, TaskSamplesAreTheTaskExamples) {
  auto dl = make(task_config(30), 9);
  auto ev = make(task_config(30), 9, Split::kEval);
  EXPECT_EQ(dl->size(), 30);
  for (int64_t i : {0, 7, 29}) {
    EXPECT_EQ(dl->example(i).completion, make_task_example(TaskKind::kArithmetic, 9, i, Split::kTrain).completion);
    EXPECT_EQ(ev->example(i).completion, make_task_example(TaskKind::kArithmetic, 9, i, Split::kEval).completion);
  }
}

TEST_F(LoaderTest, R1TemplateWrapsThePrompt) {
  DataConfig c = jsonl_config({{"Compute 1+2", "3", ""}}, 512);
  c.r1_template = true;
  auto dl = make(c);
  TokenBatch b = dl->make_sft_batch({0}, 512);
  const std::string templated = apply_r1_template("Compute 1+2");
  const int64_t p = static_cast<int64_t>(templated.size());
  EXPECT_EQ(std::vector<int32_t>(b.tokens.begin(), b.tokens.begin() + p + 2), ids_of(templated + "3\x04"));
  for (int64_t t = 0; t < p - 1; ++t) ASSERT_EQ(b.targets[t], -1) << t;
  EXPECT_EQ(b.targets[p - 1], '3');
  EXPECT_EQ(b.targets[p], 4);
  EXPECT_EQ(b.n_targets(), 2);
  EXPECT_EQ(templated.substr(templated.size() - 29), "User: Compute 1+2. Assistant:");
}

TEST_F(LoaderTest, PretrainSamplesAreWindowsOfTheStream) {
  std::vector<int32_t> stream(100);
  for (int i = 0; i < 100; ++i) stream[i] = i;
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 0), std::span(stream).subspan(0, 45), 128, "char").ok());
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 1), std::span(stream).subspan(45), 128, "char").ok());
  DataConfig c;
  c.format = DataFormat::kShards;
  c.path = dir_.string();
  c.seq_len = 8;
  auto dl = make(c);
  EXPECT_FALSE(dl->is_sft());
  EXPECT_EQ(dl->size(), 12);  // (100 - 1) / 8
  TokenBatch b = dl->make_batch({5, 0, 11}, 8);
  for (int r = 0; r < 3; ++r) {
    const int start = std::vector<int>{5, 0, 11}[r] * 8;
    for (int t = 0; t < 8; ++t) {
      EXPECT_EQ(b.tokens[r * 8 + t], start + t);
      EXPECT_EQ(b.targets[r * 8 + t], start + t + 1);
    }
  }
  EXPECT_EQ(b.n_targets(), 24);
  std::vector<int64_t> order = dl->epoch_order(0);
  std::sort(order.begin(), order.end());
  EXPECT_EQ(order.back(), 11);
}

TEST_F(LoaderTest, BadDatasetsAreClearErrors) {
  DataConfig empty = jsonl_config({}, 64);
  EXPECT_EQ(error_of(empty), empty.path + ": no examples (the file is empty or blank)");

  DataConfig missing;
  missing.format = DataFormat::kJsonl;
  EXPECT_EQ(error_of(missing), "data.path is not set");
  EXPECT_EQ(error_of(jsonl_config({{"a", "b", ""}}, 64), Split::kEval), "data.eval_path is not set");

  DataConfig long_prompts = jsonl_config({{"0123456789", "x", ""}, {"012345678901", "x", ""}}, 8);
  EXPECT_EQ(error_of(long_prompts), long_prompts.path +
                                        ": data.seq_len 8 is too short: every prompt fills it (the shortest prompt "
                                        "has 10 tokens)");
  DataConfig task = task_config(10);
  task.seq_len = 8;
  task.r1_template = true;
  EXPECT_EQ(error_of(task), "task arithmetic/train: data.seq_len 8 is too short: every prompt fills it (the shortest "
                            "prompt has 433 tokens with the R1 template)");

  {
    std::ofstream(dir_ / "bad.jsonl") << "{\"prompt\": \"a\"}\n";
    DataConfig bad;
    bad.format = DataFormat::kJsonl;
    bad.path = (dir_ / "bad.jsonl").string();
    EXPECT_EQ(error_of(bad), bad.path + ":1: missing \"completion\"");
  }

  fs::create_directories(dir_ / "shards");
  ASSERT_TRUE(write_shard(shard_path((dir_ / "shards").string(), 0), std::vector<int32_t>{1, 2, 3}, 256, "bpe").ok());
  DataConfig sh;
  sh.format = DataFormat::kShards;
  sh.path = (dir_ / "shards").string();
  sh.seq_len = 2;
  EXPECT_EQ(error_of(sh), shard_path(sh.path, 0) +
                              ": vocabulary size 256 does not match the tokenizer's 128 (shards made by tokenizer \"bpe\")");
  ASSERT_TRUE(write_shard(shard_path((dir_ / "shards").string(), 0), std::vector<int32_t>{1, 2, 3}, 128, "char").ok());
  sh.seq_len = 3;
  EXPECT_EQ(error_of(sh), sh.path + ": 3 tokens are fewer than one sample of data.seq_len + 1 = 4");
  sh.seq_len = 2;
  EXPECT_EQ(error_of(sh), "ok");
}

TEST_F(LoaderTest, EvalExamplesComeFromTheEvalSplitOrFile) {
  DataConfig c = task_config(10);
  auto ev = load_eval_examples(c, 4, 3);
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 3u);
  EXPECT_EQ((*ev)[2].prompt, make_task_example(TaskKind::kArithmetic, 4, 2, Split::kEval).prompt);
  c.eval_path = (dir_ / "eval.jsonl").string();
  ASSERT_TRUE(write_jsonl(c.eval_path, {{"p", "c", "1"}, {"q", "d", "2"}}).ok());
  ev = load_eval_examples(c, 4, -1);
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 2u);
  EXPECT_EQ((*ev)[1].answer, "2");
}

}  // namespace
}  // namespace strata
