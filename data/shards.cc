#include "data/shards.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

constexpr size_t kFixedHeaderBytes = 44;  // through the tokenizer name length

template <typename T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));  // little-endian hosts only (x86, arm64)
}

template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

StatusOr<std::vector<uint8_t>> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  std::streamsize n = in.tellg();
  in.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  if (n > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), n)) {
    return absl::DataLossError(absl::StrCat(path, ": read error"));
  }
  return bytes;
}

// Parses and checks one shard's bytes; on success `payload` holds its tokens.
StatusOr<ShardHeader> parse_shard(const std::string& path, const std::vector<uint8_t>& bytes,
                                  std::vector<uint8_t>* payload) {
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kShardMagic, 8) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a Strata token shard (bad magic; expected \"STRATOK1\")"));
  }
  if (bytes.size() < kFixedHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": truncated header (", bytes.size(), " bytes)"));
  }
  ShardHeader h;
  h.version = get<uint32_t>(&bytes[8]);
  h.token_bytes = get<uint32_t>(&bytes[12]);
  uint64_t n_tokens = get<uint64_t>(&bytes[16]);
  uint64_t vocab = get<uint64_t>(&bytes[24]);
  h.checksum = get<uint64_t>(&bytes[32]);
  uint32_t name_len = get<uint32_t>(&bytes[40]);
  if (h.version != kShardVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": shard format version ", h.version, " is not supported (this build reads ", kShardVersion, ")"));
  }
  if (h.token_bytes != 2 && h.token_bytes != 4) {
    return absl::DataLossError(absl::StrCat(path, ": bad token width ", h.token_bytes, " bytes (expected 2 or 4)"));
  }
  if (vocab == 0 || vocab > (uint64_t{1} << 31) || (h.token_bytes == 2 && vocab > 65536)) {
    return absl::DataLossError(absl::StrCat(path, ": bad vocabulary size ", vocab, " for ", h.token_bytes, "-byte tokens"));
  }
  if (bytes.size() < kFixedHeaderBytes + name_len) {
    return absl::DataLossError(absl::StrCat(path, ": truncated header (the tokenizer name runs past the end)"));
  }
  h.tokenizer.assign(reinterpret_cast<const char*>(&bytes[kFixedHeaderBytes]), name_len);
  const size_t header_bytes = kFixedHeaderBytes + name_len;
  const uint64_t have = bytes.size() - header_bytes;
  if (n_tokens > (uint64_t{1} << 40)) return absl::DataLossError(absl::StrCat(path, ": bad token count ", n_tokens));
  const uint64_t want = n_tokens * h.token_bytes;
  if (have < want) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: the header promises ", n_tokens, " tokens (", want,
                                            " bytes) but only ", have, " bytes follow it"));
  }
  if (have > want) {
    return absl::DataLossError(absl::StrCat(path, ": ", have - want, " bytes of trailing data after the ", n_tokens,
                                            " tokens the header promises"));
  }
  if (fnv1a64(bytes.data() + header_bytes, want) != h.checksum) {
    return absl::DataLossError(absl::StrCat(path, ": payload checksum mismatch (the file is corrupt)"));
  }
  h.n_tokens = static_cast<int64_t>(n_tokens);
  h.vocab_size = static_cast<int64_t>(vocab);
  payload->assign(bytes.begin() + header_bytes, bytes.end());
  for (uint64_t i = 0; i < n_tokens; ++i) {
    uint32_t t = h.token_bytes == 2 ? get<uint16_t>(&(*payload)[2 * i]) : get<uint32_t>(&(*payload)[4 * i]);
    if (t >= vocab) {
      return absl::DataLossError(
          absl::StrCat(path, ": token ", t, " at index ", i, " is outside the vocabulary (", vocab, ")"));
    }
  }
  return h;
}

}  // namespace

uint64_t fnv1a64(const uint8_t* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string shard_path(const std::string& dir, int64_t k) {
  return (fs::path(dir) / absl::StrFormat("tokens-%05d%s", k, kShardExtension)).string();
}

Status write_shard(const std::string& path, std::span<const int32_t> tokens, int64_t vocab_size,
                   const std::string& tokenizer_name) {
  if (vocab_size < 1 || vocab_size > (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad vocabulary size ", vocab_size));
  }
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  std::string payload;
  payload.reserve(tokens.size() * width);
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t t = tokens[i];
    if (t < 0 || t >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", t, " at index ", i, " is outside the vocabulary (", vocab_size, ")"));
    }
    if (width == 2) {
      put<uint16_t>(&payload, static_cast<uint16_t>(t));
    } else {
      put<uint32_t>(&payload, static_cast<uint32_t>(t));
    }
  }
  std::string header(kShardMagic, 8);
  put<uint32_t>(&header, kShardVersion);
  put<uint32_t>(&header, width);
  put<uint64_t>(&header, tokens.size());
  put<uint64_t>(&header, static_cast<uint64_t>(vocab_size));
  put<uint64_t>(&header, fnv1a64(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
  put<uint32_t>(&header, static_cast<uint32_t>(tokenizer_name.size()));
  header += tokenizer_name;

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create (", std::strerror(errno), ")"));
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat(tmp, ": write failed (", std::strerror(errno), ")"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot rename ", tmp, " into place (", std::strerror(errno), ")"));
  }
  return OkStatus();
}

StatusOr<ShardDataset> ShardDataset::open(const std::string& path, int64_t expected_vocab) {
  ShardDataset ds;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      if (entry.is_regular_file() && entry.path().extension() == kShardExtension) {
        ds.files_.push_back(entry.path().string());
      }
    }
    if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot list (", ec.message(), ")"));
    std::sort(ds.files_.begin(), ds.files_.end());
    if (ds.files_.empty()) {
      return absl::NotFoundError(absl::StrCat(path, ": no token shards (*", kShardExtension, " files) in the directory"));
    }
  } else if (fs::exists(path, ec)) {
    ds.files_.push_back(path);
  } else {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  for (const std::string& file : ds.files_) {
    ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, read_file(file));
    Shard shard;
    ASSIGN_OR_RETURN(ShardHeader h, parse_shard(file, bytes, &shard.payload));
    if (ds.shards_.empty()) {
      ds.vocab_size_ = h.vocab_size;
      ds.tokenizer_ = h.tokenizer;
    } else if (h.vocab_size != ds.vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": vocabulary size ", h.vocab_size, " differs from ",
                                                     ds.vocab_size_, " of ", ds.files_[0]));
    } else if (h.tokenizer != ds.tokenizer_) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": tokenizer \"", h.tokenizer, "\" differs from \"",
                                                     ds.tokenizer_, "\" of ", ds.files_[0]));
    }
    if (expected_vocab >= 0 && h.vocab_size != expected_vocab) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": vocabulary size ", h.vocab_size,
                                                     " does not match the tokenizer's ", expected_vocab,
                                                     " (shards made by tokenizer \"", h.tokenizer, "\")"));
    }
    shard.first = ds.total_;
    shard.token_bytes = h.token_bytes;
    ds.total_ += h.n_tokens;
    ds.shards_.push_back(std::move(shard));
  }
  return ds;
}

int32_t ShardDataset::token(int64_t i) const {
  int32_t t;
  read(i, 1, &t);
  return t;
}

void ShardDataset::read(int64_t first, int64_t count, int32_t* out) const {
  CHECK(first >= 0 && count >= 0 && first + count <= total_)
      << "tokens [" << first << ", " << first + count << ") of a stream of " << total_;
  // The shard holding `first`: the last one whose start is <= first (empty shards are skipped).
  auto it = std::upper_bound(shards_.begin(), shards_.end(), first,
                             [](int64_t v, const Shard& s) { return v < s.first; });
  size_t k = static_cast<size_t>(it - shards_.begin()) - 1;
  int64_t done = 0;
  while (done < count) {
    const Shard& s = shards_[k];
    const int64_t n_in = static_cast<int64_t>(s.payload.size() / s.token_bytes);
    const int64_t off = first + done - s.first;
    const int64_t take = std::min(count - done, n_in - off);
    for (int64_t i = 0; i < take; ++i) {
      out[done + i] = s.token_bytes == 2 ? static_cast<int32_t>(get<uint16_t>(&s.payload[2 * (off + i)]))
                                         : static_cast<int32_t>(get<uint32_t>(&s.payload[4 * (off + i)]));
    }
    done += std::max<int64_t>(take, 0);
    ++k;
  }
}

}  // namespace strata
