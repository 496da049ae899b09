// Token shards: pre-tokenised text for pretraining, as binary files of one format, and
// ShardDataset, which reads every shard of a directory as one flat token stream. The format
// (little-endian):
//   0   char[8]  magic "STRATOK1"
//   8   u32      version (1)
//   12  u32      bytes per token: 2 (u16, vocab <= 65536) or 4 (u32)
//   16  u64      token count N
//   24  u64      vocabulary size (every token is below it)
//   32  u64      checksum of the payload (FNV-1a 64 over its bytes)
//   40  u32      tokenizer name length L, then L bytes of name ("char" or a tokenizer.json path)
//   44+L         N tokens
// Reading validates everything (magic, version, width, size, checksum, token range, one vocab
// and tokenizer across shards) and names the file in each error. Tokenising files into shards
// is `strata data tokenize` (trainer/data_cmd.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace strata {

constexpr char kShardMagic[9] = "STRATOK1";
constexpr uint32_t kShardVersion = 1;
constexpr const char* kShardExtension = ".bin";

// Writes one shard (through a temporary file renamed into place). Tokens must lie in [0, vocab).
Status write_shard(const std::string& path, std::span<const int32_t> tokens, int64_t vocab_size,
                   const std::string& tokenizer_name);

// The name write_shard's callers give shard k of a directory: "DIR/tokens-00042.bin".
std::string shard_path(const std::string& dir, int64_t k);

struct ShardHeader {
  uint32_t version = 0;
  uint32_t token_bytes = 0;
  int64_t n_tokens = 0;
  int64_t vocab_size = 0;
  uint64_t checksum = 0;
  std::string tokenizer;
};

class ShardDataset {
 public:
  // `path` is one shard file or a directory whose *.bin files (sorted by name) are the shards.
  // expected_vocab >= 0 makes a different vocabulary size an error (the tokenizer's).
  static StatusOr<ShardDataset> open(const std::string& path, int64_t expected_vocab = -1);

  int64_t size() const { return total_; }  // tokens in all shards
  int64_t vocab_size() const { return vocab_size_; }
  const std::string& tokenizer() const { return tokenizer_; }
  const std::vector<std::string>& files() const { return files_; }

  int32_t token(int64_t i) const;
  // out[0:count) = tokens [first, first + count) of the stream, across shard boundaries.
  void read(int64_t first, int64_t count, int32_t* out) const;

 private:
  struct Shard {
    int64_t first;                  // stream index of its first token
    uint32_t token_bytes;
    std::vector<uint8_t> payload;   // (n_tokens * token_bytes)
  };
  std::vector<std::string> files_;
  std::vector<Shard> shards_;
  int64_t total_ = 0;
  int64_t vocab_size_ = 0;
  std::string tokenizer_;
};

// FNV-1a 64 of a byte range (the shard checksum).
uint64_t fnv1a64(const uint8_t* data, size_t n);

}  // namespace strata
