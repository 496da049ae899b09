#include "trainer/checkpoint.h"

#include <fcntl.h>     // open, O_DIRECTORY
#include <stdio.h>     // renameat2, RENAME_EXCHANGE
#include <sys/stat.h>  // stat
#include <unistd.h>    // write, pread, fsync, close

#ifdef __SSE4_2__
#include <nmmintrin.h>  // _mm_crc32_u64 / _u8
#endif

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/log.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using OJson = nlohmann::ordered_json;  // the manifest keeps tensors in the order they were saved

constexpr const char* kFormatName = "strata-checkpoint";
constexpr const char* kManifest = "manifest.json";
constexpr const char* kTrainerState = "trainer_state.json";
constexpr const char* kConfig = "config.yaml";
constexpr const char* kLatest = "latest";
constexpr uint64_t kReadChunkBytes = 8 << 20;  // verification reads and crc's this much at a time
constexpr int64_t kGatherChunk = 1 << 20;      // read_block reads nearby runs together up to this

// ---- CRC-32C ------------------------------------------------------------------------------------

// kCrcTables[k][b]: the CRC register after byte b followed by k zero bytes (reflected polynomial
// 0x82F63B78), for slicing-by-8.
constexpr std::array<std::array<uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? 0x82F63B78u : 0u);
    t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
  }
  return t;
}
constexpr auto kCrcTables = make_crc_tables();

}  // namespace

uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t n) {
  const auto& t = kCrcTables;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t l = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);  // little-endian: byte 0 is the low byte, processed first
    w ^= l;
    l = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
        t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
  }
  for (; n > 0; ++p, --n) l = t[0][(l ^ *p) & 0xffu] ^ (l >> 8);
  return ~l;
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
#ifdef __SSE4_2__  // implied by the -mavx2 floor of the build
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t l = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    l = _mm_crc32_u64(l, w);
  }
  uint32_t l32 = static_cast<uint32_t>(l);
  for (; n > 0; ++p, --n) l32 = _mm_crc32_u8(l32, *p);
  return ~l32;
#else
  return crc32c_extend_portable(crc, data, n);
#endif
}

namespace {

// ---- small file-system helpers ----------------------------------------------------------------

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

bool parse_hex32(const std::string& s, uint32_t* out) {
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

std::string shape_str(const std::vector<int64_t>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%06lld", static_cast<long long>(step));
  return buf;
}

// "step_000120" -> 120; false for anything else ("step_000120.tmp", "step_", "step_12a").
bool parse_step_dir_name(const std::string& name, int64_t* step) {
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

bool is_stale_tmp_name(const std::string& name) {
  return name.size() > 9 && name.compare(0, 5, "step_") == 0 && name.compare(name.size() - 4, 4, ".tmp") == 0;
}

std::string rank_file_name(int rank) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "rank-%05d.safetensors", rank);
  return buf;
}

std::string join_path(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

Status write_all_fd(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return absl::ErrnoToStatus(w < 0 ? errno : EIO, absl::StrCat(path, ": write failed"));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}

// Writes `data` to `path` (replacing it), fsyncs and closes.
Status write_file_synced(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open for writing"));
  Status s = write_all_fd(fd, data.data(), data.size(), path);
  if (s.ok() && ::fsync(fd) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": fsync"));
  if (::close(fd) != 0 && s.ok()) s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": close"));
  return s;
}

// Makes a directory's entries (files created, renamed or removed in it) durable.
Status fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot open directory to fsync"));
  Status s;
  if (::fsync(fd) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat(dir, ": fsync of the directory"));
  ::close(fd);
  return s;
}

// The whole file; NotFound names it when it is missing.
StatusOr<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": missing"));
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat(path, ": read failed"));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> row_major_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
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
Status check_slice_bounds(const std::vector<int64_t>& global, const SliceGeometry& g) {
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
Status check_tiling(const std::vector<int64_t>& global, const std::vector<SliceGeometry>& slices) {
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
const char* checkpoint_dtype(DType t) {
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

bool is_checkpoint_dtype(const std::string& s) {
  return s == "F32" || s == "BF16" || s == "F8_E4M3" || s == "F8_E5M2";
}

// Streams bytes [begin, end) of an open file through crc32c.
Status crc_range(int fd, const std::string& path, const std::string& tensor, uint64_t begin, uint64_t end,
                 std::vector<char>* buf, uint32_t* crc) {
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

// ---- save ---------------------------------------------------------------------------------------

// One entry of the save, checked and placed: which tensor, where in it, under which key in the file.
struct PlannedSlice {
  const CheckpointTensor* src = nullptr;
  std::string key;  // name inside the rank file: the tensor name, or "name#k" for its k-th slice
  SliceGeometry geom;
  uint32_t crc = 0;
  uint64_t byte_begin = 0, byte_end = 0;
};

struct PlannedTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  bool replicated = false;
  std::vector<size_t> slices;  // into the planned slices
};

struct SavePlan {
  std::vector<PlannedTensor> tensors;
  std::vector<PlannedSlice> slices;
};

StatusOr<SavePlan> plan_save(const std::vector<CheckpointTensor>& tensors) {
  SavePlan plan;
  std::map<std::string, size_t> by_name;
  for (const CheckpointTensor& ct : tensors) {
    const std::string what =
        absl::StrCat("save_checkpoint: ", ct.name.empty() ? "(unnamed tensor)" : ct.name);
    if (ct.name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": empty name"));
    if (ct.tensor == nullptr || !ct.tensor->defined()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": no tensor data"));
    }
    const char* dtype = checkpoint_dtype(ct.tensor->dtype());
    if (dtype == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": dtype ", dtype_name(ct.tensor->dtype()),
                                                     " cannot be checkpointed (f32, bf16, f8e4m3, f8e5m2)"));
    }
    std::vector<int64_t> local;
    for (int d = 0; d < ct.tensor->shape().rank(); ++d) local.push_back(ct.tensor->shape()[d]);

    PlannedSlice ps;
    ps.src = &ct;
    ps.geom.flat = ct.flat_range;
    std::vector<int64_t> global = ct.global_shape.empty() ? local : ct.global_shape;
    if (ct.flat_range) {
      if (!ct.offset.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": a flat range takes flat_begin, not an offset"));
      }
      ps.geom.flat_begin = ct.flat_begin;
      ps.geom.shape = {ct.tensor->numel()};
    } else {
      if (local.size() != global.size()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": block of shape ", shape_str(local),
                                                       " does not have the rank of the global shape ",
                                                       shape_str(global)));
      }
      ps.geom.offset = ct.offset.empty() ? std::vector<int64_t>(global.size(), 0) : ct.offset;
      ps.geom.shape = local;
    }
    if (std::any_of(global.begin(), global.end(), [](int64_t d) { return d < 0; })) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": global shape ", shape_str(global), " is negative"));
    }
    if (Status s = check_slice_bounds(global, ps.geom); !s.ok()) return annotate(s, what);

    auto [it, inserted] = by_name.emplace(ct.name, plan.tensors.size());
    if (inserted) {
      PlannedTensor pt;
      pt.name = ct.name;
      pt.dtype = dtype;
      pt.shape = global;
      plan.tensors.push_back(std::move(pt));
    }
    PlannedTensor& pt = plan.tensors[it->second];
    if (pt.dtype != dtype || pt.shape != global) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": this slice is ", dtype, " of global shape ",
                                                     shape_str(global), ", an earlier one ", pt.dtype, " of ",
                                                     shape_str(pt.shape)));
    }
    pt.replicated = pt.replicated || ct.replicated;
    pt.slices.push_back(plan.slices.size());
    plan.slices.push_back(std::move(ps));
  }
  for (PlannedTensor& pt : plan.tensors) {
    std::vector<SliceGeometry> geoms;
    for (size_t i : pt.slices) geoms.push_back(plan.slices[i].geom);
    if (Status s = check_tiling(pt.shape, geoms); !s.ok()) {
      return annotate(s, absl::StrCat("save_checkpoint: ", pt.name));
    }
    for (size_t k = 0; k < pt.slices.size(); ++k) {
      plan.slices[pt.slices[k]].key = pt.slices.size() == 1 ? pt.name : absl::StrCat(pt.name, "#", k);
    }
  }
  return plan;
}

// Writes one rank's slices (in the order given) and records each slice's crc32c and byte range,
// and the crc32c of the file's header (everything before the data) in *header_crc.
Status write_rank_file(const std::string& path, int64_t step, int rank, SavePlan* plan,
                       uint32_t* header_crc) {
  SafetensorsWriter w;
  w.set_metadata("format", kFormatName);
  w.set_metadata("step", std::to_string(step));
  w.set_metadata("rank", std::to_string(rank));
  uint64_t data_bytes = 0;
  for (PlannedSlice& s : plan->slices) {
    std::vector<int64_t> file_shape = s.geom.flat ? std::vector<int64_t>{s.geom.numel()} : s.geom.shape;
    w.declare(s.key, checkpoint_dtype(s.src->tensor->dtype()), file_shape);
    s.byte_begin = data_bytes;  // relative to the data buffer until the file size is known
    data_bytes += s.src->tensor->nbytes();
    s.byte_end = data_bytes;
  }
  RETURN_IF_ERROR(w.open(path));
  for (PlannedSlice& s : plan->slices) {
    // One tensor at a time on the host: a device checkpoint never needs a second copy in memory.
    const Tensor& t = *s.src->tensor;
    const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
    s.crc = crc32c(host.raw(), host.nbytes());
    RETURN_IF_ERROR(w.write(s.key, host.raw(), host.nbytes()));
  }
  RETURN_IF_ERROR(w.close());
  // The tensors tile the data buffer, which ends the file: its start is the file size minus them.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": stat"));
  const uint64_t data_start = static_cast<uint64_t>(st.st_size) - data_bytes;
  for (PlannedSlice& s : plan->slices) {
    s.byte_begin += data_start;
    s.byte_end += data_start;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot reopen"));
  std::vector<char> buf(std::min<uint64_t>(kReadChunkBytes, data_start));
  Status s = crc_range(fd, path, "header", 0, data_start, &buf, header_crc);
  ::close(fd);
  return s;
}

OJson file_record(const std::string& name, const std::string& contents) {
  return OJson{{"file", name},
               {"bytes", contents.size()},
               {"crc32c", hex32(crc32c(contents.data(), contents.size()))}};
}

OJson make_manifest(const CheckpointMeta& meta, const OJson& layout, const SavePlan& plan,
                    const std::string& rank_file, uint64_t rank_file_bytes, uint32_t header_crc,
                    const OJson& config_rec, const OJson& state_rec) {
  OJson m;
  m["format"] = kFormatName;
  m["format_version"] = Checkpoint::kFormatVersion;
  m["step"] = meta.step;
  m["layout"] = layout;
  m["config"] = config_rec;
  m["trainer_state"] = state_rec;
  m["files"] = OJson::array({OJson{
      {"file", rank_file}, {"rank", 0}, {"bytes", rank_file_bytes}, {"header_crc32c", hex32(header_crc)}}});
  OJson tensors = OJson::object();
  for (const PlannedTensor& pt : plan.tensors) {
    OJson t;
    t["dtype"] = pt.dtype;
    t["shape"] = pt.shape;
    if (pt.replicated) t["replicated"] = true;
    OJson slices = OJson::array();
    for (size_t i : pt.slices) {
      const PlannedSlice& s = plan.slices[i];
      OJson js;
      js["file"] = rank_file;
      js["key"] = s.key;
      if (s.geom.flat) {
        js["flat"] = {s.geom.flat_begin, s.geom.numel()};
      } else {
        js["offset"] = s.geom.offset;
        js["shape"] = s.geom.shape;
      }
      js["byte_range"] = {s.byte_begin, s.byte_end};
      js["crc32c"] = hex32(s.crc);
      slices.push_back(std::move(js));
    }
    t["slices"] = std::move(slices);
    tensors[pt.name] = std::move(t);
  }
  m["tensors"] = std::move(tensors);
  return m;
}

// The manifest as text: one line per file, per tensor and per slice (a large model's manifest stays
// greppable), then its own checksum as the last field: the crc32c of every byte before the
// kManifestCrcTail that introduces it.
constexpr const char* kManifestCrcTail = ",\n \"manifest_crc32c\": \"";

std::string manifest_text(const OJson& m) {
  std::string out = "{";
  const char* sep = "\n ";
  for (const auto& [key, value] : m.items()) {
    absl::StrAppend(&out, sep, OJson(key).dump(), ": ");
    sep = ",\n ";
    if (key == "files" && value.is_array()) {
      const char* fsep = "\n  ";
      out += "[";
      for (const OJson& f : value) {
        absl::StrAppend(&out, fsep, f.dump());
        fsep = ",\n  ";
      }
      out += "]";
    } else if (key == "tensors" && value.is_object()) {
      const char* tsep = "\n  ";
      out += "{";
      for (const auto& [name, t] : value.items()) {
        OJson head = t;
        head.erase("slices");
        std::string h = head.dump();
        h.pop_back();  // the closing brace: "slices" follows
        absl::StrAppend(&out, tsep, OJson(name).dump(), ": ", h, ",\"slices\": [");
        tsep = ",\n  ";
        const char* ssep = "\n   ";
        for (const OJson& slice : t["slices"]) {
          absl::StrAppend(&out, ssep, slice.dump());
          ssep = ",\n   ";
        }
        out += "]}";
      }
      out += "\n }";
    } else {
      out += value.dump();
    }
  }
  absl::StrAppend(&out, kManifestCrcTail, hex32(crc32c(out.data(), out.size())), "\"\n}\n");
  return out;
}

// Moves the finished tmp directory to its final name; an existing directory of the same step (a
// re-save after resuming) is swapped out atomically with RENAME_EXCHANGE and then deleted.
Status publish_dir(const std::string& tmp, const std::string& final_dir) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) {
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": cannot rename to ", final_dir));
    }
    return OkStatus();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
    // No exchange on this file system: move the old one aside first (a brief window without it).
    const std::string aside = final_dir + ".old.tmp";
    fs::remove_all(aside, ec);
    if (::rename(final_dir.c_str(), aside.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(final_dir, ": cannot move aside to ", aside));
    }
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": cannot rename to ", final_dir));
    }
    fs::remove_all(aside, ec);
    return OkStatus();
  }
  fs::remove_all(tmp, ec);  // now the previous checkpoint of this step
  if (ec) LOG(WARN) << tmp << ": cannot delete the replaced checkpoint: " << ec.message();
  return OkStatus();
}

// Deletes stale step_*.tmp directories and old step directories (see save_checkpoint).
void prune(const std::string& root, int64_t step, int64_t keep_last) {
  std::error_code ec;
  std::vector<std::pair<int64_t, fs::path>> older;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    int64_t s;
    std::error_code ec2;
    if (is_stale_tmp_name(name) && e.is_directory(ec2)) {
      fs::remove_all(e.path(), ec2);
      if (ec2) {
        LOG(WARN) << e.path().string() << ": cannot delete a stale unfinished checkpoint: " << ec2.message();
      }
    } else if (parse_step_dir_name(name, &s) && s < step && e.is_directory(ec2)) {
      older.emplace_back(s, e.path());
    }
  }
  if (ec) LOG(WARN) << root << ": cannot list for pruning: " << ec.message();
  if (keep_last <= 0) return;
  std::sort(older.begin(), older.end());
  const int64_t drop = static_cast<int64_t>(older.size()) - (keep_last - 1);
  for (int64_t i = 0; i < drop; ++i) {
    std::error_code ec2;
    fs::remove_all(older[i].second, ec2);
    if (ec2) LOG(WARN) << older[i].second.string() << ": cannot delete an old checkpoint: " << ec2.message();
  }
}

Status aborted_at(const std::string& stage) {
  return absl::AbortedError(absl::StrCat("save_checkpoint: stopped before ", stage, " (test crash hook)"));
}

// Writes every file of the step into `tmp` (which must not exist yet).
Status write_step_dir(const std::string& tmp, const CheckpointMeta& meta, const OJson& layout, SavePlan* plan,
                      const CheckpointCrashHook& crash_hook) {
  auto crash = [&](const char* stage) { return crash_hook && crash_hook(stage); };
  std::error_code ec;
  if (!fs::create_directory(tmp, ec)) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create directory: ", ec.message()));
  }
  if (crash("rank_file")) return aborted_at("rank_file");
  const std::string rank_file = rank_file_name(0);
  const std::string rank_path = join_path(tmp, rank_file);
  uint32_t header_crc = 0;
  RETURN_IF_ERROR(write_rank_file(rank_path, meta.step, 0, plan, &header_crc));
  const uint64_t rank_bytes = fs::file_size(rank_path, ec);
  if (ec) return absl::InternalError(absl::StrCat(rank_path, ": cannot stat: ", ec.message()));

  if (crash("trainer_state")) return aborted_at("trainer_state");
  std::string state = "{}\n";
  try {
    if (!meta.trainer_state.is_null()) state = meta.trainer_state.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {  // a string that is not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: trainer_state: ", e.what()));
  }
  RETURN_IF_ERROR(write_file_synced(join_path(tmp, kTrainerState), state));
  RETURN_IF_ERROR(write_file_synced(join_path(tmp, kConfig), meta.config_yaml));

  if (crash("manifest")) return aborted_at("manifest");
  const OJson manifest =
      make_manifest(meta, layout, *plan, rank_file, rank_bytes, header_crc,
                    file_record(kConfig, meta.config_yaml), file_record(kTrainerState, state));
  std::string text;
  try {
    text = manifest_text(manifest);
  } catch (const nlohmann::json::exception& e) {  // a layout string that is not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: manifest: ", e.what()));
  }
  RETURN_IF_ERROR(write_file_synced(join_path(tmp, kManifest), text));
  return fsync_dir(tmp);
}

}  // namespace

Status save_checkpoint(const std::string& root, const CheckpointMeta& meta,
                       const std::vector<CheckpointTensor>& tensors, int64_t keep_last,
                       const CheckpointCrashHook& crash_hook) {
  auto crash = [&](const char* stage) { return crash_hook && crash_hook(stage); };
  if (meta.step < 0) {
    return absl::InvalidArgumentError(absl::StrCat("save_checkpoint: negative step ", meta.step));
  }
  OJson layout = meta.layout.is_null() ? OJson{{"world", 1}, {"dp", 1}, {"pp", 1}, {"ep", 1}}
                                       : OJson::parse(meta.layout.dump());
  if (!layout.is_object()) return absl::InvalidArgumentError("save_checkpoint: layout must be a JSON object");
  if (layout.contains("world") && layout["world"] != 1) {
    return absl::UnimplementedError(
        absl::StrCat("save_checkpoint: layout.world = ", layout["world"].dump(),
                     ", but only single-process saves (world 1) are implemented"));
  }
  ASSIGN_OR_RETURN(SavePlan plan, plan_save(tensors));

  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(root, ": cannot create the checkpoint root: ", ec.message()));
  }
  const std::string name = step_dir_name(meta.step);
  const std::string final_dir = join_path(root, name);
  const std::string tmp = final_dir + ".tmp";
  fs::remove_all(tmp, ec);  // left by a crashed save of this step
  if (ec) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot delete a stale unfinished save: ", ec.message()));
  }

  if (Status s = write_step_dir(tmp, meta, layout, &plan, crash_hook); !s.ok()) {
    if (!absl::IsAborted(s)) fs::remove_all(tmp, ec);  // a simulated crash leaves its debris
    return s;
  }
  if (crash("rename")) return aborted_at("rename");
  RETURN_IF_ERROR(publish_dir(tmp, final_dir));
  RETURN_IF_ERROR(fsync_dir(root));

  if (crash("latest")) return aborted_at("latest");
  const std::string latest_tmp = join_path(root, std::string(kLatest) + ".tmp");
  RETURN_IF_ERROR(write_file_synced(latest_tmp, name + "\n"));
  if (::rename(latest_tmp.c_str(), join_path(root, kLatest).c_str()) != 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat(latest_tmp, ": cannot rename to ", join_path(root, kLatest)));
  }
  RETURN_IF_ERROR(fsync_dir(root));

  if (crash("prune")) return aborted_at("prune");
  prune(root, meta.step, keep_last);
  return OkStatus();
}

// ---- finding checkpoints ------------------------------------------------------------------------

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    int64_t step;
    std::error_code ec2;
    if (parse_step_dir_name(e.path().filename().string(), &step) && e.is_directory(ec2)) {
      found.emplace_back(step, e.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

StatusOr<std::string> resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::path(path).lexically_normal();
  if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();  // "dir/" -> "dir"
  if (!fs::exists(p, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such checkpoint directory"));
  if (!fs::is_directory(p, ec)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a directory"));
  if (is_stale_tmp_name(p.filename().string())) {
    return absl::FailedPreconditionError(absl::StrCat(
        path,
        ": an unfinished save (a crash or a save in progress left it); load a finished step directory"));
  }
  if (fs::exists(p / kManifest, ec)) return p.string();
  if (fs::exists(p / kLatest, ec)) {
    ASSIGN_OR_RETURN(std::string text, read_small_file((p / kLatest).string()));
    const size_t end = text.find_last_not_of(" \t\r\n");
    const std::string name = end == std::string::npos ? "" : text.substr(0, end + 1);
    int64_t step;
    if (!parse_step_dir_name(name, &step)) {
      return absl::DataLossError(absl::StrCat((p / kLatest).string(),
                                              ": expected a step directory name like ", step_dir_name(120),
                                              ", got \"", name, "\""));
    }
    if (!fs::exists(p / name / kManifest, ec)) {
      return absl::NotFoundError(absl::StrCat((p / kLatest).string(), " names ", name, ", but ",
                                              (p / name / kManifest).string(), " does not exist"));
    }
    return (p / name).string();
  }
  std::vector<std::string> steps = list_checkpoints(p.string());
  if (!steps.empty()) {
    for (std::string& s : steps) s = fs::path(s).filename().string();
    return absl::NotFoundError(absl::StrCat(path, ": no ", kLatest, " file and no ", kManifest,
                                            "; step directories here: ", absl::StrJoin(steps, ", "),
                                            " (name one explicitly)"));
  }
  return absl::NotFoundError(
      absl::StrCat(path, ": not a checkpoint: neither ", kManifest, " nor ", kLatest, " is there"));
}

// ---- open and verify ----------------------------------------------------------------------------

namespace {

// Reads typed fields of manifest.json; every error is DataLoss "<dir>/manifest.json: <field>: <what>".
class ManifestReader {
 public:
  explicit ManifestReader(std::string file) : file_(std::move(file)) {}

  Status error(const std::string& field, const std::string& what) const {
    return absl::DataLossError(absl::StrCat(file_, ": ", field, ": ", what));
  }
  StatusOr<const OJson*> field(const OJson& obj, const std::string& key, const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end()) return error(join(where, key), "missing");
    return &*it;
  }
  StatusOr<int64_t> get_int(const OJson& obj, const std::string& key, const std::string& where) const {
    ASSIGN_OR_RETURN(const OJson* v, field(obj, key, where));
    if (!v->is_number_integer()) {
      return error(join(where, key), absl::StrCat("expected an integer, got ", v->dump()));
    }
    return v->get<int64_t>();
  }
  StatusOr<std::string> get_string(const OJson& obj, const std::string& key, const std::string& where) const {
    ASSIGN_OR_RETURN(const OJson* v, field(obj, key, where));
    if (!v->is_string()) return error(join(where, key), absl::StrCat("expected a string, got ", v->dump()));
    return v->get<std::string>();
  }
  StatusOr<std::vector<int64_t>> get_ints(const OJson& obj, const std::string& key,
                                          const std::string& where) const {
    ASSIGN_OR_RETURN(const OJson* v, field(obj, key, where));
    std::vector<int64_t> out;
    if (v->is_array()) {
      for (const OJson& x : *v) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0) break;
        out.push_back(x.get<int64_t>());
      }
    }
    if (!v->is_array() || out.size() != v->size()) {
      return error(join(where, key),
                   absl::StrCat("expected an array of non-negative integers, got ", v->dump()));
    }
    return out;
  }
  StatusOr<uint32_t> get_crc(const OJson& obj, const std::string& key, const std::string& where) const {
    ASSIGN_OR_RETURN(std::string s, get_string(obj, key, where));
    uint32_t crc;
    if (!parse_hex32(s, &crc)) {
      return error(join(where, key), absl::StrCat("expected 8 hex digits, got \"", s, "\""));
    }
    return crc;
  }
  // A file name inside the checkpoint directory: no separators, no "." or "..".
  StatusOr<std::string> get_file_name(const OJson& obj, const std::string& key,
                                      const std::string& where) const {
    ASSIGN_OR_RETURN(std::string s, get_string(obj, key, where));
    if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos) {
      return error(join(where, key), absl::StrCat("\"", s, "\" is not a file name inside the checkpoint"));
    }
    return s;
  }
  static std::string join(const std::string& where, const std::string& key) {
    return where.empty() ? key : absl::StrCat(where, ".", key);
  }

 private:
  std::string file_;
};

// A small file listed in the manifest with its size and crc32c (config.yaml, trainer_state.json).
StatusOr<std::string> read_listed_file(const ManifestReader& mr, const OJson& m, const std::string& key,
                                       const std::string& dir, bool verify) {
  ASSIGN_OR_RETURN(const OJson* rec, mr.field(m, key, ""));
  if (!rec->is_object()) return mr.error(key, "expected an object {file, bytes, crc32c}");
  ASSIGN_OR_RETURN(std::string name, mr.get_file_name(*rec, "file", key));
  ASSIGN_OR_RETURN(int64_t bytes, mr.get_int(*rec, "bytes", key));
  ASSIGN_OR_RETURN(uint32_t crc, mr.get_crc(*rec, "crc32c", key));
  const std::string path = join_path(dir, name);
  ASSIGN_OR_RETURN(std::string text, read_small_file(path));
  if (static_cast<int64_t>(text.size()) != bytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", text.size() < static_cast<size_t>(bytes) ? "truncated" : "size changed",
                     " (", text.size(), " bytes, the manifest says ", bytes, ")"));
  }
  if (verify && crc32c(text.data(), text.size()) != crc) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch (crc32c in the manifest ", hex32(crc),
                                            ", of the file ", hex32(crc32c(text.data(), text.size())), ")"));
  }
  return text;
}

}  // namespace

struct Checkpoint::Copy {
  int64_t src;  // element index in the slice's data
  int64_t dst;  // element index in the output
  int64_t len;
};

StatusOr<Checkpoint> Checkpoint::open(const std::string& dir, bool verify) {
  Checkpoint c;
  c.dir_ = dir;
  const std::string manifest_path = join_path(dir, kManifest);
  StatusOr<std::string> text = read_small_file(manifest_path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      return absl::NotFoundError(absl::StrCat(manifest_path,
                                              ": missing (not a checkpoint directory? a root "
                                              "or step name goes through resolve_checkpoint)"));
    }
    return text.status();
  }
  OJson m;
  try {
    m = OJson::parse(*text);
  } catch (const OJson::exception& e) {
    return absl::DataLossError(absl::StrCat(manifest_path, ": not valid JSON (", e.what(), ")"));
  }
  ManifestReader mr(manifest_path);
  if (!m.is_object()) return mr.error("manifest", "expected a JSON object");
  ASSIGN_OR_RETURN(std::string format, mr.get_string(m, "format", ""));
  if (format != kFormatName) {
    return mr.error("format", absl::StrCat("\"", format, "\" is not \"", kFormatName, "\""));
  }
  ASSIGN_OR_RETURN(int64_t version, mr.get_int(m, "format_version", ""));
  if (version != kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(manifest_path, ": format_version ", version,
                                                   " is not supported (this build reads version ",
                                                   kFormatVersion, ")"));
  }
  if (verify) {
    const size_t tail = text->rfind(kManifestCrcTail);
    ASSIGN_OR_RETURN(uint32_t crc, mr.get_crc(m, "manifest_crc32c", ""));
    if (tail == std::string::npos) return mr.error("manifest_crc32c", "not the last field of the file");
    if (crc32c(text->data(), tail) != crc) {
      return absl::DataLossError(absl::StrCat(manifest_path, ": checksum mismatch (manifest_crc32c ",
                                              hex32(crc), ", of the text before it ",
                                              hex32(crc32c(text->data(), tail)), ")"));
    }
  }
  ASSIGN_OR_RETURN(c.meta_.step, mr.get_int(m, "step", ""));
  ASSIGN_OR_RETURN(const OJson* layout, mr.field(m, "layout", ""));
  c.meta_.layout = nlohmann::json::parse(layout->dump());
  ASSIGN_OR_RETURN(c.meta_.config_yaml, read_listed_file(mr, m, "config", dir, verify));
  ASSIGN_OR_RETURN(std::string state, read_listed_file(mr, m, "trainer_state", dir, verify));
  try {
    c.meta_.trainer_state = nlohmann::json::parse(state);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(
        absl::StrCat(join_path(dir, kTrainerState), ": not valid JSON (", e.what(), ")"));
  }

  // The rank files: each present with its recorded size.
  ASSIGN_OR_RETURN(const OJson* files, mr.field(m, "files", ""));
  if (!files->is_array() || files->empty()) return mr.error("files", "expected a non-empty array");
  std::map<std::string, size_t> file_index;
  std::vector<uint64_t> file_bytes;
  std::vector<uint32_t> header_crcs;
  for (size_t i = 0; i < files->size(); ++i) {
    const std::string where = absl::StrCat("files[", i, "]");
    ASSIGN_OR_RETURN(std::string name, mr.get_file_name((*files)[i], "file", where));
    ASSIGN_OR_RETURN(int64_t bytes, mr.get_int((*files)[i], "bytes", where));
    ASSIGN_OR_RETURN(uint32_t header_crc, mr.get_crc((*files)[i], "header_crc32c", where));
    header_crcs.push_back(header_crc);
    if (!file_index.emplace(name, c.file_names_.size()).second) {
      return mr.error(where, absl::StrCat(name, " listed twice"));
    }
    c.file_names_.push_back(name);
    file_bytes.push_back(static_cast<uint64_t>(bytes));
  }

  // The tensors and their slices.
  ASSIGN_OR_RETURN(const OJson* tensors, mr.field(m, "tensors", ""));
  if (!tensors->is_object()) return mr.error("tensors", "expected an object");
  for (const auto& [name, jt] : tensors->items()) {
    const std::string where = absl::StrCat("tensors.", name);
    if (!jt.is_object()) return mr.error(where, "expected an object");
    TensorInfo t;
    t.name = name;
    ASSIGN_OR_RETURN(t.dtype, mr.get_string(jt, "dtype", where));
    if (!is_checkpoint_dtype(t.dtype)) {
      return mr.error(ManifestReader::join(where, "dtype"), absl::StrCat("unsupported dtype ", t.dtype));
    }
    ASSIGN_OR_RETURN(t.shape, mr.get_ints(jt, "shape", where));
    ASSIGN_OR_RETURN(const OJson* slices, mr.field(jt, "slices", where));
    if (!slices->is_array()) return mr.error(ManifestReader::join(where, "slices"), "expected an array");
    std::vector<SliceGeometry> geoms;
    for (size_t k = 0; k < slices->size(); ++k) {
      const OJson& js = (*slices)[k];
      const std::string sw = absl::StrCat(where, ".slices[", k, "]");
      if (!js.is_object()) return mr.error(sw, "expected an object");
      Slice s;
      ASSIGN_OR_RETURN(std::string file, mr.get_file_name(js, "file", sw));
      auto fi = file_index.find(file);
      if (fi == file_index.end()) {
        return mr.error(ManifestReader::join(sw, "file"), absl::StrCat(file, " is not listed in files"));
      }
      s.file = fi->second;
      ASSIGN_OR_RETURN(s.key, mr.get_string(js, "key", sw));
      SliceGeometry g;
      if (js.contains("flat")) {
        ASSIGN_OR_RETURN(std::vector<int64_t> flat, mr.get_ints(js, "flat", sw));
        if (flat.size() != 2) return mr.error(ManifestReader::join(sw, "flat"), "expected [begin, count]");
        g.flat = true;
        g.flat_begin = flat[0];
        g.shape = {flat[1]};
      } else {
        ASSIGN_OR_RETURN(g.offset, mr.get_ints(js, "offset", sw));
        ASSIGN_OR_RETURN(g.shape, mr.get_ints(js, "shape", sw));
      }
      ASSIGN_OR_RETURN(std::vector<int64_t> range, mr.get_ints(js, "byte_range", sw));
      if (range.size() != 2 || range[1] < range[0] ||
          static_cast<uint64_t>(range[1] - range[0]) != g.numel() * safetensors_dtype_size(t.dtype)) {
        return mr.error(
            ManifestReader::join(sw, "byte_range"),
            absl::StrCat(shape_str(range), " does not hold ", g.numel(), " elements of ", t.dtype));
      }
      ASSIGN_OR_RETURN(s.crc32c, mr.get_crc(js, "crc32c", sw));
      s.flat = g.flat;
      s.flat_begin = g.flat_begin;
      s.offset = g.offset;
      s.shape = g.shape;
      s.numel = g.numel();
      s.byte_begin = static_cast<uint64_t>(range[0]);
      s.byte_end = static_cast<uint64_t>(range[1]);
      geoms.push_back(g);
      t.slices.push_back(std::move(s));
    }
    if (Status st = check_tiling(t.shape, geoms); !st.ok()) return mr.error(where, std::string(st.message()));
    c.index_[name] = c.tensors_.size();
    c.tensors_.push_back(std::move(t));
  }

  for (size_t fi = 0; fi < c.file_names_.size(); ++fi) {
    RETURN_IF_ERROR(c.open_rank_file(fi, file_bytes[fi], header_crcs[fi], verify));
  }
  return c;
}

// A rank file: present, of its recorded size (a cut names the first slice it destroys), a valid
// safetensors header agreeing with the manifest, and with `verify` the checksum of the header and
// of every slice. Appends the open file to files_.
Status Checkpoint::open_rank_file(size_t fi, uint64_t expected_bytes, uint32_t header_crc32c, bool verify) {
  const std::string path = join_path(dir_, file_names_[fi]);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat(path, ": missing (listed in ", join_path(dir_, kManifest), ")"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": stat"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::vector<std::pair<const TensorInfo*, const Slice*>> in_file;  // by byte position
  for (const TensorInfo& t : tensors_) {
    for (const Slice& s : t.slices) {
      if (s.file == fi) in_file.emplace_back(&t, &s);
    }
  }
  std::sort(in_file.begin(), in_file.end(),
            [](const auto& a, const auto& b) { return a.second->byte_begin < b.second->byte_begin; });
  if (size < expected_bytes) {
    for (const auto& [t, s] : in_file) {
      if (s->byte_end > size) {
        return absl::DataLossError(absl::StrCat(path, ": ", t->name, ": truncated (the file is ", size,
                                                " bytes; this slice needs bytes [", s->byte_begin, ", ",
                                                s->byte_end, ") of ", expected_bytes, ")"));
      }
    }
    return absl::DataLossError(absl::StrCat(path, ": truncated (", size, " of ", expected_bytes, " bytes)"));
  }
  if (size != expected_bytes) {
    return absl::DataLossError(absl::StrCat(path, ": ", size, " bytes, but the manifest says ",
                                            expected_bytes, " (the file was replaced or appended to)"));
  }
  StatusOr<SafetensorsFile> sf = SafetensorsFile::open(path);
  if (!sf.ok()) return absl::DataLossError(sf.status().message());
  uint64_t data_bytes = 0;
  for (const SafetensorsEntry& e : sf->entries()) data_bytes = std::max(data_bytes, e.end);
  const uint64_t data_start = size - data_bytes;
  for (const auto& [t, s] : in_file) {
    const SafetensorsEntry* e = sf->find(s->key);
    const std::vector<int64_t> file_shape = s->flat ? std::vector<int64_t>{s->numel} : s->shape;
    if (e == nullptr) {
      return absl::DataLossError(
          absl::StrCat(path, ": ", t->name, ": the file holds no tensor \"", s->key, "\""));
    }
    if (e->dtype != t->dtype || e->shape != file_shape || data_start + e->begin != s->byte_begin ||
        data_start + e->end != s->byte_end) {
      return absl::DataLossError(absl::StrCat(
          path, ": ", t->name, ": the file holds \"", s->key, "\" as ", e->dtype, " ", shape_str(e->shape),
          " at bytes [", data_start + e->begin, ", ", data_start + e->end, "), the manifest says ", t->dtype,
          " ", shape_str(file_shape), " at [", s->byte_begin, ", ", s->byte_end, ")"));
    }
  }
  if (verify) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    std::vector<char> buf(std::min<uint64_t>(kReadChunkBytes, size));
    uint32_t header_crc = 0;
    Status status = crc_range(fd, path, "header", 0, data_start, &buf, &header_crc);
    if (status.ok() && header_crc != header_crc32c) {
      status =
          absl::DataLossError(absl::StrCat(path, ": header: checksum mismatch (crc32c in the manifest ",
                                           hex32(header_crc32c), ", of the header ", hex32(header_crc), ")"));
    }
    for (const auto& [t, s] : in_file) {
      if (!status.ok()) break;
      uint32_t crc = 0;
      status = crc_range(fd, path, t->name, s->byte_begin, s->byte_end, &buf, &crc);
      if (status.ok() && crc != s->crc32c) {
        const std::string which =
            t->slices.size() == 1 ? std::string() : absl::StrCat(", slice \"", s->key, "\"");
        status = absl::DataLossError(
            absl::StrCat(path, ": ", t->name, ": checksum mismatch (crc32c in the manifest ",
                         hex32(s->crc32c), ", of the data ", hex32(crc), which, ")"));
      }
    }
    ::close(fd);
    RETURN_IF_ERROR(status);
  }
  files_.push_back(*std::move(sf));
  return OkStatus();
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> out;
  for (const TensorInfo& t : tensors_) out.push_back(t.name);
  return out;
}

std::vector<int64_t> Checkpoint::global_shape(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? std::vector<int64_t>{} : tensors_[it->second].shape;
}

std::string Checkpoint::dtype(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? std::string() : tensors_[it->second].dtype;
}

StatusOr<const Checkpoint::TensorInfo*> Checkpoint::lookup(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": ", name, ": no such tensor in the checkpoint"));
  }
  return &tensors_[it->second];
}

namespace {

// Appends a run, merging it into the previous one when both sides continue contiguously.
template <typename Copy>
void push_copy(std::vector<Copy>* v, int64_t src, int64_t dst, int64_t len) {
  if (len <= 0) return;
  if (!v->empty() && v->back().src + v->back().len == src && v->back().dst + v->back().len == dst) {
    v->back().len += len;
    return;
  }
  v->push_back({src, dst, len});
}

// Calls f(row_index, idx) for every row (all dims but the last) of the box [lo, hi) in row-major
// order, idx holding the row's coordinates; f returns false to stop. A rank-0 box has one row.
template <typename F>
void for_each_row(const std::vector<int64_t>& lo, const std::vector<int64_t>& hi, F f) {
  const int r = static_cast<int>(lo.size());
  for (int d = 0; d + 1 < r; ++d) {
    if (lo[d] >= hi[d]) return;
  }
  std::vector<int64_t> idx(lo.begin(), lo.end());
  for (int64_t row = 0;; ++row) {
    if (!f(row, idx)) return;
    int d = r - 2;
    for (; d >= 0; --d) {
      if (++idx[d] < hi[d]) break;
      idx[d] = lo[d];
    }
    if (d < 0) return;
  }
}

}  // namespace

Status Checkpoint::read_copies(const TensorInfo& t, const Slice& s, const std::vector<Copy>& copies,
                               float* out) const {
  const SafetensorsFile& f = files_[s.file];
  std::vector<float> buf;
  for (size_t i = 0; i < copies.size();) {
    // Runs close together in the slice are read with one pread and scattered from a buffer.
    const int64_t span_begin = copies[i].src;
    int64_t span_end = copies[i].src + copies[i].len;
    size_t j = i + 1;
    while (j < copies.size() && copies[j].src >= span_end &&
           copies[j].src + copies[j].len - span_begin <= kGatherChunk) {
      span_end = copies[j].src + copies[j].len;
      ++j;
    }
    if (j == i + 1) {
      RETURN_IF_ERROR(f.read_f32_range(s.key, copies[i].src, copies[i].len, out + copies[i].dst));
    } else {
      buf.resize(static_cast<size_t>(span_end - span_begin));
      RETURN_IF_ERROR(f.read_f32_range(s.key, span_begin, span_end - span_begin, buf.data()));
      for (size_t k = i; k < j; ++k) {
        std::memcpy(out + copies[k].dst, buf.data() + (copies[k].src - span_begin),
                    static_cast<size_t>(copies[k].len) * sizeof(float));
      }
    }
    i = j;
  }
  return OkStatus();
}

Status Checkpoint::read_block(const std::string& name, const std::vector<int64_t>& offset,
                              const std::vector<int64_t>& shape, float* out) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, lookup(name));
  const std::vector<int64_t>& gs = t->shape;
  const int r = static_cast<int>(gs.size());
  bool ok = static_cast<int>(offset.size()) == r && static_cast<int>(shape.size()) == r;
  for (int d = 0; ok && d < r; ++d) ok = offset[d] >= 0 && shape[d] >= 0 && offset[d] + shape[d] <= gs[d];
  if (!ok) {
    return absl::OutOfRangeError(absl::StrCat(dir_, ": ", name, ": block at offset ", shape_str(offset),
                                              " of shape ", shape_str(shape), " is out of range for ",
                                              shape_str(gs)));
  }
  const int64_t count = numel_of(shape);
  if (count == 0) return OkStatus();
  const std::vector<int64_t> gstride = row_major_strides(gs);
  const std::vector<int64_t> rstride = row_major_strides(shape);
  std::vector<int64_t> req_hi(r);
  for (int d = 0; d < r; ++d) req_hi[d] = offset[d] + shape[d];
  const int64_t row_len = r == 0 ? 1 : shape[r - 1];

  int64_t copied = 0;
  for (const Slice& s : t->slices) {
    std::vector<Copy> copies;
    if (s.flat) {
      // Each row of the request is a global flat run; keep its part inside [fb, fe).
      const int64_t fb = s.flat_begin, fe = s.flat_begin + s.numel;
      for_each_row(offset, req_hi, [&](int64_t row, const std::vector<int64_t>& idx) {
        int64_t g = r == 0 ? 0 : offset[r - 1];
        for (int d = 0; d + 1 < r; ++d) g += idx[d] * gstride[d];
        if (g >= fe) return false;
        const int64_t a = std::max(g, fb), b = std::min(g + row_len, fe);
        if (a < b) push_copy(&copies, a - fb, row * row_len + (a - g), b - a);
        return true;
      });
    } else {
      std::vector<int64_t> lo(r), hi(r);
      bool empty = false;
      for (int d = 0; d < r; ++d) {
        lo[d] = std::max(offset[d], s.offset[d]);
        hi[d] = std::min(req_hi[d], s.offset[d] + s.shape[d]);
        empty = empty || lo[d] >= hi[d];
      }
      if (empty) continue;
      const std::vector<int64_t> sstride = row_major_strides(s.shape);
      const int64_t len = r == 0 ? 1 : hi[r - 1] - lo[r - 1];
      for_each_row(lo, hi, [&](int64_t, const std::vector<int64_t>& idx) {
        int64_t src = 0, dst = 0;
        for (int d = 0; d < r; ++d) {  // idx[r-1] stays lo[r-1]
          src += (idx[d] - s.offset[d]) * sstride[d];
          dst += (idx[d] - offset[d]) * rstride[d];
        }
        push_copy(&copies, src, dst, len);
        return true;
      });
    }
    for (const Copy& cp : copies) copied += cp.len;
    RETURN_IF_ERROR(read_copies(*t, s, copies, out));
  }
  if (copied != count) {  // cannot happen for a manifest that passed check_tiling
    return absl::DataLossError(absl::StrCat(dir_, ": ", name, ": the slices hold ", copied, " of the ", count,
                                            " elements of block ", shape_str(offset), " + ",
                                            shape_str(shape)));
  }
  return OkStatus();
}

Status Checkpoint::read_flat(const std::string& name, int64_t begin, int64_t count, float* out) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, lookup(name));
  const std::vector<int64_t>& gs = t->shape;
  const int64_t total = numel_of(gs);
  if (begin < 0 || count < 0 || begin > total || count > total - begin) {
    return absl::OutOfRangeError(absl::StrCat(dir_, ": ", name, ": elements [", begin, ", ", begin, " + ",
                                              count, ") are out of range for ", total, " elements ",
                                              shape_str(gs)));
  }
  if (count == 0) return OkStatus();
  const int64_t end = begin + count;
  const int r = static_cast<int>(gs.size());
  const std::vector<int64_t> gstride = row_major_strides(gs);
  int64_t copied = 0;
  for (const Slice& s : t->slices) {
    std::vector<Copy> copies;
    if (s.flat) {
      const int64_t a = std::max(begin, s.flat_begin), b = std::min(end, s.flat_begin + s.numel);
      if (a < b) push_copy(&copies, a - s.flat_begin, a - begin, b - a);
    } else {
      // Each row of the block is a global flat run; keep its part inside [begin, end).
      std::vector<int64_t> hi(r);
      for (int d = 0; d < r; ++d) hi[d] = s.offset[d] + s.shape[d];
      if (numel_of(s.shape) == 0) continue;
      const int64_t row_len = r == 0 ? 1 : s.shape[r - 1];
      for_each_row(s.offset, hi, [&](int64_t row, const std::vector<int64_t>& idx) {
        int64_t g = r == 0 ? 0 : s.offset[r - 1];
        for (int d = 0; d + 1 < r; ++d) g += idx[d] * gstride[d];
        if (g >= end) return false;
        const int64_t a = std::max(g, begin), b = std::min(g + row_len, end);
        if (a < b) push_copy(&copies, row * row_len + (a - g), a - begin, b - a);
        return true;
      });
    }
    for (const Copy& cp : copies) copied += cp.len;
    RETURN_IF_ERROR(read_copies(*t, s, copies, out));
  }
  if (copied != count) {
    return absl::DataLossError(absl::StrCat(dir_, ": ", name, ": the slices hold ", copied, " of the ", count,
                                            " elements [", begin, ", ", end, ")"));
  }
  return OkStatus();
}

}  // namespace strata
