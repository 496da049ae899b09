// Checkpoints (DESIGN.md "Checkpoints"): a step directory written atomically and verified on load.
//
//   ROOT/latest                      "step_000120\n", replaced atomically (latest.tmp + rename)
//   ROOT/step_000120/manifest.json   format version, step, layout, every tensor's global name, shape,
//                                    dtype and slices {file, offset+shape or flat range, crc32c},
//                                    and last the crc32c of the manifest text before it
//   ROOT/step_000120/rank-00000.safetensors   one per rank: that rank's slices
//   ROOT/step_000120/trainer_state.json, config.yaml   (written by rank 0, checksummed in the manifest)
//
// A save writes step_000120.tmp/ and renames it only when every file is written and fsynced, so a
// crash leaves the previous checkpoint and `latest` untouched. A load verifies every byte against
// its crc32c and assembles any block or flat range from whichever slices hold it, so a checkpoint
// loads on another layout. Exporting to Hugging Face format lives elsewhere, not here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>  // CheckpointMeta's opaque layout and trainer state

#include "core/crc32c.h"       // crc32c, crc32c_extend: the checksums the manifest records
#include "core/safetensors.h"  // SafetensorsFile: the rank files
#include "core/status.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace strata {

// One tensor's piece held by this rank: global name, global shape, and where this rank's slice sits.
struct CheckpointTensor {
  std::string name;                   // "layers.3.attn.wq", "optim.m.layers.3.attn.wq", ...
  const Tensor* tensor = nullptr;     // this rank's data: f32, bf16, f8e4m3 or f8e5m2, contiguous
  std::vector<int64_t> global_shape;  // empty: the tensor's own shape (an unsharded tensor)
  std::vector<int64_t> offset;        // global offset of this block along each dim; empty: all 0
  // ZeRO-1 shards are flat element ranges crossing tensor boundaries: when flat_range is set,
  // `tensor` holds elements [flat_begin, flat_begin + numel) of the flattened global tensor (any
  // shape) instead of an offset block.
  bool flat_range = false;
  int64_t flat_begin = 0;
  // Held identically by several ranks; a multi-rank save lists it on the one rank that writes it.
  bool replicated = false;
  // Expert parallelism: held only by the ranks at this rank's position in the expert group (an
  // expert shard), identically across its edp group; the trainer picks the writer among those.
  bool expert_shard = false;
};

struct CheckpointMeta {
  int64_t step = 0;
  std::string config_yaml;       // resolved config, written as config.yaml
  nlohmann::json layout;         // {"world": 1, "dp": 1, "pp": 1, "ep": 1}; null: that default
  nlohmann::json trainer_state;  // data position, RNG, schedule, router biases...: opaque here
};

// Test hook: called with the name of each stage of a save just before it runs ("rank_file",
// "trainer_state", "manifest", "rename", "latest", "prune"); returning true stops the save there as
// a crash would, leaving whatever was written behind, and save_checkpoint returns kAborted.
using CheckpointCrashHook = std::function<bool(std::string_view stage)>;

// Saves `tensors` (a single process: rank 0 of a world of 1) into ROOT/step_XXXXXX.tmp/, renames it to
// ROOT/step_XXXXXX/ (atomically replacing an existing one of the same step), updates ROOT/latest,
// then deletes stale step_*.tmp directories and, when keep_last > 0, the oldest step directories
// with a lower step until keep_last remain counting this one (higher steps, from a run that was
// resumed from an earlier checkpoint, are left alone). Several entries may hold slices of one
// tensor; together they must tile it exactly, all as blocks or all as flat ranges. Files and
// directories are fsynced. A failure to prune only logs a warning: the checkpoint is safe by then.
//
// With `comm` of several ranks, every rank calls it with its own slices (a replicated tensor listed
// by one rank only) and meta.layout.world = comm->size(): each writes rank-XXXXX.safetensors, rank
// 0 merges the slice records into one manifest, checks that together they tile every tensor and
// publishes the step; all ranks return the same success or failure. The crash hook applies to
// single-process saves only.
Status save_checkpoint(const std::string& root, const CheckpointMeta& meta,
                       const std::vector<CheckpointTensor>& tensors, int64_t keep_last,
                       const CheckpointCrashHook& crash_hook = nullptr, Communicator* comm = nullptr);

// ROOT (reads ROOT/latest), ROOT/step_XXXXXX, or any directory holding a manifest.json -> the
// checkpoint directory. Errors name what is missing; an unfinished step_*.tmp is refused.
StatusOr<std::string> resolve_checkpoint(const std::string& path);

// The step directories under ROOT (full paths), oldest first; unfinished *.tmp ones are skipped.
std::vector<std::string> list_checkpoints(const std::string& root);

// An opened, verified checkpoint directory. Copies share the open rank files; reads are const.
class Checkpoint {
 public:
  static constexpr int kFormatVersion = 1;

  // Parses manifest.json, checks every listed file exists with its recorded size and every slice
  // sits where the manifest says; with `verify`, also reads every byte once and checks the crc32c
  // of the manifest itself, of each rank file's header and slices, and of trainer_state.json and
  // config.yaml, so one flipped bit anywhere is refused. Errors name the file and the tensor:
  // "<dir>/rank-00000.safetensors: layers.0.wq: checksum mismatch (...)".
  static StatusOr<Checkpoint> open(const std::string& dir, bool verify = true);

  const std::string& dir() const { return dir_; }
  const CheckpointMeta& meta() const { return meta_; }
  std::vector<std::string> tensor_names() const;  // in the order they were saved
  bool has_tensor(const std::string& name) const { return index_.count(name) > 0; }
  // Global shape; empty for an unknown name (and for a scalar: check has_tensor).
  std::vector<int64_t> global_shape(const std::string& name) const;
  std::string dtype(const std::string& name) const;  // "F32", "BF16", ...; "" for an unknown name

  // The global block [offset, offset + shape) of tensor `name` as f32, row-major into out
  // (prod(shape) floats), assembled from whichever slices hold it.
  Status read_block(const std::string& name, const std::vector<int64_t>& offset,
                    const std::vector<int64_t>& shape, float* out) const;
  // Elements [begin, begin + count) of the flattened global tensor as f32 into out.
  Status read_flat(const std::string& name, int64_t begin, int64_t count, float* out) const;

 private:
  struct Slice {
    size_t file = 0;  // index into files_
    std::string key;  // the tensor's name inside the rank file
    bool flat = false;
    int64_t flat_begin = 0;       // flat: global element range [flat_begin, flat_begin + numel)
    std::vector<int64_t> offset;  // block: global offset and shape
    std::vector<int64_t> shape;
    int64_t numel = 0;
    uint64_t byte_begin = 0;  // absolute byte range in the file
    uint64_t byte_end = 0;
    uint32_t crc32c = 0;
  };
  struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<Slice> slices;
  };
  struct Copy;  // one contiguous run from a slice to the output

  Checkpoint() = default;
  Status open_rank_file(size_t file, uint64_t expected_bytes, uint32_t header_crc32c, bool verify);
  StatusOr<const TensorInfo*> lookup(const std::string& name) const;
  Status read_copies(const TensorInfo& t, const Slice& s, const std::vector<Copy>& copies, float* out) const;

  std::string dir_;
  CheckpointMeta meta_;
  std::vector<TensorInfo> tensors_;      // manifest order
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::vector<std::string> file_names_;  // "rank-00000.safetensors", ...
  std::vector<SafetensorsFile> files_;
};

}  // namespace strata
