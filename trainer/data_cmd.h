// `strata data gen` and `strata data tokenize`: make datasets on disk. gen writes a synthetic
// task's examples as JSONL (data/tasks.h, data/jsonl.h); tokenize turns text or JSONL into token
// shards (data/shards.h) for pretraining. The CLI (trainer/cli.cc) fills the argument structs.
// Both return an exit code of trainer/cli.h: 0 done, 1 the work failed (a bad input line, a
// write error), 2 bad usage (a bad argument, an input that does not exist, an unknown
// extension); each error is one line on stderr, naming file:line where there is one.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

// strata data gen countdown|arithmetic --n N --seed S --split train|eval --out FILE.jsonl
struct DataGenArgs {
  std::string task;             // countdown | arithmetic
  int64_t n = 1000;             // examples: indices 0..n-1 of the split
  int64_t seed = 1234;
  std::string split = "train";  // train | eval
  std::string out;              // FILE.jsonl
};

int run_data_gen(const DataGenArgs& args);

// strata data tokenize --tokenizer char|PATH --input FILE --out DIR [--shard-tokens N]
//   .txt    the whole file is one document: its tokens, then EOS
//   .jsonl  one document per line: tokens of prompt + completion, then EOS
// Writes DIR/tokens-00000.bin, ... of at most shard_tokens tokens each; DIR must hold no shards.
struct DataTokenizeArgs {
  std::string tokenizer = "char";
  std::string input;
  std::string out;
  int64_t shard_tokens = 100'000'000;
};

int run_data_tokenize(const DataTokenizeArgs& args);

}  // namespace strata
