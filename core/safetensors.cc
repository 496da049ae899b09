#include "core/safetensors.h"

#include <fcntl.h>     // open
#include <sys/stat.h>  // fstat
#include <unistd.h>    // pread, write, fsync, close

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>  // header parsing and writing; kept out of safetensors.h

#include "absl/strings/str_join.h"

namespace strata {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; reads copy bytes as they are");

using Json = nlohmann::ordered_json;  // ordered: the writer emits declaration order

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference library's limit
constexpr const char* kMetadataKey = "__metadata__";
constexpr int64_t kConvertChunk = 1 << 20;  // elements converted per temporary buffer

// "<path>: <what>: <message>", the shape of every error here.
Status invalid(const std::string& path, const std::string& what, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what, ": ", msg));
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string offsets_str(uint64_t begin, uint64_t end) {
  return absl::StrCat("data_offsets [", begin, ", ", end, "]");
}

// numel * elem_size in bytes, or false when the product does not fit in an int64.
bool shape_bytes(const std::vector<int64_t>& shape, size_t elem_size, uint64_t* numel,
                 uint64_t* bytes) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  int64_t b;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(elem_size), &b)) return false;
  *numel = static_cast<uint64_t>(n);
  *bytes = static_cast<uint64_t>(b);
  return true;
}

// IEEE binary16 -> binary32, exact (every half is a float). NaN payloads are kept, as F16C does
// for quiet NaNs.
float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (man << 13));  // Inf, NaN
  if (exp == 0) {  // zero or subnormal: man * 2^-24
    const float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));  // rebias 15 -> 127
}

// A JSON value that is a non-negative integer fitting in `max`; floats ("4.0") do not count.
bool get_uint(const Json& v, uint64_t max, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  const uint64_t u = v.get<uint64_t>();
  if (u > max) return false;
  *out = u;
  return true;
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8},
  };
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

// ---- reader -------------------------------------------------------------------------------------

struct SafetensorsFile::Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

// An errno as a Status; errno 0 (a short read: the file ended early) as DataLoss, never OK.
Status io_error(int err, const std::string& msg) {
  if (err == 0) return absl::DataLossError(absl::StrCat(msg, ": unexpected end of file"));
  return absl::ErrnoToStatus(err, msg);
}

// Reads exactly n bytes at `offset`; false on a short read (the file shrank) or an I/O error.
bool pread_all(int fd, void* dst, uint64_t n, uint64_t offset, int* err) {
  char* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      *err = got < 0 ? errno : 0;
      return false;
    }
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return true;
}

// Parses the header, reporting duplicate keys (which nlohmann would silently merge) at any depth.
Status parse_header(const std::string& path, const std::string& text, Json* out) {
  // Whitespace around the object is allowed (writers pad the header with spaces), as in the
  // reference library.
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || text[first] != '{') {
    return invalid(path, "header", "header is not a JSON object (it must start with '{')");
  }
  // nlohmann stops at a NUL byte as if the input ended there; JSON never has a raw NUL.
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    return invalid(path, "header", absl::StrCat("header is not valid JSON: NUL byte at offset ", nul));
  }
  std::vector<std::set<std::string>> open_objects;  // keys seen in each enclosing object
  std::string top_key, dup_key, dup_context;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (open_objects.size() == 1) top_key = key;
        if (!open_objects.empty() && !open_objects.back().insert(key).second && dup_key.empty()) {
          dup_key = key;
          dup_context = open_objects.size() == 1 ? key : top_key;
        }
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    *out = Json::parse(text, callback);
  } catch (const Json::exception& e) {
    return invalid(path, "header", absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!out->is_object()) return invalid(path, "header", "header is not a JSON object");
  if (!dup_key.empty()) {
    if (dup_context == dup_key) {
      return invalid(path, dup_key, "duplicate key in the header (each tensor name must be unique)");
    }
    return invalid(path, dup_context, absl::StrCat("duplicate key '", dup_key, "'"));
  }
  return OkStatus();
}

Status parse_metadata(const std::string& path, const Json& j, std::map<std::string, std::string>* out) {
  if (!j.is_object()) return invalid(path, kMetadataKey, "is not a JSON object of strings");
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string()) {
      return invalid(path, kMetadataKey, absl::StrCat("value of '", k, "' is not a string"));
    }
    (*out)[k] = v.get<std::string>();
  }
  return OkStatus();
}

// One tensor's header entry: fields, dtype, shape, offsets in bounds, byte count == shape * dtype.
Status parse_entry(const std::string& path, const std::string& name, const Json& j,
                   uint64_t data_size, SafetensorsEntry* e) {
  e->name = name;
  if (!j.is_object()) return invalid(path, name, "entry is not a JSON object");
  auto dtype = j.find("dtype");
  if (dtype == j.end() || !dtype->is_string()) {
    return invalid(path, name, "missing or non-string \"dtype\"");
  }
  e->dtype = dtype->get<std::string>();
  const size_t elem = safetensors_dtype_size(e->dtype);
  if (elem == 0) {
    return invalid(path, name, absl::StrCat("unknown or unsupported dtype '", e->dtype, "'"));
  }
  auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) return invalid(path, name, "missing or non-array \"shape\"");
  for (size_t i = 0; i < shape->size(); ++i) {
    uint64_t d;
    if (!get_uint((*shape)[i], std::numeric_limits<int64_t>::max(), &d)) {
      return invalid(path, name, absl::StrCat("shape[", i, "] = ", (*shape)[i].dump(),
                                              " is not a non-negative integer"));
    }
    e->shape.push_back(static_cast<int64_t>(d));
  }
  auto offsets = j.find("data_offsets");
  if (offsets == j.end() || !offsets->is_array() || offsets->size() != 2 ||
      !get_uint((*offsets)[0], std::numeric_limits<int64_t>::max(), &e->begin) ||
      !get_uint((*offsets)[1], std::numeric_limits<int64_t>::max(), &e->end)) {
    return invalid(path, name,
                   absl::StrCat("\"data_offsets\" must be two non-negative integers, got ",
                                offsets == j.end() ? "nothing" : offsets->dump()));
  }
  if (e->end < e->begin) {
    return invalid(path, name, absl::StrCat(offsets_str(e->begin, e->end), ": end < begin"));
  }
  if (e->end > data_size) {
    return invalid(path, name,
                   absl::StrCat(offsets_str(e->begin, e->end), " end beyond the data buffer (",
                                data_size, " bytes): file truncated?"));
  }
  uint64_t numel, bytes;
  if (!shape_bytes(e->shape, elem, &numel, &bytes)) {
    return invalid(path, name, absl::StrCat("shape ", shape_str(e->shape), " of ", e->dtype,
                                            " overflows a 64-bit byte count"));
  }
  if (bytes != e->end - e->begin) {
    return invalid(path, name,
                   absl::StrCat("dtype ", e->dtype, " and shape ", shape_str(e->shape), " need ",
                                bytes, " bytes, but ", offsets_str(e->begin, e->end), " hold ",
                                e->end - e->begin));
  }
  return OkStatus();
}

}  // namespace

StatusOr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": header: cannot open"));
  f.fd_ = std::make_shared<const Fd>(fd);

  struct stat st;
  if (::fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": header: fstat"));
  if (!S_ISREG(st.st_mode)) return invalid(path, "header", "not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    return invalid(path, "header", absl::StrCat("file is ", file_size,
                                                " bytes, shorter than the 8-byte header length"));
  }
  int err = 0;
  uint8_t len_bytes[8];
  if (!pread_all(fd, len_bytes, 8, 0, &err)) {
    return io_error(err, absl::StrCat(path, ": header: cannot read the header length"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kMaxHeaderBytes) {
    return invalid(path, "header", absl::StrCat("header length ", n, " exceeds the limit of ",
                                                kMaxHeaderBytes, " bytes"));
  }
  if (n > file_size - 8) {
    return invalid(path, "header", absl::StrCat("header length ", n, " exceeds the ", file_size - 8,
                                                " bytes after the length field: file truncated?"));
  }
  std::string text(n, '\0');
  if (!pread_all(fd, text.data(), n, 8, &err)) {
    return io_error(err, absl::StrCat(path, ": header: cannot read the header"));
  }
  f.data_start_ = 8 + n;
  const uint64_t data_size = file_size - f.data_start_;

  Json header;
  RETURN_IF_ERROR(parse_header(path, text, &header));
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      RETURN_IF_ERROR(parse_metadata(path, value, &f.metadata_));
      continue;
    }
    SafetensorsEntry e;
    RETURN_IF_ERROR(parse_entry(path, name, value, data_size, &e));
    f.entries_.push_back(std::move(e));
  }

  // The tensors must tile [0, data_size) exactly, as the reference library requires.
  std::stable_sort(f.entries_.begin(), f.entries_.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t covered = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry& e : f.entries_) {
    if (e.begin < covered) {
      return invalid(path, e.name, absl::StrCat(offsets_str(e.begin, e.end), " overlap '", prev->name,
                                                "' ", offsets_str(prev->begin, prev->end)));
    }
    if (e.begin > covered) {
      return invalid(path, e.name,
                     absl::StrCat("gap of ", e.begin - covered, " bytes before ",
                                  offsets_str(e.begin, e.end),
                                  prev ? absl::StrCat(" after '", prev->name, "', which ends at ", covered)
                                       : std::string(" at the start of the data buffer")));
    }
    covered = e.end;
    prev = &e;
  }
  if (covered != data_size) {
    return invalid(path, "header", absl::StrCat(data_size - covered,
                                                " bytes of data after the last tensor (the tensors "
                                                "must cover the data buffer exactly)"));
  }
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  return f;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

StatusOr<const SafetensorsEntry*> SafetensorsFile::lookup(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": ", name, ": no such tensor"));
  return e;
}

Status SafetensorsFile::read_bytes(const SafetensorsEntry& e, uint64_t begin, uint64_t n,
                                   void* dst) const {
  int err = 0;
  if (!pread_all(fd_->fd, dst, n, data_start_ + e.begin + begin, &err)) {
    return io_error(err, absl::StrCat(path_, ": ", e.name, ": cannot read ", n, " bytes at offset ",
                                      data_start_ + e.begin + begin, " (file changed since open?)"));
  }
  return OkStatus();
}

Status SafetensorsFile::read_f32_range(const std::string& name, int64_t offset, int64_t count,
                                       float* out) const {
  ASSIGN_OR_RETURN(const SafetensorsEntry* e, lookup(name));
  const uint64_t elem = safetensors_dtype_size(e->dtype);
  const int64_t numel = static_cast<int64_t>((e->end - e->begin) / elem);
  if (offset < 0 || count < 0 || offset > numel || count > numel - offset) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": ", name, ": elements [", offset, ", ",
                                              offset, " + ", count, ") out of range for ", numel,
                                              " elements"));
  }
  const uint64_t first_byte = static_cast<uint64_t>(offset) * elem;
  if (e->dtype == "F32") return read_bytes(*e, first_byte, static_cast<uint64_t>(count) * 4, out);

  using Convert = void (*)(const void* src, float* dst, size_t n);
  Convert convert = nullptr;
  if (e->dtype == "BF16") {
    convert = [](const void* s, float* d, size_t n) { bf16_to_f32_n(static_cast<const uint16_t*>(s), d, n); };
  } else if (e->dtype == "F16") {
    convert = [](const void* s, float* d, size_t n) {
      const uint16_t* h = static_cast<const uint16_t*>(s);
      for (size_t i = 0; i < n; ++i) d[i] = f16_to_f32(h[i]);
    };
  } else if (e->dtype == "F8_E4M3") {
    convert = [](const void* s, float* d, size_t n) { e4m3_to_f32_n(static_cast<const uint8_t*>(s), d, n); };
  } else if (e->dtype == "F8_E5M2") {
    convert = [](const void* s, float* d, size_t n) { e5m2_to_f32_n(static_cast<const uint8_t*>(s), d, n); };
  } else if (e->dtype == "F64") {
    convert = [](const void* s, float* d, size_t n) {
      const double* x = static_cast<const double*>(s);
      for (size_t i = 0; i < n; ++i) d[i] = static_cast<float>(x[i]);
    };
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", name, ": dtype ", e->dtype,
                                                   " cannot be read as f32"));
  }
  // Convert through a bounded buffer so a slice read costs at most one chunk of extra memory.
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(count, kConvertChunk)) * elem);
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(count - done, kConvertChunk);
    RETURN_IF_ERROR(read_bytes(*e, first_byte + static_cast<uint64_t>(done) * elem,
                               static_cast<uint64_t>(n) * elem, buf.data()));
    convert(buf.data(), out + done, static_cast<size_t>(n));
    done += n;
  }
  return OkStatus();
}

namespace {

StatusOr<Shape> tensor_shape(const std::string& path, const SafetensorsEntry& e) {
  if (static_cast<int>(e.shape.size()) > Shape::kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", e.name, ": shape ", shape_str(e.shape), " has more than ",
                     Shape::kMaxDims, " dimensions; read it flat with read_f32_range"));
  }
  Shape s;
  for (int64_t d : e.shape) s.push_back(d);
  return s;
}

}  // namespace

StatusOr<Tensor> SafetensorsFile::read_f32(const std::string& name) const {
  ASSIGN_OR_RETURN(const SafetensorsEntry* e, lookup(name));
  ASSIGN_OR_RETURN(Shape shape, tensor_shape(path_, *e));
  Tensor t = Tensor::empty(shape, DType::kF32);
  RETURN_IF_ERROR(read_f32_range(name, 0, t.numel(), static_cast<float*>(t.raw())));
  return t;
}

StatusOr<Tensor> SafetensorsFile::read(const std::string& name) const {
  ASSIGN_OR_RETURN(const SafetensorsEntry* e, lookup(name));
  static const std::map<std::string, DType> kDTypes = {
      {"F32", DType::kF32},         {"BF16", DType::kBF16}, {"F8_E4M3", DType::kF8E4M3},
      {"F8_E5M2", DType::kF8E5M2},  {"I32", DType::kI32},   {"I64", DType::kI64},
      {"U8", DType::kU8},           {"BOOL", DType::kU8},
  };
  auto dt = kDTypes.find(e->dtype);
  if (dt == kDTypes.end()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", name, ": dtype ", e->dtype,
                                                   " has no Strata DType (read_f32 converts floats)"));
  }
  ASSIGN_OR_RETURN(Shape shape, tensor_shape(path_, *e));
  Tensor t = Tensor::empty(shape, dt->second);
  RETURN_IF_ERROR(read_bytes(*e, 0, e->end - e->begin, t.raw()));
  return t;
}

// ---- writer -------------------------------------------------------------------------------------

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsWriter::declare(const std::string& name, const std::string& dtype,
                                const std::vector<int64_t>& shape) {
  SafetensorsEntry e;
  e.name = name;
  e.dtype = dtype;
  e.shape = shape;
  declared_.push_back(std::move(e));
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

Status SafetensorsWriter::fail(Status s) {
  if (error_.ok()) error_ = s;
  return s;
}

Status SafetensorsWriter::write_all(const void* data, size_t bytes, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return fail(io_error(n < 0 ? errno : EIO, absl::StrCat(path_, ": ", what, ": write failed")));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Status SafetensorsWriter::open(const std::string& path) {
  if (opened_ || fd_ >= 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": header: writer already opened ", path_));
  }
  path_ = path;
  Json header = Json::object();
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;  // first, as the reference writer does
  std::set<std::string> names;
  uint64_t offset = 0;
  for (SafetensorsEntry& e : declared_) {
    if (e.name == kMetadataKey) return invalid(path, e.name, "is reserved for metadata");
    if (!names.insert(e.name).second) return invalid(path, e.name, "declared twice");
    const size_t elem = safetensors_dtype_size(e.dtype);
    if (elem == 0) return invalid(path, e.name, absl::StrCat("unknown or unsupported dtype '", e.dtype, "'"));
    uint64_t numel, bytes;
    if (!shape_bytes(e.shape, elem, &numel, &bytes)) {
      return invalid(path, e.name, absl::StrCat("shape ", shape_str(e.shape), " of ", e.dtype,
                                                " has a negative extent or overflows"));
    }
    e.begin = offset;
    e.end = offset + bytes;
    if (e.end < offset) return invalid(path, e.name, "data buffer exceeds 2^64 bytes");
    offset = e.end;
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {e.begin, e.end}}};
  }
  std::string text;
  try {
    text = header.dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const Json::exception& ex) {
    return invalid(path, "header", absl::StrCat("a tensor name or metadata string is not valid UTF-8 (",
                                                ex.what(), ")"));
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  if (text.size() > kMaxHeaderBytes) {
    return invalid(path, "header", absl::StrCat("header of ", text.size(), " bytes exceeds the limit of ",
                                                kMaxHeaderBytes));
  }

  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": header: cannot open for writing"));
  opened_ = true;
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  RETURN_IF_ERROR(write_all(len_bytes, 8, "header"));
  return write_all(text.data(), text.size(), "header");
}

Status SafetensorsWriter::write(const std::string& name, const void* data, size_t bytes) {
  if (!error_.ok()) return error_;
  if (!opened_ || fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_.empty() ? "(unopened writer)" : path_, ": ",
                                                      name, ": write() before open() or after close()"));
  }
  if (next_ >= declared_.size() || declared_[next_].name != name) {
    const bool declared = std::any_of(declared_.begin(), declared_.end(),
                                      [&](const SafetensorsEntry& e) { return e.name == name; });
    if (!declared) return invalid(path_, name, "was not declared");
    if (next_ >= declared_.size()) return invalid(path_, name, "written twice");
    return invalid(path_, name, absl::StrCat("written out of declaration order (expected '",
                                             declared_[next_].name, "')"));
  }
  const SafetensorsEntry& e = declared_[next_];
  if (bytes != e.end - e.begin) {
    return invalid(path_, name, absl::StrCat("got ", bytes, " bytes, but dtype ", e.dtype, " and shape ",
                                             shape_str(e.shape), " need ", e.end - e.begin));
  }
  if (data == nullptr && bytes > 0) return invalid(path_, name, "null data");
  RETURN_IF_ERROR(write_all(data, bytes, name));
  ++next_;
  return OkStatus();
}

Status SafetensorsWriter::close() {
  if (!opened_ || fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path_.empty() ? "(unopened writer)" : path_,
                                                      ": header: close() without open()"));
  }
  const int fd = fd_;
  fd_ = -1;
  Status s = error_;
  if (s.ok() && next_ < declared_.size()) {
    s = invalid(path_, declared_[next_].name,
                absl::StrCat("declared but not written before close() (", declared_.size() - next_,
                             " tensors missing; the file is incomplete)"));
  }
  if (s.ok() && ::fsync(fd) != 0) s = absl::ErrnoToStatus(errno, absl::StrCat(path_, ": header: fsync"));
  if (::close(fd) != 0 && s.ok()) s = absl::ErrnoToStatus(errno, absl::StrCat(path_, ": header: close"));
  return s;
}

Status save_safetensors_f32(const std::string& path,
                            const std::vector<std::pair<std::string, Tensor>>& tensors,
                            const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors[a].first < tensors[b].first; });
  SafetensorsWriter w;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    if (t.dtype() != DType::kF32) {
      return invalid(path, name, absl::StrCat("is a ", dtype_name(t.dtype()),
                                              " tensor; save_safetensors_f32 writes f32 only"));
    }
    std::vector<int64_t> shape;
    for (int d = 0; d < t.shape().rank(); ++d) shape.push_back(t.shape()[d]);
    w.declare(name, "F32", shape);
  }
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  RETURN_IF_ERROR(w.open(path));
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
    RETURN_IF_ERROR(w.write(name, host.raw(), host.nbytes()));
  }
  return w.close();
}

}  // namespace strata
