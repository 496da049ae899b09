// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header {name: {"dtype", "shape", "data_offsets": [begin, end)},
// optional "__metadata__": {string: string}}, then the data buffer, which the tensors tile exactly.
//
// SafetensorsFile validates the whole header on open() as the reference library does (known dtype,
// shape/byte-range agreement, no overlaps, no gaps, no trailing bytes) and also rejects duplicate
// JSON keys, which the reference silently merges; then it reads tensors on demand with pread: one
// tensor, or one element range of it, at a time.
// SafetensorsWriter streams tensors to disk one at a time after writing a header computed from the
// declared shapes. Every error names the file and the tensor: "<path>: <name or header>: <what>".
// Checkpoint layout (manifest, per-rank files, slices) lives above this, not here.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace strata {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // as in the file: "F32", "BF16", "F8_E4M3", "I64", ...
  std::vector<int64_t> shape;  // [] for a scalar
  uint64_t begin = 0;          // byte range [begin, end) relative to the start of the data buffer
  uint64_t end = 0;
};

// Size in bytes of one element of a safetensors dtype string; 0 if unknown or sub-byte (F4, F6_*).
size_t safetensors_dtype_size(const std::string& dtype);

// A validated, open file. Copies share the open descriptor; reads are const and thread-safe.
class SafetensorsFile {
 public:
  static StatusOr<SafetensorsFile> open(const std::string& path);

  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // by data offset
  const SafetensorsEntry* find(const std::string& name) const;              // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

  // The whole tensor as f32 (shape as in the file) from F32, F64, BF16, F16, F8_E4M3 or F8_E5M2,
  // with the exact codecs of core/dtype.h; an error for integer and other dtypes.
  StatusOr<Tensor> read_f32(const std::string& name) const;
  // The tensor in its own dtype: F32->kF32, BF16->kBF16, F8_E4M3->kF8E4M3, F8_E5M2->kF8E5M2,
  // I32->kI32, I64->kI64, U8/BOOL->kU8; an error for dtypes Strata has no DType for (F16, ...).
  StatusOr<Tensor> read(const std::string& name) const;
  // Elements [offset, offset + count) of the flattened tensor as f32 into out (count floats), for
  // sharded loading: a rank reads only its slice. Same dtypes as read_f32.
  Status read_f32_range(const std::string& name, int64_t offset, int64_t count, float* out) const;

 private:
  struct Fd;
  SafetensorsFile() = default;
  StatusOr<const SafetensorsEntry*> lookup(const std::string& name) const;
  // Reads bytes [begin, begin + n) of the data buffer.
  Status read_bytes(const SafetensorsEntry& e, uint64_t begin, uint64_t n, void* dst) const;

  std::string path_;
  std::shared_ptr<const Fd> fd_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// Streams tensors to disk one at a time (peak memory = one tensor). Declare every tensor (name,
// dtype string, shape) first, then open() writes the header, then write() each tensor in
// declaration order, then close(). Data is laid out in declaration order; the header is padded with
// spaces to a multiple of 8 bytes so every tensor starts 8-byte aligned, like the reference writer.
// Destroying a writer that was not closed leaves a partial file behind.
class SafetensorsWriter {
 public:
  SafetensorsWriter() = default;
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Declaration errors (unknown dtype, negative extent, duplicate name) are reported by open().
  void declare(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape);
  void set_metadata(const std::string& key, const std::string& value);
  Status open(const std::string& path);  // validates the declarations and writes the header
  // The next declared tensor's bytes; `bytes` must equal numel * dtype size.
  Status write(const std::string& name, const void* data, size_t bytes);
  Status close();  // checks every declared tensor was written, fsyncs and closes

 private:
  Status fail(Status s);  // remembers the first I/O error
  Status write_all(const void* data, size_t bytes, const std::string& what);

  std::vector<SafetensorsEntry> declared_;
  std::map<std::string, std::string> metadata_;
  std::string path_;
  int fd_ = -1;
  bool opened_ = false;
  size_t next_ = 0;  // index into declared_ of the next tensor to write
  Status error_;     // first I/O error; later calls return it
};

// Writes f32 CPU (or device, copied to the CPU) tensors in sorted name order, with metadata.
Status save_safetensors_f32(const std::string& path,
                            const std::vector<std::pair<std::string, Tensor>>& tensors,
                            const std::map<std::string, std::string>& metadata = {});

}  // namespace strata
