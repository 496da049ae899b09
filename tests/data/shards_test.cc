// Token shards: write/read round trips in both widths, a directory reads as one stream across
// shard boundaries, and every kind of damage is refused with a message naming the file.
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "data/shards.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

class ShardsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("strata_shards_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string bytes_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  void put_bytes(const std::string& path, const std::string& b) { std::ofstream(path, std::ios::binary) << b; }
  std::string error_of(const std::string& path, int64_t vocab = -1) {
    auto ds = ShardDataset::open(path, vocab);
    return ds.ok() ? "ok" : std::string(ds.status().message());
  }
  fs::path dir_;
};

std::vector<int32_t> ramp(int n, int vocab) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = (i * 7 + 3) % vocab;
  return v;
}

TEST_F(ShardsTest, RoundTripsBothWidths) {
  for (int64_t vocab : {128, 65536, 151936}) {
    std::vector<int32_t> tokens = ramp(1000, static_cast<int>(vocab));
    tokens.back() = static_cast<int32_t>(vocab - 1);
    std::string path = (dir_ / ("v" + std::to_string(vocab) + ".bin")).string();
    ASSERT_TRUE(write_shard(path, tokens, vocab, "char").ok());
    EXPECT_EQ(fs::file_size(path), 44 + 4 + tokens.size() * (vocab <= 65536 ? 2 : 4));
    EXPECT_EQ(bytes_of(path).substr(0, 8), "STRATOK1");
    auto ds = ShardDataset::open(path, vocab);
    ASSERT_TRUE(ds.ok()) << ds.status();
    EXPECT_EQ(ds->size(), 1000);
    EXPECT_EQ(ds->vocab_size(), vocab);
    EXPECT_EQ(ds->tokenizer(), "char");
    std::vector<int32_t> back(1000);
    ds->read(0, 1000, back.data());
    EXPECT_EQ(back, tokens);
  }
}

TEST_F(ShardsTest, DirectoryIsOneStreamAcrossShards) {
  std::vector<int32_t> all = ramp(250, 100);
  // Shards of 100, 0, 100 and 50 tokens, written out of order; a stray file is ignored.
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 3), std::span(all).subspan(200, 50), 100, "tok.json").ok());
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 0), std::span(all).subspan(0, 100), 100, "tok.json").ok());
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 1), std::span(all).subspan(100, 0), 100, "tok.json").ok());
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 2), std::span(all).subspan(100, 100), 100, "tok.json").ok());
  put_bytes((dir_ / "README.txt").string(), "not a shard");
  EXPECT_EQ(shard_path(dir_.string(), 2), (dir_ / "tokens-00002.bin").string());
  auto ds = ShardDataset::open(dir_.string());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->files().size(), 4u);
  ASSERT_EQ(ds->size(), 250);
  for (int first : {0, 1, 95, 99, 100, 150, 199, 200, 240}) {
    for (int count : {0, 1, 5, 10}) {
      if (first + count > 250) continue;
      std::vector<int32_t> got(count);
      ds->read(first, count, got.data());
      EXPECT_EQ(got, std::vector<int32_t>(all.begin() + first, all.begin() + first + count)) << first << "+" << count;
    }
  }
  std::vector<int32_t> whole(250);
  ds->read(0, 250, whole.data());
  EXPECT_EQ(whole, all);
  EXPECT_EQ(ds->token(249), all[249]);
}

TEST_F(ShardsTest, WriteRefusesTokensOutsideTheVocabulary) {
  std::vector<int32_t> tokens = {1, 2, 128};
  Status s = write_shard((dir_ / "x.bin").string(), tokens, 128, "char");
  EXPECT_EQ(s.message(), (dir_ / "x.bin").string() + ": token 128 at index 2 is outside the vocabulary (128)");
  EXPECT_FALSE(fs::exists(dir_ / "x.bin"));
}

TEST_F(ShardsTest, DamageIsRefusedWithTheFileNamed) {
  const std::string good = (dir_ / "good.bin").string();
  ASSERT_TRUE(write_shard(good, ramp(100, 128), 128, "char").ok());
  const std::string bytes = bytes_of(good);
  const std::string bad = (dir_ / "bad.bin").string();

  std::string b = bytes;
  b[0] = 'X';
  put_bytes(bad, b);
  EXPECT_EQ(error_of(bad), bad + ": not a Strata token shard (bad magic; expected \"STRATOK1\")");

  put_bytes(bad, "STRA");
  EXPECT_EQ(error_of(bad), bad + ": not a Strata token shard (bad magic; expected \"STRATOK1\")");

  put_bytes(bad, bytes.substr(0, 30));
  EXPECT_EQ(error_of(bad), bad + ": truncated header (30 bytes)");

  put_bytes(bad, bytes.substr(0, bytes.size() - 3));
  EXPECT_EQ(error_of(bad), bad + ": truncated: the header promises 100 tokens (200 bytes) but only 197 bytes follow it");

  put_bytes(bad, bytes + "xy");
  EXPECT_EQ(error_of(bad), bad + ": 2 bytes of trailing data after the 100 tokens the header promises");

  b = bytes;
  b[60] ^= 1;
  put_bytes(bad, b);
  EXPECT_EQ(error_of(bad), bad + ": payload checksum mismatch (the file is corrupt)");

  b = bytes;
  b[8] = 2;
  put_bytes(bad, b);
  EXPECT_EQ(error_of(bad), bad + ": shard format version 2 is not supported (this build reads 1)");

  b = bytes;
  b[12] = 3;
  put_bytes(bad, b);
  EXPECT_EQ(error_of(bad), bad + ": bad token width 3 bytes (expected 2 or 4)");

  EXPECT_EQ(error_of(good, 256), good + ": vocabulary size 128 does not match the tokenizer's 256 (shards made by "
                                        "tokenizer \"char\")");
  EXPECT_EQ(error_of((dir_ / "missing.bin").string()), (dir_ / "missing.bin").string() + ": no such file or directory");
}

TEST_F(ShardsTest, ShardsOfOneDirectoryMustAgree) {
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 0), ramp(10, 128), 128, "char").ok());
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 1), ramp(10, 128), 256, "char").ok());
  EXPECT_EQ(error_of(dir_.string()), shard_path(dir_.string(), 1) + ": vocabulary size 256 differs from 128 of " +
                                         shard_path(dir_.string(), 0));
  ASSERT_TRUE(write_shard(shard_path(dir_.string(), 1), ramp(10, 128), 128, "other").ok());
  EXPECT_EQ(error_of(dir_.string()), shard_path(dir_.string(), 1) + ": tokenizer \"other\" differs from \"char\" of " +
                                         shard_path(dir_.string(), 0));
}

TEST_F(ShardsTest, EmptyDirectoryHasNoShards) {
  EXPECT_EQ(error_of(dir_.string()), dir_.string() + ": no token shards (*.bin files) in the directory");
}

}  // namespace
}  // namespace strata
