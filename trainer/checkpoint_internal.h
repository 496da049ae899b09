// Internals shared by checkpoint_save.cc and checkpoint_load.cc, not part of the API (that is
// trainer/checkpoint.h): the format's file names and constants, the slice geometry and tiling check
// both a save and a load apply, the dtypes a checkpoint holds, and small name/number helpers.
// Helpers only one side uses live in that side's .cc file.
#pragma once

#include <unistd.h>  // pread

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/crc32c.h"
#include "core/dtype.h"
#include "core/status.h"

namespace strata::checkpoint_internal {

namespace fs = std::filesystem;
using OJson = nlohmann::ordered_json;  // the manifest keeps tensors in the order they were saved

inline constexpr const char* kFormatName = "strata-checkpoint";
inline constexpr const char* kManifest = "manifest.json";
inline constexpr const char* kTrainerState = "trainer_state.json";
inline constexpr const char* kConfig = "config.yaml";
inline constexpr const char* kLatest = "latest";
inline constexpr uint64_t kReadChunkBytes = 8 << 20;  // verification reads and crc's this much at a time

// The manifest's last field is its own checksum: the crc32c of every byte before the
// kManifestCrcTail that introduces it (written by manifest_text, checked by Checkpoint::open).
inline constexpr const char* kManifestCrcTail = ",\n \"manifest_crc32c\": \"";

// ---- names, numbers and slice geometry ---------------------------------------------------------

inline std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

inline bool parse_hex32(const std::string& s, uint32_t* out) {
  if (s.size() != 8) return false;
  uint32_t v = 0;
  for (char c : s) {
    // Lowercase only, as written: a flipped case bit must not go unnoticed.
    const bool digit = c >= '0' && c <= '9', letter = c >= 'a' && c <= 'f';
    if (!digit && !letter) return false;
    v = (v << 4) | static_cast<uint32_t>(digit ? c - '0' : c - 'a' + 10);
  }
  *out = v;
  return true;
}

inline std::string shape_str(const std::vector<int64_t>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}

inline std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%06lld", static_cast<long long>(step));
  return buf;
}

// "step_000120" -> 120; false for anything else ("step_000120.tmp", "step_", "step_12a").
inline bool parse_step_dir_name(const std::string& name, int64_t* step) {
  constexpr std::string_view kPrefix = "step_";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  if (name.size() - kPrefix.size() > 18) return false;  // fits in int64
  int64_t v = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

inline bool is_stale_tmp_name(const std::string& name) {
  return name.size() > 9 && name.compare(0, 5, "step_") == 0 && name.compare(name.size() - 4, 4, ".tmp") == 0;
}

inline std::string join_path(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A slice's place in its global tensor: a block (offset, shape) or a flat range [begin, begin+count).
struct SliceGeometry {
  bool flat = false;
  int64_t flat_begin = 0;
  std::vector<int64_t> offset;
  std::vector<int64_t> shape;  // block shape; for a flat range, {count}
  int64_t numel() const { return numel_of(shape); }
  std::string describe() const {
    if (flat) return absl::StrCat("flat range [", flat_begin, ", ", flat_begin + numel(), ")");
    return absl::StrCat("block at offset ", shape_str(offset), " of shape ", shape_str(shape));
  }
};

// Checks one slice lies inside the global tensor; the message has no prefix.
inline Status check_slice_bounds(const std::vector<int64_t>& global, const SliceGeometry& g) {
  const int64_t total = numel_of(global);
  if (g.flat) {
    if (g.flat_begin < 0 || g.numel() < 0 || g.flat_begin > total || g.numel() > total - g.flat_begin) {
      return absl::InvalidArgumentError(
          absl::StrCat(g.describe(), " is out of range for ", total, " elements ", shape_str(global)));
    }
    return OkStatus();
  }
  if (g.offset.size() != global.size() || g.shape.size() != global.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(g.describe(), " does not have the rank of the global shape ", shape_str(global)));
  }
  for (size_t d = 0; d < global.size(); ++d) {
    if (g.offset[d] < 0 || g.shape[d] < 0 || g.offset[d] + g.shape[d] > global[d]) {
      return absl::InvalidArgumentError(
          absl::StrCat(g.describe(), " is out of range for the global shape ", shape_str(global)));
    }
  }
  return OkStatus();
}

// Checks the slices of one tensor tile it exactly: each in bounds, all of one kind, no two
// overlapping, and together as many elements as the tensor has. The message has no prefix.
inline Status check_tiling(const std::vector<int64_t>& global, const std::vector<SliceGeometry>& slices) {
  int64_t covered = 0;
  for (const SliceGeometry& g : slices) {
    RETURN_IF_ERROR(check_slice_bounds(global, g));
    if (g.flat != slices[0].flat) {
      return absl::InvalidArgumentError(
          "slices mix blocks and flat ranges (one tensor's slices must all be one kind)");
    }
    covered += g.numel();
  }
  for (size_t i = 0; i < slices.size(); ++i) {
    for (size_t j = i + 1; j < slices.size(); ++j) {
      const SliceGeometry& a = slices[i];
      const SliceGeometry& b = slices[j];
      if (a.numel() == 0 || b.numel() == 0) continue;
      bool overlap = true;
      if (a.flat) {
        overlap = a.flat_begin < b.flat_begin + b.numel() && b.flat_begin < a.flat_begin + a.numel();
      } else {
        for (size_t d = 0; d < global.size(); ++d) {
          if (a.offset[d] >= b.offset[d] + b.shape[d] || b.offset[d] >= a.offset[d] + a.shape[d]) {
            overlap = false;
          }
        }
      }
      if (overlap) {
        return absl::InvalidArgumentError(absl::StrCat(a.describe(), " overlaps ", b.describe()));
      }
    }
  }
  if (covered != numel_of(global)) {
    return absl::InvalidArgumentError(absl::StrCat("the slices hold ", covered, " of the ", numel_of(global),
                                                   " elements of ", shape_str(global),
                                                   " (every element must be saved exactly once)"));
  }
  return OkStatus();
}

// Safetensors dtype strings of the tensor dtypes a checkpoint holds (all readable back as f32).
inline const char* checkpoint_dtype(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E5M2:
      return "F8_E5M2";
    default:
      return nullptr;
  }
}

inline bool is_checkpoint_dtype(const std::string& s) {
  return s == "F32" || s == "BF16" || s == "F8_E4M3" || s == "F8_E5M2";
}

// Streams bytes [begin, end) of an open file through crc32c.
inline Status crc_range(int fd, const std::string& path, const std::string& tensor, uint64_t begin,
                        uint64_t end, std::vector<char>* buf, uint32_t* crc) {
  uint32_t c = 0;
  for (uint64_t pos = begin; pos < end;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(end - pos, buf->size()));
    const ssize_t got = ::pread(fd, buf->data(), want, static_cast<off_t>(pos));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": ", tensor, ": read failed"));
    if (got == 0) {
      return absl::DataLossError(absl::StrCat(path, ": ", tensor, ": truncated (the file ended at byte ", pos,
                                              " while reading bytes [", begin, ", ", end, "))"));
    }
    c = crc32c_extend(c, buf->data(), static_cast<size_t>(got));
    pos += static_cast<uint64_t>(got);
  }
  *crc = c;
  return OkStatus();
}

}  // namespace strata::checkpoint_internal
