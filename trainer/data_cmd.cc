#include "trainer/data_cmd.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <vector>

#include "data/jsonl.h"
#include "data/shards.h"
#include "data/tasks.h"
#include "data/tokenizer.h"
#include "trainer/cli.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kProgressFrom = 100000;  // examples; smaller runs print only the summary

int fail(const char* cmd, int code, const std::string& message) {
  std::fprintf(stderr, "strata data %s: %s\n", cmd, message.c_str());
  return code;
}

std::string message_of(const Status& s) { return std::string(s.message()); }

}  // namespace

int run_data_gen(const DataGenArgs& args) {
  auto kind = parse_task_kind(args.task);
  if (!kind.ok()) return fail("gen", kExitUsage, message_of(kind.status()));
  auto split = parse_split(args.split);
  if (!split.ok()) return fail("gen", kExitUsage, "--split: " + message_of(split.status()));
  if (args.n < 1) return fail("gen", kExitUsage, "--n: " + std::to_string(args.n) + " is below 1");
  if (args.seed < 0) return fail("gen", kExitUsage, "--seed: " + std::to_string(args.seed) + " is negative");
  if (args.out.empty()) return fail("gen", kExitUsage, "--out FILE.jsonl is required");

  const std::string tmp = args.out + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return fail("gen", kExitFailure, args.out + ": cannot create (" + std::strerror(errno) + ")");
  const int64_t every = std::max<int64_t>(args.n / 10, 1);
  for (int64_t i = 0; i < args.n; ++i) {
    out << to_jsonl_line(make_task_example(*kind, static_cast<uint64_t>(args.seed), i, *split)) << '\n';
    if (args.n >= kProgressFrom && (i + 1) % every == 0) {
      std::fprintf(stderr, "strata data gen: %ld/%ld examples\n", static_cast<long>(i + 1), static_cast<long>(args.n));
    }
  }
  out.close();
  if (!out) return fail("gen", kExitFailure, tmp + ": write failed (" + std::strerror(errno) + ")");
  if (std::rename(tmp.c_str(), args.out.c_str()) != 0) {
    return fail("gen", kExitFailure, args.out + ": cannot rename " + tmp + " into place (" + std::strerror(errno) + ")");
  }
  std::printf("wrote %ld %s examples (%s split, seed %ld) to %s\n", static_cast<long>(args.n), task_name(*kind),
              split_name(*split), static_cast<long>(args.seed), args.out.c_str());
  return kExitOk;
}

int run_data_tokenize(const DataTokenizeArgs& args) {
  if (args.input.empty()) return fail("tokenize", kExitUsage, "--input FILE (.txt or .jsonl) is required");
  if (args.out.empty()) return fail("tokenize", kExitUsage, "--out DIR is required");
  if (args.shard_tokens < 1) {
    return fail("tokenize", kExitUsage, "--shard-tokens: " + std::to_string(args.shard_tokens) + " is below 1");
  }
  const std::string ext = fs::path(args.input).extension().string();
  if (ext != ".txt" && ext != ".jsonl") {
    return fail("tokenize", kExitUsage, args.input + ": unknown input type \"" + ext + "\" (expected .txt or .jsonl)");
  }
  std::error_code ec;
  if (!fs::is_regular_file(args.input, ec)) return fail("tokenize", kExitUsage, args.input + ": no such file");
  if (fs::is_directory(args.out, ec)) {
    for (const auto& entry : fs::directory_iterator(args.out, ec)) {
      if (entry.path().extension() == kShardExtension) {
        return fail("tokenize", kExitUsage,
                    args.out + ": already holds token shards; choose another --out or remove them");
      }
    }
  } else if (fs::exists(args.out, ec)) {
    return fail("tokenize", kExitUsage, args.out + ": exists and is not a directory");
  }
  auto tokenizer = load_tokenizer(args.tokenizer);
  if (!tokenizer.ok()) return fail("tokenize", kExitUsage, "--tokenizer: " + message_of(tokenizer.status()));
  const Tokenizer& tok = **tokenizer;

  // Read (and check) all of the input before anything is written.
  std::string text;
  std::vector<Example> examples;
  if (ext == ".txt") {
    std::ifstream in(args.input, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) return fail("tokenize", kExitFailure, args.input + ": read error");
    if (text.empty()) return fail("tokenize", kExitFailure, args.input + ": the file is empty");
  } else {
    auto read = read_jsonl(args.input);
    if (!read.ok()) {
      // One line per bad input line, each prefixed like every other error of this command.
      std::string m = message_of(read.status());
      for (size_t start = 0;;) {
        size_t nl = m.find('\n', start);
        std::fprintf(stderr, "strata data tokenize: %s\n", m.substr(start, nl - start).c_str());
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
      return kExitFailure;
    }
    examples = *std::move(read);
    if (examples.empty()) return fail("tokenize", kExitFailure, args.input + ": no examples (the file is empty or blank)");
  }
  fs::create_directories(args.out, ec);
  if (ec) return fail("tokenize", kExitFailure, args.out + ": cannot create (" + ec.message() + ")");

  // Tokens go out in shards of shard_tokens as they accumulate: pending[head:] is not written yet.
  std::vector<int32_t> pending;
  size_t head = 0;
  int64_t total = 0, n_shards = 0, documents = 0;
  auto write_next = [&](int64_t count) -> Status {
    RETURN_IF_ERROR(write_shard(shard_path(args.out, n_shards),
                                std::span<const int32_t>(pending.data() + head, static_cast<size_t>(count)),
                                tok.vocab_size(), tok.name()));
    ++n_shards;
    total += count;
    head += static_cast<size_t>(count);
    return OkStatus();
  };
  auto add_document = [&](const std::vector<int32_t>& ids) -> Status {
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(head));
    head = 0;
    pending.insert(pending.end(), ids.begin(), ids.end());
    if (tok.eos_id() >= 0) pending.push_back(tok.eos_id());
    ++documents;
    while (static_cast<int64_t>(pending.size() - head) >= args.shard_tokens) RETURN_IF_ERROR(write_next(args.shard_tokens));
    return OkStatus();
  };
  Status s;
  if (ext == ".txt") {
    s = add_document(tok.encode(text));
  } else {
    for (const Example& ex : examples) {
      std::vector<int32_t> ids = tok.encode(ex.prompt);
      std::vector<int32_t> completion = tok.encode(ex.completion);
      ids.insert(ids.end(), completion.begin(), completion.end());
      s = add_document(ids);
      if (!s.ok()) break;
    }
  }
  if (s.ok() && pending.size() > head) s = write_next(static_cast<int64_t>(pending.size() - head));
  if (!s.ok()) return fail("tokenize", kExitFailure, message_of(s));
  std::printf("wrote %ld tokens of %ld document%s in %ld shard%s to %s (tokenizer %s, vocabulary %ld)\n",
              static_cast<long>(total), static_cast<long>(documents), documents == 1 ? "" : "s", static_cast<long>(n_shards),
              n_shards == 1 ? "" : "s", args.out.c_str(), tok.name().c_str(), static_cast<long>(tok.vocab_size()));
  return kExitOk;
}

}  // namespace strata
