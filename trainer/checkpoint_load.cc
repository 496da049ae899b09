// Reading a checkpoint (trainer/checkpoint.h): finding one (resolve_checkpoint, list_checkpoints),
// opening and verifying it (Checkpoint::open), and assembling any block or flat range of a tensor
// from whichever slices hold it (read_block, read_flat). Writing one is checkpoint_save.cc.
#include "trainer/checkpoint.h"

#include <fcntl.h>     // open, posix_fadvise
#include <sys/stat.h>  // stat
#include <unistd.h>    // read, close

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "trainer/checkpoint_internal.h"

namespace strata {

using namespace checkpoint_internal;  // the format's names and helpers shared with checkpoint_save.cc

namespace {

constexpr int64_t kGatherChunk = 1 << 20;  // read_block reads nearby runs together up to this

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

std::vector<int64_t> row_major_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 2; d >= 0; --d) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

}  // namespace

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
