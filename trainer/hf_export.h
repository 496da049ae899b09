// `strata export CKPT --out DIR`: a Strata checkpoint of any layout (dp, pp, ep, ZeRO; it holds
// each tensor once, as slices with their global offsets) as a Hugging Face model directory that
// transformers loads with AutoModelForCausalLM / AutoTokenizer:
//
//   config.json                          the architecture's fields (model/hf.h), dtype, token ids
//   generation_config.json               bos / eos / pad token ids
//   model-0000N-of-0000M.safetensors     transformers' tensor names, experts unstacked
//   model.safetensors.index.json         weight_map and total_size
//   tokenizer.json (+ tokenizer_config.json)  the run's tokenizer (the char tokenizer as a
//                                        byte-level BPE without merges over its 128 ASCII ids)
//
// It streams: tensors are read from the checkpoint one at a time (one expert of a stacked
// tensor at a time) and written straight into their shard, so the memory it holds is one tensor
// in fp32 plus its bf16 copy, whatever the model size. Everything is written into DIR.tmp-<pid>,
// renamed to DIR at the end; a failure removes it and says what failed. An existing DIR is kept
// unless --force.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace strata {

struct ExportOptions {
  std::string out;                            // the model directory to create
  bool bf16 = true;                           // else fp32
  bool force = false;                         // replace an existing `out`
  int64_t max_shard_bytes = 5'000'000'000;    // transformers' default max_shard_size ("5GB")
  bool progress = true;                       // a line per shard on stderr
};

struct ExportResult {
  int64_t tensors = 0, shards = 0, bytes = 0;
  int64_t buffer_peak_bytes = 0;  // the most tensor data held at once
  int64_t largest_tensor_bytes = 0;  // fp32 bytes of the largest exported tensor
};

// checkpoint: a run directory, a checkpoint root (its latest step) or a step directory.
StatusOr<ExportResult> export_hf(const std::string& checkpoint, const ExportOptions& options);

// The char tokenizer as a Hugging Face tokenizer.json (a byte-level BPE without merges over ids
// 0..127, one token per ASCII character, PAD 0 and EOS 4 special) and its tokenizer_config.json.
std::string char_tokenizer_json();
std::string char_tokenizer_config_json(int64_t model_max_length);

}  // namespace strata
