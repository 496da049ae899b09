// The resumable, layout-independent data loader. Samples are numbered once per dataset:
//   SFT (jsonl, task)  sample i = example i (task: make_task_example(kind, seed, i, split), i < task_size)
//   pretrain (shards)  sample i = tokens [i*T, i*T + T + 1) of the shard stream (T = seq_len)
// and the order is global: epoch e is a Fisher-Yates permutation of the sample ids keyed by
// RngStream(seed, "data/epoch/<e>") (identity when shuffle is off, and for eval), and global sample g is
// perm_{g / size}[g % size]. Step s's global batch is global samples [s*G, s*G + G); each
// data-parallel rank takes its slice of those ids, so nothing here depends on rank or layout.
// The loader holds no position: the trainer stores the count of samples consumed in its state,
// and resuming is continuing that count. Caches (tokenised rows, one epoch's permutation) only
// save work; they sit behind a lock, so threads may share one loader.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/config.h"
#include "data/shards.h"
#include "data/tasks.h"
#include "data/tokenizer.h"

namespace strata {

// A batch of token rows (data/ cannot see model::Batch; the trainer converts).
struct TokenBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;   // (B*T) input ids; right padding holds the tokenizer's pad id
  std::vector<int32_t> targets;  // (B*T) id to predict at each position, -1 = no loss
  int64_t n_targets() const;     // positions that carry loss
};

// What the SFT scan at creation found (over the first kScanLimit examples).
struct DataStats {
  int64_t scanned = 0;    // examples tokenised
  int64_t truncated = 0;  // longer than seq_len + 1 tokens (their tail is cut)
  int64_t no_loss = 0;    // prompt fills the whole window: no completion token to learn
  int64_t longest = 0;    // tokens in the longest example (prompt + completion + EOS)
};

class DataLoader {
 public:
  static constexpr int64_t kScanLimit = 100000;      // SFT examples checked at creation
  static constexpr int64_t kRowCacheLimit = 1 << 20;  // SFT datasets up to this size keep their rows

  // Opens the dataset `config` describes; `tokenizer` must outlive the loader. `seed` is the
  // experiment seed (order and tasks). Split kTrain reads data.path (or the task's train split);
  // kEval reads data.eval_path in the same format (or the task's eval split, task_size examples),
  // never shuffled, and is an error when there is no eval_path for jsonl or shards.
  // Errors: unreadable or bad files (file:line), empty datasets, shards of another vocabulary,
  // fewer shard tokens than one sample, a seq_len in which no example's completion fits, a
  // tokenizer without EOS for SFT. Truncated examples are logged as a warning (stats()).
  static StatusOr<std::unique_ptr<DataLoader>> create(const DataConfig& config, const Tokenizer& tokenizer,
                                                      uint64_t seed, Split split = Split::kTrain);

  int64_t size() const { return size_; }  // samples per epoch
  bool is_sft() const { return config_.format != DataFormat::kShards; }
  const DataStats& stats() const { return stats_; }
  Split split() const { return split_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

  // Ids of global samples [first_global, first_global + count), in order.
  std::vector<int64_t> sample_ids(int64_t first_global, int64_t count) const;
  // The permutation of epoch e (identity when shuffle is off or for the eval split).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  // make_sft_batch or make_pretrain_batch, by format. T <= seq_len.
  TokenBatch make_batch(const std::vector<int64_t>& ids, int64_t T) const;
  // Row b = tokenize(prompt, R1-templated when r1_template) + tokenize(completion) + EOS,
  // truncated to T + 1 tokens: tokens = row[0:T], targets = row[1:T+1], with targets -1 where
  // they would predict a prompt token and on the right padding (tokens there = pad id).
  TokenBatch make_sft_batch(const std::vector<int64_t>& ids, int64_t T) const;
  // Row b = sample ids[b] of the stream: tokens = s[0:T], targets = s[1:T+1]; all live.
  TokenBatch make_pretrain_batch(const std::vector<int64_t>& ids, int64_t T) const;

  // SFT sample `id` as text (the prompt without the template).
  Example example(int64_t id) const;

 private:
  struct Row {
    std::vector<int32_t> ids;  // prompt + completion + EOS
    int64_t prompt_len = 0;
  };
  DataLoader(const DataConfig& config, const Tokenizer* tokenizer, uint64_t seed, Split split)
      : config_(config), tokenizer_(tokenizer), seed_(seed), split_(split) {}
  Row tokenize_row(int64_t id) const;
  const Row& row(int64_t id, Row* scratch) const;  // cached when the dataset is small enough
  const std::vector<int64_t>& order_locked(int64_t epoch) const;

  DataConfig config_;
  const Tokenizer* tokenizer_;
  uint64_t seed_;
  Split split_;
  bool shuffle_ = false;
  std::string source_;                      // the file, directory or "task <name>/<split>" read
  int64_t size_ = 0;
  DataStats stats_;
  std::vector<Example> examples_;           // jsonl
  std::optional<ShardDataset> shards_;      // shards

  mutable std::mutex mu_;
  mutable std::vector<std::optional<Row>> rows_;  // (size_) when size_ <= kRowCacheLimit
  mutable int64_t order_epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

// Held-out examples for evaluation: the first n (n < 0: all) of data.eval_path when set, else of
// the task's eval split (format task), else none.
StatusOr<std::vector<Example>> load_eval_examples(const DataConfig& config, uint64_t seed, int64_t n);

}  // namespace strata
