// Tests of the safetensors reader and writer (core/safetensors.h):
//   - round trip of several dtypes and shapes (0-element, scalar []), bitwise, with metadata;
//   - read_f32 from BF16 / F16 / F8 against the core/dtype.h codecs (F16 against F16C, all codes);
//   - read_f32_range slices, including ones that cross the conversion chunk;
//   - writer misuse (order, byte counts, missing tensors, bad declarations);
//   - malformed files built here byte by byte, each rejected with "<path>: <name|header>: <what>".
#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <immintrin.h>  // _cvtsh_ss: the hardware half decode the F16 path is checked against

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>  // getpid

namespace strata {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("strata_safetensors_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file of: 8-byte little-endian `header_len` (default: header.size()), header, data.
  std::string write_raw(const std::string& name, const std::string& header, const std::string& data,
                        std::optional<uint64_t> header_len = std::nullopt) {
    const uint64_t n = header_len.value_or(header.size());
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    bytes += header;
    bytes += data;
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  // Opens `p`, expects failure, and checks the message reads "<p>: <context>: ...<what>...".
  void expect_open_error(const std::string& p, const std::string& context, const std::string& what) {
    auto f = SafetensorsFile::open(p);
    ASSERT_FALSE(f.ok()) << p << " opened, expected: " << what;
    const std::string msg(f.status().message());
    EXPECT_EQ(msg.rfind(p + ": " + context + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message: " << msg << "\nexpected: " << what;
  }
  void expect_header_error(const std::string& header, const std::string& data,
                           const std::string& context, const std::string& what) {
    expect_open_error(write_raw("bad.safetensors", header, data), context, what);
  }

  fs::path dir_;
};

std::string bytes_of(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

// ---- round trip ---------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripSeveralDtypesAndShapesBitwise) {
  struct Spec {
    std::string name, dtype;
    std::vector<int64_t> shape;
    size_t elem;
  };
  const std::vector<Spec> specs = {
      {"w.f32", "F32", {2, 3}, 4},     {"w.bf16", "BF16", {4}, 2},    {"ids", "I64", {3}, 8},
      {"empty", "U8", {0}, 1},         {"empty2d", "F32", {3, 0}, 4}, {"scalar", "F32", {}, 4},
      {"i32", "I32", {2, 2}, 4},       {"e4m3", "F8_E4M3", {5}, 1},   {"mask", "BOOL", {3}, 1},
      {"e5m2", "F8_E5M2", {2, 1}, 1},  {"half", "F16", {3}, 2},
  };
  std::vector<std::string> payloads;
  uint32_t seed = 1;
  for (const Spec& s : specs) {
    size_t numel = 1;
    for (int64_t d : s.shape) numel *= static_cast<size_t>(d);
    std::string bytes(numel * s.elem, '\0');
    for (char& c : bytes) c = static_cast<char>((seed = seed * 1664525u + 1013904223u) >> 24);
    if (s.dtype == "BOOL")
      for (char& c : bytes) c &= 1;
    payloads.push_back(bytes);
  }

  const std::string p = path("round_trip.safetensors");
  SafetensorsWriter w;
  for (const Spec& s : specs) w.declare(s.name, s.dtype, s.shape);
  w.set_metadata("format", "pt");
  w.set_metadata("step", "120");
  ASSERT_TRUE(w.open(p).ok());
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSERT_TRUE(w.write(specs[i].name, payloads[i].data(), payloads[i].size()).ok()) << specs[i].name;
  }
  ASSERT_TRUE(w.close().ok());

  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->path(), p);
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "120"}}));
  ASSERT_EQ(f->entries().size(), specs.size());
  // Declaration order is data order; zero-size tensors sort by offset, so compare by name.
  uint64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const SafetensorsEntry* e = f->find(specs[i].name);
    ASSERT_NE(e, nullptr) << specs[i].name;
    EXPECT_EQ(e->dtype, specs[i].dtype);
    EXPECT_EQ(e->shape, specs[i].shape);
    EXPECT_EQ(e->end - e->begin, payloads[i].size());
    EXPECT_EQ(e->begin, total) << "declaration order is data order";
    total += payloads[i].size();
  }
  EXPECT_EQ(f->find("absent"), nullptr);
  // Header padded so the data starts 8-byte aligned, and the file is exactly header + data.
  const uint64_t file_size = fs::file_size(p);
  EXPECT_EQ((file_size - total) % 8, 0u);

  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    if (s.dtype == "F16") {
      auto t = f->read(s.name);
      ASSERT_FALSE(t.ok());
      EXPECT_NE(t.status().message().find("half: dtype F16 has no Strata DType"), std::string::npos)
          << t.status();
      continue;
    }
    auto t = f->read(s.name);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->shape().rank(), static_cast<int>(s.shape.size())) << s.name;
    for (size_t d = 0; d < s.shape.size(); ++d) EXPECT_EQ(t->shape()[static_cast<int>(d)], s.shape[d]);
    EXPECT_EQ(dtype_size(t->dtype()), s.elem);
    ASSERT_EQ(t->nbytes(), payloads[i].size()) << s.name;
    EXPECT_EQ(bytes_of(t->raw(), t->nbytes()), payloads[i]) << s.name;
  }
  EXPECT_EQ(f->read("w.bf16")->dtype(), DType::kBF16);
  EXPECT_EQ(f->read("e4m3")->dtype(), DType::kF8E4M3);
  EXPECT_EQ(f->read("e5m2")->dtype(), DType::kF8E5M2);
  EXPECT_EQ(f->read("ids")->dtype(), DType::kI64);
  EXPECT_EQ(f->read("i32")->dtype(), DType::kI32);
  EXPECT_EQ(f->read("mask")->dtype(), DType::kU8);
  EXPECT_EQ(f->read("scalar")->numel(), 1);

  // Copies share the descriptor and stay usable after the original goes away.
  SafetensorsFile copy = *f;
  f = absl::InternalError("dropped");
  EXPECT_TRUE(copy.read("w.f32").ok());
}

TEST_F(SafetensorsTest, SaveF32WritesSortedNamesAndReadsBack) {
  const std::string p = path("f32.safetensors");
  Tensor b = Tensor::from_f32({2, 2}, {1.0f, -2.5f, 3.25f, 1e-30f});
  Tensor a = Tensor::from_f32({3}, {7.0f, 8.0f, 9.0f});
  Tensor s = Tensor::from_f32({}, {42.0f});
  ASSERT_TRUE(save_safetensors_f32(p, {{"b", b}, {"a", a}, {"s", s}}, {{"k", "v"}}).ok());
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->entries().size(), 3u);
  EXPECT_EQ(f->entries()[0].name, "a");
  EXPECT_EQ(f->entries()[1].name, "b");
  EXPECT_EQ(f->entries()[2].name, "s");
  EXPECT_EQ(f->metadata().at("k"), "v");
  auto rb = f->read_f32("b");
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->shape(), b.shape());
  EXPECT_EQ(std::memcmp(rb->raw(), b.raw(), b.nbytes()), 0);
  EXPECT_EQ(f->read_f32("s")->f32()[0], 42.0f);

  Tensor bf = a.cast(DType::kBF16);
  Status st = save_safetensors_f32(path("x.safetensors"), {{"bf", bf}});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("x.safetensors: bf: is a bf16 tensor"), std::string::npos) << st;
}

TEST_F(SafetensorsTest, EmptyFileAndPaddedHeaderAreValid) {
  auto f = SafetensorsFile::open(write_raw("empty.safetensors", "{}", ""));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->entries().empty());
  const std::string h = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  auto g = SafetensorsFile::open(write_raw("padded.safetensors", "  " + h + "      ", "xy"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(bytes_of(g->read("a")->raw(), 2), "xy");
}

// ---- conversions to f32 -------------------------------------------------------------------------

TEST_F(SafetensorsTest, ReadF32ConvertsEveryBf16F16AndFp8Code) {
  std::vector<uint16_t> codes16(65536);
  for (size_t i = 0; i < codes16.size(); ++i) codes16[i] = static_cast<uint16_t>(i);
  std::vector<uint8_t> codes8(256);
  for (size_t i = 0; i < codes8.size(); ++i) codes8[i] = static_cast<uint8_t>(i);

  const std::string p = path("codes.safetensors");
  SafetensorsWriter w;
  w.declare("bf16", "BF16", {256, 256});
  w.declare("f16", "F16", {65536});
  w.declare("e4m3", "F8_E4M3", {256});
  w.declare("e5m2", "F8_E5M2", {16, 16});
  w.declare("f64", "F64", {3});
  w.declare("i64", "I64", {1});
  const double f64[3] = {1.0 / 3.0, -1e300, 0.5};
  const int64_t i64 = 5;
  ASSERT_TRUE(w.open(p).ok());
  ASSERT_TRUE(w.write("bf16", codes16.data(), 2 * codes16.size()).ok());
  ASSERT_TRUE(w.write("f16", codes16.data(), 2 * codes16.size()).ok());
  ASSERT_TRUE(w.write("e4m3", codes8.data(), 256).ok());
  ASSERT_TRUE(w.write("e5m2", codes8.data(), 256).ok());
  ASSERT_TRUE(w.write("f64", f64, sizeof(f64)).ok());
  ASSERT_TRUE(w.write("i64", &i64, sizeof(i64)).ok());
  ASSERT_TRUE(w.close().ok());
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status();

  auto bf16 = f->read_f32("bf16");
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->shape(), Shape({256, 256}));
  for (size_t i = 0; i < 65536; ++i) {
    ASSERT_EQ(f32_bits(bf16->f32()[i]), f32_bits(bf16_to_f32(codes16[i]))) << "bf16 code " << i;
  }

  auto f16 = f->read_f32("f16");
  ASSERT_TRUE(f16.ok()) << f16.status();
  for (size_t i = 0; i < 65536; ++i) {
    const float got = f16->f32()[i], want = _cvtsh_ss(codes16[i]);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << "f16 code " << i;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << "f16 code " << i;
    } else {
      ASSERT_EQ(f32_bits(got), f32_bits(want)) << "f16 code " << i;
    }
  }
  // A few by hand: 1, -2, max normal, smallest subnormal, largest subnormal, -0, Inf.
  EXPECT_EQ(f16->f32()[0x3c00], 1.0f);
  EXPECT_EQ(f16->f32()[0xc000], -2.0f);
  EXPECT_EQ(f16->f32()[0x7bff], 65504.0f);
  EXPECT_EQ(f16->f32()[0x0001], std::ldexp(1.0f, -24));
  EXPECT_EQ(f16->f32()[0x03ff], std::ldexp(1023.0f, -24));
  EXPECT_EQ(f32_bits(f16->f32()[0x8000]), 0x80000000u);
  EXPECT_EQ(f16->f32()[0x7c00], INFINITY);

  auto e4m3 = f->read_f32("e4m3");
  auto e5m2 = f->read_f32("e5m2");
  ASSERT_TRUE(e4m3.ok() && e5m2.ok());
  for (int c = 0; c < 256; ++c) {
    const float a = e4m3->f32()[c], b = e5m2->f32()[c];
    const float wa = e4m3_to_f32(static_cast<uint8_t>(c)), wb = e5m2_to_f32(static_cast<uint8_t>(c));
    EXPECT_TRUE(std::isnan(wa) ? std::isnan(a) : f32_bits(a) == f32_bits(wa)) << "e4m3 code " << c;
    EXPECT_TRUE(std::isnan(wb) ? std::isnan(b) : f32_bits(b) == f32_bits(wb)) << "e5m2 code " << c;
  }
  EXPECT_EQ(e4m3->f32()[0x7e], 448.0f);
  EXPECT_EQ(e5m2->f32()[0x7b], 57344.0f);

  auto d = f->read_f32("f64");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->f32()[0], static_cast<float>(1.0 / 3.0));
  EXPECT_EQ(d->f32()[1], -INFINITY);

  auto i = f->read_f32("i64");
  ASSERT_FALSE(i.ok());
  EXPECT_EQ(std::string(i.status().message()), p + ": i64: dtype I64 cannot be read as f32");
  auto missing = f->read_f32("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(missing.status().message()), p + ": nope: no such tensor");
}

TEST_F(SafetensorsTest, ReadF32RangeReadsOnlyTheSlice) {
  // 2^20 + 1000 bf16 elements: slices cross the 2^20-element conversion chunk.
  const int64_t n = (1 << 20) + 1000;
  std::vector<uint16_t> bf(n);
  std::vector<float> f32(1000);
  for (int64_t i = 0; i < n; ++i) bf[i] = f32_to_bf16(static_cast<float>(i % 4099) - 2000.0f);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = 0.5f * static_cast<float>(i);
  const std::string p = path("range.safetensors");
  SafetensorsWriter w;
  w.declare("f32", "F32", {10, 100});
  w.declare("bf16", "BF16", {n});
  ASSERT_TRUE(w.open(p).ok());
  ASSERT_TRUE(w.write("f32", f32.data(), 4 * f32.size()).ok());
  ASSERT_TRUE(w.write("bf16", bf.data(), 2 * bf.size()).ok());
  ASSERT_TRUE(w.close().ok());
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok()) << f.status();

  std::vector<float> out(400, -1.0f);
  ASSERT_TRUE(f->read_f32_range("f32", 300, 400, out.data()).ok());
  for (int i = 0; i < 400; ++i) ASSERT_EQ(out[i], 0.5f * static_cast<float>(300 + i));

  const int64_t off = (1 << 20) - 700, count = 1500;  // straddles the chunk boundary
  std::vector<float> slice(count);
  ASSERT_TRUE(f->read_f32_range("bf16", off, count, slice.data()).ok());
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(slice[i], bf16_to_f32(bf[off + i])) << i;
  std::vector<float> all(n);
  ASSERT_TRUE(f->read_f32_range("bf16", 0, n, all.data()).ok());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(all[i], bf16_to_f32(bf[i])) << i;

  EXPECT_TRUE(f->read_f32_range("f32", 1000, 0, nullptr).ok());  // empty slice at the end
  for (auto [o, c] : std::vector<std::pair<int64_t, int64_t>>{{-1, 2}, {0, 1001}, {999, 2}, {1001, 0}, {5, -1}}) {
    Status s = f->read_f32_range("f32", o, c, out.data());
    ASSERT_FALSE(s.ok()) << o << " " << c;
    EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
    EXPECT_NE(s.message().find(p + ": f32: elements ["), std::string::npos) << s;
    EXPECT_NE(s.message().find("out of range for 1000 elements"), std::string::npos) << s;
  }
}

TEST_F(SafetensorsTest, FileTruncatedAfterOpenIsAnErrorNotAShortRead) {
  const std::string p = path("shrinks.safetensors");
  ASSERT_TRUE(save_safetensors_f32(p, {{"x", Tensor::zeros({64}, DType::kF32)}}).ok());
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.ok());
  fs::resize_file(p, fs::file_size(p) - 10);
  auto t = f->read_f32("x");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(p + ": x: cannot read 256 bytes"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("unexpected end of file"), std::string::npos) << t.status();
}

// ---- writer misuse ------------------------------------------------------------------------------

TEST_F(SafetensorsTest, WriterChecksOrderByteCountsAndCompleteness) {
  const std::string p = path("w.safetensors");
  const float data[6] = {};
  {
    SafetensorsWriter w;
    w.declare("a", "F32", {2, 3});
    w.declare("b", "F32", {1});
    Status s = w.write("a", data, 24);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    ASSERT_TRUE(w.open(p).ok());
    s = w.write("b", data, 4);
    EXPECT_EQ(std::string(s.message()), p + ": b: written out of declaration order (expected 'a')");
    s = w.write("c", data, 4);
    EXPECT_EQ(std::string(s.message()), p + ": c: was not declared");
    s = w.write("a", data, 20);
    EXPECT_EQ(std::string(s.message()),
              p + ": a: got 20 bytes, but dtype F32 and shape [2, 3] need 24");
    ASSERT_TRUE(w.write("a", data, 24).ok());
    s = w.write("a", data, 24);
    EXPECT_NE(s.message().find("expected 'b'"), std::string::npos) << s;
    s = w.close();
    EXPECT_EQ(std::string(s.message()),
              p + ": b: declared but not written before close() (1 tensors missing; the file is "
                  "incomplete)");
  }
  auto expect_open_fails = [&](SafetensorsWriter& w, const std::string& want) {
    Status s = w.open(p);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(std::string(s.message()), p + ": " + want);
  };
  {
    SafetensorsWriter w;
    w.declare("x", "f32", {1});
    expect_open_fails(w, "x: unknown or unsupported dtype 'f32'");
  }
  {
    SafetensorsWriter w;
    w.declare("x", "F32", {1});
    w.declare("x", "F32", {2});
    expect_open_fails(w, "x: declared twice");
  }
  {
    SafetensorsWriter w;
    w.declare("x", "F32", {2, -1});
    expect_open_fails(w, "x: shape [2, -1] of F32 has a negative extent or overflows");
  }
  {
    SafetensorsWriter w;
    w.declare("__metadata__", "F32", {1});
    expect_open_fails(w, "__metadata__: is reserved for metadata");
  }
  {
    SafetensorsWriter w;
    w.declare("x", "U8", {1});
    ASSERT_TRUE(w.open(p).ok());
    ASSERT_TRUE(w.write("x", "!", 1).ok());
    Status s = w.write("x", "!", 1);
    EXPECT_EQ(std::string(s.message()), p + ": x: written twice");
    ASSERT_TRUE(w.close().ok());
    EXPECT_FALSE(w.close().ok());
  }
  SafetensorsWriter w;
  Status s = w.open(path("no/such/dir/x.safetensors"));
  EXPECT_NE(s.message().find("no/such/dir/x.safetensors: header: cannot open for writing"),
            std::string::npos) << s;
}

// ---- malformed files ----------------------------------------------------------------------------

TEST_F(SafetensorsTest, RejectsFilesTooShortOrWithImpossibleHeaderLengths) {
  const std::string tiny = path("tiny.safetensors");
  std::ofstream(tiny, std::ios::binary) << "abcde";
  expect_open_error(tiny, "header", "file is 5 bytes, shorter than the 8-byte header length");
  const std::string empty = path("empty.safetensors");
  std::ofstream(empty, std::ios::binary).flush();
  expect_open_error(empty, "header", "file is 0 bytes");

  expect_open_error(write_raw("huge.safetensors", "{}", "", uint64_t{1} << 60), "header",
                    "header length 1152921504606846976 exceeds the limit of 100000000");
  expect_open_error(write_raw("max.safetensors", "{}", "", 100000001), "header",
                    "header length 100000001 exceeds the limit");
  expect_open_error(write_raw("u64max.safetensors", "{}", "", ~uint64_t{0}), "header",
                    "header length 18446744073709551615 exceeds the limit");
  // The header length claims more than the file holds.
  expect_open_error(write_raw("t.safetensors", "{}", "", 1000), "header",
                    "header length 1000 exceeds the 2 bytes after the length field: file truncated?");
  EXPECT_TRUE(SafetensorsFile::open(write_raw("ok.safetensors", "{}", "")).ok());

  expect_open_error(dir_.string(), "header", "not a regular file");
  auto missing = SafetensorsFile::open(path("absent.safetensors"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("absent.safetensors: header: cannot open"), std::string::npos);
}

TEST_F(SafetensorsTest, RejectsDataCutShort) {
  // A good file from the writer, with its last bytes cut off.
  const std::string p = path("cut.safetensors");
  ASSERT_TRUE(save_safetensors_f32(p, {{"a", Tensor::zeros({4}, DType::kF32)},
                                       {"b", Tensor::zeros({4}, DType::kF32)}}).ok());
  fs::resize_file(p, fs::file_size(p) - 4);
  expect_open_error(p, "b", "data_offsets [16, 32] end beyond the data buffer (28 bytes): file truncated?");
}

TEST_F(SafetensorsTest, RejectsBadOffsets) {
  const std::string data(16, 'x');
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[16,8]}})", data, "a",
                      "data_offsets [16, 8]: end < begin");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", data, "a",
                      "data_offsets [0, 32] end beyond the data buffer (16 bytes)");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", data, "a",
                      "\"data_offsets\" must be two non-negative integers, got [0]");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-4,12]}})", data, "a",
                      "\"data_offsets\" must be two non-negative integers, got [-4,12]");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16.0]}})", data, "a",
                      "\"data_offsets\" must be two non-negative integers");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":["0","16"]}})", data, "a",
                      "\"data_offsets\" must be two non-negative integers");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4]}})", data, "a",
                      "\"data_offsets\" must be two non-negative integers, got nothing");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,99999999999999999999]}})",
                      data, "a", "\"data_offsets\" must be two non-negative integers");
}

TEST_F(SafetensorsTest, RejectsOverlapsGapsAndTrailingBytes) {
  expect_header_error(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                      R"("b":{"dtype":"U8","shape":[16],"data_offsets":[8,24]}})",
                      std::string(24, 'x'), "b", "data_offsets [8, 24] overlap 'a' data_offsets [0, 16]");
  // Overlap listed in the other order in the header: found after sorting by offset.
  expect_header_error(R"({"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]},)"
                      R"("a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                      std::string(12, 'x'), "b", "overlap 'a'");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"U8","shape":[8],"data_offsets":[16,24]}})",
                      std::string(24, 'x'), "b",
                      "gap of 8 bytes before data_offsets [16, 24] after 'a', which ends at 8");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[8,16]}})", std::string(16, 'x'),
                      "a", "gap of 8 bytes before data_offsets [8, 16] at the start of the data buffer");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", std::string(12, 'x'),
                      "header", "4 bytes of data after the last tensor");
  expect_header_error("{}", "xyz", "header", "3 bytes of data after the last tensor");
}

TEST_F(SafetensorsTest, RejectsBadDtypesAndShapes) {
  const std::string data(12, 'x');
  expect_header_error(R"({"a":{"dtype":"F33","shape":[3],"data_offsets":[0,12]}})", data, "a",
                      "unknown or unsupported dtype 'F33'");
  expect_header_error(R"({"a":{"dtype":"f32","shape":[3],"data_offsets":[0,12]}})", data, "a",
                      "unknown or unsupported dtype 'f32'");
  expect_header_error(R"({"a":{"dtype":32,"shape":[3],"data_offsets":[0,12]}})", data, "a",
                      "missing or non-string \"dtype\"");
  expect_header_error(R"({"a":{"shape":[3],"data_offsets":[0,12]}})", data, "a",
                      "missing or non-string \"dtype\"");
  expect_header_error(R"({"a":{"dtype":"F32","data_offsets":[0,12]}})", data, "a",
                      "missing or non-array \"shape\"");
  expect_header_error(R"({"a":{"dtype":"F32","shape":3,"data_offsets":[0,12]}})", data, "a",
                      "missing or non-array \"shape\"");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[3,-1],"data_offsets":[0,12]}})", data, "a",
                      "shape[1] = -1 is not a non-negative integer");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[3.0],"data_offsets":[0,12]}})", data, "a",
                      "shape[0] = 3.0 is not a non-negative integer");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,12]}})",
                      data, "a", "shape[0] = 9223372036854775808 is not a non-negative integer");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,12]}})",
                      data, "a", "shape [4294967296, 4294967296] of F32 overflows a 64-bit byte count");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[4611686018427387904],"data_offsets":[0,12]}})",
                      data, "a", "need 4611686018427387904 bytes");
  // Byte range inconsistent with dtype and shape.
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", data, "a",
                      "dtype F32 and shape [2] need 8 bytes, but data_offsets [0, 12] hold 12");
  expect_header_error(R"({"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,12]}})", data, "a",
                      "dtype BF16 and shape [2, 2] need 8 bytes");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[],"data_offsets":[0,12]}})", data, "a",
                      "dtype F32 and shape [] need 4 bytes");
  expect_header_error(R"({"a":[1,2,3]})", data, "a", "entry is not a JSON object");
  // Too many dimensions for a Tensor: opens, read() says so, read_f32_range still works.
  auto f = SafetensorsFile::open(write_raw(
      "rank7.safetensors", R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1],"data_offsets":[0,1]}})", "x"));
  ASSERT_TRUE(f.ok()) << f.status();
  auto t = f->read("a");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(": a: shape [1, 1, 1, 1, 1, 1, 1] has more than 6 dimensions"),
            std::string::npos) << t.status();
}

TEST_F(SafetensorsTest, RejectsHeadersThatAreNotAJsonObject) {
  expect_header_error("{not json", "", "header", "header is not valid JSON: ");
  expect_header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} trailing)", "x", "header",
                      "header is not valid JSON");
  expect_header_error("[1, 2]", "", "header", "header is not a JSON object");
  expect_header_error("  [{}]", "", "header", "header is not a JSON object");
  expect_header_error("", "", "header", "header is not a JSON object");
  expect_header_error(std::string("{\"a\xff\":1}"), "", "header", "header is not valid JSON");
  expect_header_error(std::string("{}\0\0\0\0", 6), "", "header", "header is not valid JSON");
  expect_header_error(R"({"__metadata__":{"k":1}})", "", "__metadata__", "value of 'k' is not a string");
  expect_header_error(R"({"__metadata__":[]})", "", "__metadata__", "is not a JSON object of strings");
}

TEST_F(SafetensorsTest, RejectsDuplicateKeys) {
  expect_header_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      "xy", "a", "duplicate key in the header (each tensor name must be unique)");
  expect_header_error(R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "x", "a",
                      "duplicate key 'dtype'");
  expect_header_error(R"({"__metadata__":{"k":"1","k":"2"}})", "", "__metadata__", "duplicate key 'k'");
  // The same key in two different objects is fine.
  EXPECT_TRUE(SafetensorsFile::open(write_raw("ok.safetensors",
                                              R"({"__metadata__":{"a":"x"},"a":{"dtype":"U8",)"
                                              R"("shape":[1],"data_offsets":[0,1]}})",
                                              "x")).ok());
}

// Random byte flips, truncations and header-length changes of a valid file: every result either
// opens and reads back (every tensor, in range) or is an error, never a crash (run under ASan).
TEST_F(SafetensorsTest, RandomCorruptionsAreErrorsNotCrashes) {
  const std::string good = path("good.safetensors");
  SafetensorsWriter w;
  w.declare("a", "F32", {2, 3});
  w.declare("b", "BF16", {5});
  w.declare("c", "U8", {0});
  w.declare("d", "F8_E4M3", {3});
  w.set_metadata("k", "v");
  const uint8_t payload[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  ASSERT_TRUE(w.open(good).ok());
  ASSERT_TRUE(w.write("a", payload, 24).ok());
  ASSERT_TRUE(w.write("b", payload, 10).ok());
  ASSERT_TRUE(w.write("c", payload, 0).ok());
  ASSERT_TRUE(w.write("d", payload, 3).ok());
  ASSERT_TRUE(w.close().ok());
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  uint32_t seed = 12345;
  auto next = [&] { return (seed = seed * 1664525u + 1013904223u) >> 8; };
  const char kJsonish[] = "{}[]\",:0123456789-. e";
  int opened = 0;
  for (int iter = 0; iter < 600; ++iter) {
    std::string b = bytes;
    switch (iter % 3) {
      case 0:  // flip header bytes to JSON-significant characters
        for (uint32_t k = 0, n = 1 + next() % 3; k < n; ++k)
          b[8 + next() % (b.size() - 8)] = kJsonish[next() % (sizeof(kJsonish) - 1)];
        break;
      case 1:  // truncate
        b.resize(next() % b.size());
        break;
      case 2:  // change one byte of the length field
        b[next() % 8] = static_cast<char>(next());
        break;
    }
    const std::string p = path("fuzz.safetensors");
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
    auto f = SafetensorsFile::open(p);
    if (!f.ok()) {
      EXPECT_EQ(std::string(f.status().message()).rfind(p + ": ", 0), 0u) << f.status();
      continue;
    }
    ++opened;
    for (const SafetensorsEntry& e : f->entries()) {
      const auto r = f->read(e.name);
      const auto g = f->read_f32(e.name);
      EXPECT_TRUE(r.ok() || g.ok() || e.shape.size() > 6 || e.dtype == "F16" || e.dtype == "U16")
          << e.name << " " << e.dtype;
    }
  }
  EXPECT_GT(opened, 0);  // some mutations are harmless (a digit in a padding-free spot, ...)
}

}  // namespace
}  // namespace strata
