#include "data/loader.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/jsonl.h"

namespace strata {

int64_t TokenBatch::n_targets() const {
  return static_cast<int64_t>(std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; }));
}

StatusOr<std::unique_ptr<DataLoader>> DataLoader::create(const DataConfig& config, const Tokenizer& tokenizer,
                                                         uint64_t seed, Split split) {
  if (config.seq_len < 2) return absl::InvalidArgumentError(absl::StrCat("data.seq_len: ", config.seq_len, " is below 2"));
  std::unique_ptr<DataLoader> dl(new DataLoader(config, &tokenizer, seed, split));
  dl->shuffle_ = config.shuffle && split == Split::kTrain;
  const int64_t T = config.seq_len;
  const std::string& path = split == Split::kTrain ? config.path : config.eval_path;
  const char* path_key = split == Split::kTrain ? "data.path" : "data.eval_path";
  if (config.format != DataFormat::kTask && path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path_key, " is not set"));
  }
  dl->source_ = config.format == DataFormat::kTask ? absl::StrCat("task ", task_name(config.task), "/", split_name(split)) : path;
  switch (config.format) {
    case DataFormat::kJsonl: {
      ASSIGN_OR_RETURN(dl->examples_, read_jsonl(path));
      if (dl->examples_.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": no examples (the file is empty or blank)"));
      }
      dl->size_ = static_cast<int64_t>(dl->examples_.size());
      break;
    }
    case DataFormat::kTask:
      if (config.task_size < 1) {
        return absl::InvalidArgumentError(absl::StrCat("data.task_size: ", config.task_size, " is below 1"));
      }
      dl->size_ = config.task_size;
      break;
    case DataFormat::kShards: {
      ASSIGN_OR_RETURN(ShardDataset ds, ShardDataset::open(path, dl->tokenizer_->vocab_size()));
      if (ds.tokenizer() != dl->tokenizer_->name()) {
        LOG(WARN) << path << ": shards were made by tokenizer \"" << ds.tokenizer() << "\", training uses \""
                  << dl->tokenizer_->name() << "\" (same vocabulary size " << ds.vocab_size() << ")";
      }
      if (ds.size() < T + 1) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", ds.size(),
                                                       " tokens are fewer than one sample of data.seq_len + 1 = ", T + 1));
      }
      dl->size_ = (ds.size() - 1) / T;
      dl->shards_ = std::move(ds);
      break;
    }
  }
  if (dl->size_ > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("the dataset has ", dl->size_, " samples; at most 2^31 - 1 are supported"));
  }
  if (!dl->is_sft()) return dl;

  // SFT: every row needs EOS, and a seq_len in which some completion token can be learnt.
  if (dl->tokenizer_->eos_id() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer \"", dl->tokenizer_->name(),
                                                   "\" has no end-of-sequence token; SFT data needs one"));
  }
  if (dl->size_ <= kRowCacheLimit) dl->rows_.resize(static_cast<size_t>(dl->size_));
  DataStats& st = dl->stats_;
  int64_t shortest_prompt = std::numeric_limits<int64_t>::max();
  for (int64_t id = 0; id < std::min(dl->size_, kScanLimit); ++id) {
    Row scratch;
    const Row& r = dl->row(id, &scratch);
    const int64_t len = static_cast<int64_t>(r.ids.size());
    ++st.scanned;
    st.longest = std::max(st.longest, len);
    shortest_prompt = std::min(shortest_prompt, r.prompt_len);
    if (len > T + 1) ++st.truncated;
    if (r.prompt_len > T) ++st.no_loss;
  }
  const std::string& what = dl->source_;
  if (st.no_loss == st.scanned) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": data.seq_len ", T, " is too short: every prompt fills it (",
                                                   "the shortest prompt has ", shortest_prompt, " tokens",
                                                   config.r1_template ? " with the R1 template" : "", ")"));
  }
  if (st.truncated > 0) {
    LOG(WARN) << what << ": " << st.truncated << " of " << st.scanned << " examples are longer than data.seq_len + 1 = "
              << T + 1 << " tokens and lose their tail (longest " << st.longest << " tokens); " << st.no_loss
              << " keep no completion token at all";
  }
  return dl;
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_locked(epoch);
}

const std::vector<int64_t>& DataLoader::order_locked(int64_t epoch) const {
  CHECK(epoch >= 0) << "epoch " << epoch;
  if (order_epoch_ == epoch) return order_;
  order_.resize(static_cast<size_t>(size_));
  for (int64_t i = 0; i < size_; ++i) order_[i] = i;
  if (shuffle_) {
    // Fisher-Yates from the back; swap partner of position i from word i of the epoch's stream.
    RngStream rng(seed_, absl::StrCat("data/epoch/", epoch));
    for (int64_t i = size_ - 1; i > 0; --i) {
      int64_t j = static_cast<int64_t>((static_cast<uint64_t>(rng.u32(static_cast<uint64_t>(i))) *
                                        static_cast<uint64_t>(i + 1)) >> 32);
      std::swap(order_[i], order_[j]);
    }
  }
  order_epoch_ = epoch;
  return order_;
}

std::vector<int64_t> DataLoader::sample_ids(int64_t first_global, int64_t count) const {
  CHECK(first_global >= 0 && count >= 0) << "global samples [" << first_global << ", +" << count << ")";
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(count));
  for (int64_t g = first_global; g < first_global + count; ++g) {
    ids.push_back(order_locked(g / size_)[static_cast<size_t>(g % size_)]);
  }
  return ids;
}

Example DataLoader::example(int64_t id) const {
  CHECK(is_sft() && id >= 0 && id < size_) << "SFT example " << id << " of " << size_;
  if (config_.format == DataFormat::kJsonl) return examples_[static_cast<size_t>(id)];
  if (config_.task == TaskKind::kArithmetic && split_ == Split::kTrain) {
    return make_arithmetic_example(seed_, id, split_, config_.teacher_error_rate);
  }
  return make_task_example(config_.task, seed_, id, split_);
}

DataLoader::Row DataLoader::tokenize_row(int64_t id) const {
  Example ex = example(id);
  Row r;
  r.ids = tokenizer_->encode(config_.r1_template ? apply_r1_template(ex.prompt) : ex.prompt);
  r.prompt_len = static_cast<int64_t>(r.ids.size());
  std::vector<int32_t> completion = tokenizer_->encode(ex.completion);
  r.ids.insert(r.ids.end(), completion.begin(), completion.end());
  r.ids.push_back(tokenizer_->eos_id());
  return r;
}

const DataLoader::Row& DataLoader::row(int64_t id, Row* scratch) const {
  if (rows_.empty()) {
    *scratch = tokenize_row(id);
    return *scratch;
  }
  auto& slot = rows_[static_cast<size_t>(id)];
  if (!slot) slot = tokenize_row(id);
  return *slot;
}

TokenBatch DataLoader::make_batch(const std::vector<int64_t>& ids, int64_t T) const {
  return is_sft() ? make_sft_batch(ids, T) : make_pretrain_batch(ids, T);
}

TokenBatch DataLoader::make_sft_batch(const std::vector<int64_t>& ids, int64_t T) const {
  CHECK(is_sft() && T >= 1 && T <= config_.seq_len) << "T=" << T << " seq_len=" << config_.seq_len;
  TokenBatch b;
  b.B = static_cast<int64_t>(ids.size());
  b.T = T;
  b.tokens.assign(static_cast<size_t>(b.B * T), tokenizer_->pad_id() >= 0 ? tokenizer_->pad_id() : 0);
  b.targets.assign(static_cast<size_t>(b.B * T), -1);
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t r = 0; r < b.B; ++r) {
    CHECK(ids[r] >= 0 && ids[r] < size_) << "sample " << ids[r] << " of " << size_;
    Row scratch;
    const Row& row_r = row(ids[r], &scratch);
    const int64_t len = std::min<int64_t>(static_cast<int64_t>(row_r.ids.size()), T + 1);
    int32_t* tok = &b.tokens[static_cast<size_t>(r * T)];
    int32_t* tgt = &b.targets[static_cast<size_t>(r * T)];
    for (int64_t t = 0; t < std::min(len, T); ++t) tok[t] = row_r.ids[t];
    // Position t predicts token t + 1: live only when that token belongs to the completion.
    for (int64_t t = std::max<int64_t>(row_r.prompt_len, 1); t < len; ++t) tgt[t - 1] = row_r.ids[t];
  }
  return b;
}

TokenBatch DataLoader::make_pretrain_batch(const std::vector<int64_t>& ids, int64_t T) const {
  CHECK(!is_sft() && T >= 1 && T <= config_.seq_len) << "T=" << T << " seq_len=" << config_.seq_len;
  TokenBatch b;
  b.B = static_cast<int64_t>(ids.size());
  b.T = T;
  b.tokens.resize(static_cast<size_t>(b.B * T));
  b.targets.resize(static_cast<size_t>(b.B * T));
  std::vector<int32_t> window(static_cast<size_t>(T + 1));
  for (int64_t r = 0; r < b.B; ++r) {
    CHECK(ids[r] >= 0 && ids[r] < size_) << "sample " << ids[r] << " of " << size_;
    shards_->read(ids[r] * config_.seq_len, T + 1, window.data());
    std::copy(window.begin(), window.end() - 1, b.tokens.begin() + r * T);
    std::copy(window.begin() + 1, window.end(), b.targets.begin() + r * T);
  }
  return b;
}

StatusOr<std::vector<Example>> load_eval_examples(const DataConfig& config, uint64_t seed, int64_t n) {
  std::vector<Example> out;
  if (!config.eval_path.empty()) {
    ASSIGN_OR_RETURN(out, read_jsonl(config.eval_path));
    if (n >= 0 && static_cast<int64_t>(out.size()) > n) out.resize(static_cast<size_t>(n));
  } else if (config.format == DataFormat::kTask) {
    const int64_t count = n >= 0 ? n : config.task_size;
    for (int64_t i = 0; i < count; ++i) out.push_back(make_task_example(config.task, seed, i, Split::kEval));
  }
  return out;
}

}  // namespace strata
