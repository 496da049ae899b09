// Checkpoints: a round trip of f32/bf16 tensors saved as whole tensors, offset blocks and flat
// ranges, read back as any block or flat range; latest, keep_last and stale *.tmp handling; a crash
// at every stage of a save leaves the previous checkpoint loadable; truncation, a flipped bit and a
// broken manifest are refused by name. CRC-32C itself is tested in tests/core/crc32c_test.cc.
#include "trainer/checkpoint.h"

#include <unistd.h>  // getpid

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/crc32c.h"  // crc32c: rewriting a manifest with a valid checksum

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// A fresh directory under the system temp dir, removed at the end of the test.
class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() / ("strata_ckpt_" + std::to_string(::getpid()) + "_" +
                                         info->test_suite_name() + "_" + info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string root() const { return root_.string(); }
  std::string step_dir(int step) const {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "step_%06d", step);
    return (root_ / buf).string();
  }

  fs::path root_;
};

// ---- a model-like set of tensors ----------------------------------------------------------------

std::vector<float> random_values(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

Shape to_shape(const std::vector<int64_t>& v) {
  Shape s;
  for (int64_t d : v) s.push_back(d);
  return s;
}

// One global tensor (reference values, already rounded to its dtype) and the pieces a rank holds.
struct Global {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major, exactly representable in dtype
};

Global make_global(const std::string& name, DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  Global g{name, dtype, shape, {}};
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  g.values = random_values(n, seed);
  if (dtype == DType::kBF16) round_to_dtype_n(g.values.data(), g.values.size(), DType::kBF16);
  return g;
}

// The block [offset, offset + shape) of g as a tensor of g's dtype.
Tensor block_of(const Global& g, const std::vector<int64_t>& offset, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  const int r = static_cast<int>(shape.size());
  std::vector<int64_t> idx(r, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t flat = 0;
    for (int d = 0; d < r; ++d) flat = flat * g.shape[d] + offset[d] + idx[d];
    v[static_cast<size_t>(i)] = g.values[static_cast<size_t>(flat)];
    for (int d = r - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  Tensor t = Tensor::from_f32(to_shape(shape), v);
  return g.dtype == DType::kF32 ? t : t.cast(g.dtype);
}

Tensor flat_of(const Global& g, int64_t begin, int64_t count) {
  std::vector<float> v(g.values.begin() + begin, g.values.begin() + begin + count);
  Tensor t = Tensor::from_f32({count}, v);
  return g.dtype == DType::kF32 ? t : t.cast(g.dtype);
}

// Globals saved as: whole tensors, a 2x2 grid of blocks, flat ranges (listed out of order),
// blocks along a middle dimension, and a scalar.
struct Model {
  std::vector<Global> globals;
  std::vector<Tensor> storage;  // keeps the pieces alive
  std::vector<CheckpointTensor> pieces;

  explicit Model(uint32_t seed = 1) {
    globals.push_back(make_global("embed", DType::kF32, {3, 5}, seed + 1));
    globals.push_back(make_global("norm", DType::kBF16, {4, 6}, seed + 2));
    globals.push_back(make_global("layers.0.attn.wq", DType::kF32, {6, 8}, seed + 3));
    globals.push_back(make_global("optim.m.layers.0.attn.wq", DType::kF32, {5, 7}, seed + 4));
    globals.push_back(make_global("layers.0.moe.experts", DType::kBF16, {2, 3, 4}, seed + 5));
    globals.push_back(make_global("optim.step_scale", DType::kF32, {}, seed + 6));
    storage.reserve(16);
    add_block(0, {0, 0}, {3, 5}, /*global_shape=*/false);
    add_block(1, {0, 0}, {4, 6}, false);
    add_block(2, {3, 5}, {3, 3});  // the grid, out of order
    add_block(2, {0, 0}, {3, 5});
    add_block(2, {3, 0}, {3, 5});
    add_block(2, {0, 5}, {3, 3});
    add_flat(3, 13, 22);
    add_flat(3, 0, 13);
    add_block(4, {0, 1, 0}, {2, 2, 4});
    add_block(4, {0, 0, 0}, {2, 1, 4});
    add_block(5, {}, {}, false);
    pieces.back().replicated = true;
  }
  void add_block(int gi, std::vector<int64_t> offset, std::vector<int64_t> shape, bool global_shape = true) {
    const Global& g = globals[gi];
    storage.push_back(block_of(g, offset.empty() ? std::vector<int64_t>(g.shape.size(), 0) : offset, shape));
    CheckpointTensor ct;
    ct.name = g.name;
    ct.tensor = &storage.back();
    if (global_shape) ct.global_shape = g.shape;
    ct.offset = offset;
    pieces.push_back(ct);
  }
  void add_flat(int gi, int64_t begin, int64_t count) {
    const Global& g = globals[gi];
    storage.push_back(flat_of(g, begin, count));
    CheckpointTensor ct;
    ct.name = g.name;
    ct.tensor = &storage.back();
    ct.global_shape = g.shape;
    ct.flat_range = true;
    ct.flat_begin = begin;
    pieces.push_back(ct);
  }
};

CheckpointMeta make_meta(int64_t step) {
  CheckpointMeta meta;
  meta.step = step;
  meta.config_yaml = "model:\n  arch: llama\noptim:\n  lr: 0.001\n";
  meta.layout = {{"world", 1}, {"dp", 1}, {"pp", 1}, {"ep", 1}};
  meta.trainer_state = {{"data", {{"shard", 3}, {"offset", 123456789012}}},
                        {"rng", {{"state", 18446744073709551557ull}}},
                        {"loss_scale", 0.1},
                        {"router_bias", {0.25, -1e-30, 3.0000000000000004}}};
  return meta;
}

// Reads every element of every tensor and compares with the reference values.
void expect_matches(const Checkpoint& c, const Model& m) {
  for (const Global& g : m.globals) {
    ASSERT_EQ(c.global_shape(g.name), g.shape) << g.name;
    std::vector<float> got(g.values.size(), -7.f);
    ASSERT_TRUE(c.read_flat(g.name, 0, static_cast<int64_t>(got.size()), got.data()).ok()) << g.name;
    EXPECT_EQ(got, g.values) << g.name;
  }
}

TEST_F(CheckpointTest, RoundTripOfWholeTensorsBlocksAndFlatRanges) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(120), m.pieces, 0).ok());
  auto dir = resolve_checkpoint(root());
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, step_dir(120));
  auto c = Checkpoint::open(*dir);
  ASSERT_TRUE(c.ok()) << c.status();

  EXPECT_EQ(c->tensor_names(),
            (std::vector<std::string>{"embed", "norm", "layers.0.attn.wq", "optim.m.layers.0.attn.wq",
                                      "layers.0.moe.experts", "optim.step_scale"}));
  EXPECT_EQ(c->dtype("norm"), "BF16");
  EXPECT_EQ(c->dtype("embed"), "F32");
  EXPECT_TRUE(c->has_tensor("optim.step_scale"));
  EXPECT_FALSE(c->has_tensor("nope"));
  expect_matches(*c, m);

  const CheckpointMeta want = make_meta(120);
  EXPECT_EQ(c->meta().step, 120);
  EXPECT_EQ(c->meta().config_yaml, want.config_yaml);
  EXPECT_EQ(c->meta().layout, want.layout);
  EXPECT_EQ(c->meta().trainer_state, want.trainer_state);  // exact, incl. uint64 and doubles
  EXPECT_EQ(read_text(root_ / "step_000120" / "config.yaml"), want.config_yaml);
}

TEST_F(CheckpointTest, AnyBlockOrFlatRangeAssemblesAcrossSlices) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(1), m.pieces, 0).ok());
  auto c = Checkpoint::open(step_dir(1));
  ASSERT_TRUE(c.ok()) << c.status();

  // A block touching all four blocks of the grid.
  std::vector<float> out(12);
  ASSERT_TRUE(c->read_block("layers.0.attn.wq", {2, 3}, {3, 4}, out.data()).ok());
  const Global& wq = m.globals[2];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(out[i * 4 + j], wq.values[(2 + i) * 8 + 3 + j]) << i << "," << j;
  }
  // A block of a tensor saved as flat ranges, across the boundary at element 13 (row 1, col 6).
  out.assign(8, 0.f);
  ASSERT_TRUE(c->read_block("optim.m.layers.0.attn.wq", {1, 4}, {2, 3}, out.data()).ok());
  const Global& om = m.globals[3];
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(out[i * 3 + j], om.values[(1 + i) * 7 + 4 + j]);
  }

  // Random blocks and flat ranges of every tensor against the reference.
  std::mt19937 rng(3);
  for (const Global& g : m.globals) {
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<int64_t> off, shape;
      for (int64_t d : g.shape) {
        const int64_t a = rng() % (d + 1), b = rng() % (d + 1);
        off.push_back(std::min(a, b));
        shape.push_back(std::max(a, b) - std::min(a, b));
      }
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<float> got(static_cast<size_t>(n), -7.f);
      ASSERT_TRUE(c->read_block(g.name, off, shape, got.data()).ok()) << g.name;
      Tensor want = block_of(g, off, shape).cast(DType::kF32);
      ASSERT_EQ(got, std::vector<float>(want.f32(), want.f32() + n)) << g.name << " trial " << trial;

      const int64_t total = static_cast<int64_t>(g.values.size());
      const int64_t a = rng() % (total + 1), b = rng() % (total + 1);
      const int64_t begin = std::min(a, b), count = std::max(a, b) - begin;
      got.assign(static_cast<size_t>(count), -7.f);
      ASSERT_TRUE(c->read_flat(g.name, begin, count, got.data()).ok());
      ASSERT_EQ(got, std::vector<float>(g.values.begin() + begin, g.values.begin() + begin + count));
    }
  }

  // Requests outside the tensor and unknown names are errors, not partial reads.
  Status s = c->read_block("layers.0.attn.wq", {4, 0}, {3, 8}, out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(
      std::string(s.message()),
      HasSubstr("layers.0.attn.wq: block at offset [4, 0] of shape [3, 8] is out of range for [6, 8]"));
  EXPECT_EQ(c->read_block("layers.0.attn.wq", {0}, {3}, out.data()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(c->read_flat("embed", 10, 6, out.data()).code(), absl::StatusCode::kOutOfRange);
  s = c->read_flat("layers.9.attn.wq", 0, 1, out.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("layers.9.attn.wq: no such tensor"));
}

TEST_F(CheckpointTest, ManifestListsEverySliceWithItsChecksum) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(5), m.pieces, 0).ok());
  const auto manifest = nlohmann::json::parse(read_text(root_ / "step_000005" / "manifest.json"));
  EXPECT_EQ(manifest["format"], "strata-checkpoint");
  EXPECT_EQ(manifest["format_version"], 1);
  EXPECT_EQ(manifest["step"], 5);
  EXPECT_EQ(manifest["files"][0]["file"], "rank-00000.safetensors");
  const auto& wq = manifest["tensors"]["layers.0.attn.wq"];
  EXPECT_EQ(wq["dtype"], "F32");
  EXPECT_EQ(wq["shape"], nlohmann::json({6, 8}));
  ASSERT_EQ(wq["slices"].size(), 4u);
  EXPECT_EQ(wq["slices"][0]["offset"], nlohmann::json({3, 5}));
  EXPECT_EQ(wq["slices"][0]["shape"], nlohmann::json({3, 3}));
  EXPECT_EQ(wq["slices"][0]["crc32c"].get<std::string>().size(), 8u);
  EXPECT_EQ(manifest["tensors"]["optim.m.layers.0.attn.wq"]["slices"][0]["flat"], nlohmann::json({13, 22}));
  EXPECT_EQ(manifest["tensors"]["optim.step_scale"]["replicated"], true);
  // The rank file is an ordinary safetensors file; a tensor in one piece keeps its own name.
  auto f = SafetensorsFile::open((root_ / "step_000005" / "rank-00000.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_NE(f->find("embed"), nullptr);
  EXPECT_NE(f->find("layers.0.attn.wq#0"), nullptr);
}

TEST_F(CheckpointTest, SaveRefusesSlicesThatDoNotTileTheTensor) {
  Tensor a = Tensor::from_f32({2, 4}, std::vector<float>(8, 1.f));
  Tensor b = Tensor::from_f32({2, 4}, std::vector<float>(8, 2.f));
  auto piece = [](const Tensor* t, std::vector<int64_t> offset) {
    CheckpointTensor ct;
    ct.name = "w";
    ct.tensor = t;
    ct.global_shape = {4, 4};
    ct.offset = offset;
    return ct;
  };
  Status s = save_checkpoint(root(), make_meta(1), {piece(&a, {0, 0}), piece(&b, {1, 0})}, 0);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("w: block at offset [0, 0] of shape [2, 4] overlaps block at offset [1, 0]"));
  s = save_checkpoint(root(), make_meta(1), {piece(&a, {0, 0})}, 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("w: the slices hold 8 of the 16 elements"));
  s = save_checkpoint(root(), make_meta(1), {piece(&a, {3, 0})}, 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("out of range for the global shape [4, 4]"));
  Tensor c = b.cast(DType::kBF16);
  s = save_checkpoint(root(), make_meta(1), {piece(&a, {0, 0}), piece(&c, {2, 0})}, 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("w: this slice is BF16"));
  EXPECT_TRUE(list_checkpoints(root()).empty());
  EXPECT_FALSE(fs::exists(root_ / "latest"));
}

// ---- latest, keep_last, stale saves -------------------------------------------------------------

TEST_F(CheckpointTest, LatestFollowsEachSaveAndKeepLastPrunesOlderSteps) {
  Model m;
  for (int step = 1; step <= 5; ++step) {
    ASSERT_TRUE(save_checkpoint(root(), make_meta(step * 10), m.pieces, 3).ok());
    EXPECT_EQ(read_text(root_ / "latest"), "step_0000" + std::to_string(step * 10) + "\n");
    EXPECT_EQ(*resolve_checkpoint(root()), step_dir(step * 10));
  }
  EXPECT_EQ(list_checkpoints(root()), (std::vector<std::string>{step_dir(30), step_dir(40), step_dir(50)}));
  EXPECT_FALSE(fs::exists(root_ / "latest.tmp"));
  // keep_last = 0 keeps everything.
  ASSERT_TRUE(save_checkpoint(root(), make_meta(60), m.pieces, 0).ok());
  EXPECT_EQ(list_checkpoints(root()).size(), 4u);
  // A save at a lower step (resumed from an older checkpoint) keeps itself and leaves higher ones.
  ASSERT_TRUE(save_checkpoint(root(), make_meta(35), m.pieces, 1).ok());
  EXPECT_EQ(list_checkpoints(root()),
            (std::vector<std::string>{step_dir(35), step_dir(40), step_dir(50), step_dir(60)}));
  EXPECT_EQ(*resolve_checkpoint(root()), step_dir(35));
  // Re-saving an existing step replaces it atomically.
  Model other(99);
  ASSERT_TRUE(save_checkpoint(root(), make_meta(50), other.pieces, 0).ok());
  auto c = Checkpoint::open(step_dir(50));
  ASSERT_TRUE(c.ok()) << c.status();
  expect_matches(*c, other);
  EXPECT_EQ(list_checkpoints(root()).size(), 4u);
}

TEST_F(CheckpointTest, StaleTmpDirectoriesAreIgnoredRefusedAndCleaned) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(10), m.pieces, 0).ok());
  fs::create_directories(root_ / "step_000020.tmp");
  write_text(root_ / "step_000020.tmp" / "rank-00000.safetensors", "partial");
  EXPECT_EQ(list_checkpoints(root()), std::vector<std::string>{step_dir(10)});
  EXPECT_EQ(*resolve_checkpoint(root()), step_dir(10));
  auto r = resolve_checkpoint((root_ / "step_000020.tmp").string());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("step_000020.tmp: an unfinished save"));
  ASSERT_TRUE(save_checkpoint(root(), make_meta(30), m.pieces, 0).ok());
  EXPECT_FALSE(fs::exists(root_ / "step_000020.tmp"));
  EXPECT_EQ(list_checkpoints(root()), (std::vector<std::string>{step_dir(10), step_dir(30)}));
}

TEST_F(CheckpointTest, CrashAtAnyStageLeavesThePreviousCheckpointLoadable) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(10), m.pieces, 1).ok());
  Model newer(5);
  for (const char* stage : {"rank_file", "trainer_state", "manifest", "rename", "latest", "prune"}) {
    SCOPED_TRACE(stage);
    Status s = save_checkpoint(root(), make_meta(20), newer.pieces, 1,
                               [&](std::string_view at) { return at == stage; });
    ASSERT_EQ(s.code(), absl::StatusCode::kAborted) << s;
    const bool published = std::string_view(stage) == "latest" || std::string_view(stage) == "prune";
    auto dir = resolve_checkpoint(root());
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_EQ(*dir, step_dir(published && std::string_view(stage) == "prune" ? 20 : 10));
    auto c = Checkpoint::open(step_dir(10));  // still there: pruning never ran
    ASSERT_TRUE(c.ok()) << c.status();
    expect_matches(*c, m);
    EXPECT_EQ(fs::exists(step_dir(20)), published);
    fs::remove_all(step_dir(20));
    fs::remove_all(step_dir(20) + ".tmp");
    write_text(root_ / "latest", "step_000010\n");
  }
  // And the next save after a crash succeeds and cleans up.
  ASSERT_TRUE(save_checkpoint(root(), make_meta(20), newer.pieces, 0, [](std::string_view at) {
                return at == "rename";
              }).code() == absl::StatusCode::kAborted);
  ASSERT_TRUE(save_checkpoint(root(), make_meta(20), newer.pieces, 1).ok());
  EXPECT_EQ(list_checkpoints(root()), std::vector<std::string>{step_dir(20)});
  EXPECT_FALSE(fs::exists(step_dir(20) + ".tmp"));
  auto c = Checkpoint::open(*resolve_checkpoint(root()));
  ASSERT_TRUE(c.ok()) << c.status();
  expect_matches(*c, newer);
}

// ---- corruption -----------------------------------------------------------------------------------

// The absolute byte offset of tensor `key`'s data in a safetensors file.
uint64_t data_offset_of(const std::string& path, const std::string& key) {
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  uint64_t data = 0;
  for (const auto& e : f->entries()) data = std::max(data, e.end);
  return fs::file_size(path) - data + f->find(key)->begin;
}

void flip_bit(const std::string& path, uint64_t byte, int bit) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(byte));
  char c;
  f.read(&c, 1);
  c = static_cast<char>(c ^ (1 << bit));
  f.seekp(static_cast<std::streamoff>(byte));
  f.write(&c, 1);
}

TEST_F(CheckpointTest, FlippedBitIsRefusedNamingFileAndTensorAndThePreviousStillLoads) {
  Model old_model(1), new_model(2);
  ASSERT_TRUE(save_checkpoint(root(), make_meta(10), old_model.pieces, 0).ok());
  ASSERT_TRUE(save_checkpoint(root(), make_meta(20), new_model.pieces, 0).ok());
  const std::string file = step_dir(20) + "/rank-00000.safetensors";
  flip_bit(file, data_offset_of(file, "layers.0.attn.wq#2") + 5, 3);

  auto c = Checkpoint::open(*resolve_checkpoint(root()));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(c.status().message()), StartsWith(file + ": layers.0.attn.wq: checksum mismatch"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("slice \"layers.0.attn.wq#2\""));
  // Without verification the damage goes unseen: verification is what catches it.
  EXPECT_TRUE(Checkpoint::open(step_dir(20), /*verify=*/false).ok());

  auto prev = Checkpoint::open(step_dir(10));
  ASSERT_TRUE(prev.ok()) << prev.status();
  expect_matches(*prev, old_model);
}

// Every byte of every file of a checkpoint is under a checksum: a single flipped bit anywhere is refused.
TEST_F(CheckpointTest, EverySingleBitFlipIsRefused) {
  // Small, so that flipping one bit of every byte stays fast: two blocks and two flat ranges.
  Tensor w0 = Tensor::from_f32({1, 3}, {1, 2, 3}), w1 = Tensor::from_f32({1, 3}, {4, 5, 6});
  Tensor m0 = Tensor::from_f32({1}, {0.5f}).cast(DType::kBF16),
         m1 = Tensor::from_f32({3}, {1, 2, 3}).cast(DType::kBF16);
  std::vector<CheckpointTensor> pieces(4);
  pieces[0] = {"w", &w0, {2, 3}, {0, 0}};
  pieces[1] = {"w", &w1, {2, 3}, {1, 0}};
  pieces[2] = {"m", &m0, {4}, {}, /*flat_range=*/true, 0};
  pieces[3] = {"m", &m1, {4}, {}, /*flat_range=*/true, 1};
  CheckpointMeta meta;
  meta.step = 10;
  meta.config_yaml = "optim:\n  lr: 0.1\n";
  meta.trainer_state = {{"data", 7}};
  ASSERT_TRUE(save_checkpoint(root(), meta, pieces, 0).ok());
  const std::string dir = step_dir(10);
  for (const char* name : {"rank-00000.safetensors", "manifest.json", "trainer_state.json", "config.yaml"}) {
    const std::string path = dir + "/" + name;
    const uint64_t size = fs::file_size(path);
    for (uint64_t i = 0; i < size; ++i) {
      flip_bit(path, i, static_cast<int>(i % 8));
      ASSERT_FALSE(Checkpoint::open(dir).ok())
          << name << ": flipping bit " << i % 8 << " of byte " << i << " went unnoticed";
      flip_bit(path, i, static_cast<int>(i % 8));  // in place: rewriting whole files waits on the disk
    }
  }
  ASSERT_TRUE(Checkpoint::open(dir).ok());
}

TEST_F(CheckpointTest, TruncatedRankFileIsRefusedNamingTheFirstTensorCut) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(10), m.pieces, 0).ok());
  ASSERT_TRUE(save_checkpoint(root(), make_meta(20), m.pieces, 0).ok());
  const std::string file = step_dir(20) + "/rank-00000.safetensors";
  // Cut in the middle of the flat range [0, 13) of the optimizer state (the 8th piece written).
  fs::resize_file(file, data_offset_of(file, "optim.m.layers.0.attn.wq#1") + 10);
  for (bool verify : {true, false}) {
    auto c = Checkpoint::open(step_dir(20), verify);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(c.status().message()),
                StartsWith(file + ": optim.m.layers.0.attn.wq: truncated (the file is "));
  }
  auto prev = Checkpoint::open(step_dir(10));
  ASSERT_TRUE(prev.ok()) << prev.status();
  expect_matches(*prev, m);
}

// Rewrites manifest.json from `j` with a valid manifest_crc32c (the crc32c of the text before its
// last field), as a deliberate hand edit would have to.
void write_manifest(const fs::path& path, nlohmann::ordered_json j) {
  j.erase("manifest_crc32c");
  std::string body = j.dump(1);
  body.resize(body.size() - 2);  // "\n}"
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08x", crc32c(body.data(), body.size()));
  write_text(path, body + ",\n \"manifest_crc32c\": \"" + hex + "\"\n}\n");
}

TEST_F(CheckpointTest, BrokenManifestOrMissingFilesAreRefusedByName) {
  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(10), m.pieces, 0).ok());
  const std::string dir = step_dir(10);
  const std::string manifest_path = dir + "/manifest.json";
  const std::string good = read_text(manifest_path);
  auto open_error = [&]() {
    auto c = Checkpoint::open(dir);
    EXPECT_FALSE(c.ok());
    return c.ok() ? std::string() : std::string(c.status().message());
  };

  write_text(manifest_path, good.substr(0, good.size() / 2));
  EXPECT_THAT(open_error(), StartsWith(manifest_path + ": not valid JSON"));

  auto j = nlohmann::ordered_json::parse(good);
  j["format_version"] = 99;
  write_text(manifest_path, j.dump());
  EXPECT_EQ(open_error(),
            manifest_path + ": format_version 99 is not supported (this build reads version 1)");

  // An edit that keeps the JSON valid is caught by the manifest's own checksum...
  j = nlohmann::ordered_json::parse(good);
  j["step"] = 11;
  write_text(manifest_path, j.dump(1));
  EXPECT_THAT(open_error(), StartsWith(manifest_path + ": checksum mismatch (manifest_crc32c "));
  write_manifest(manifest_path, j);
  auto edited = Checkpoint::open(dir);
  ASSERT_TRUE(edited.ok()) << edited.status();
  EXPECT_EQ(edited->meta().step, 11);

  // ...and a consistent but malformed one by the structural checks.
  j = nlohmann::ordered_json::parse(good);
  j["tensors"]["embed"].erase("dtype");
  write_manifest(manifest_path, j);
  EXPECT_EQ(open_error(), manifest_path + ": tensors.embed.dtype: missing");

  j = nlohmann::ordered_json::parse(good);
  j["tensors"]["layers.0.attn.wq"]["slices"].erase(1);
  write_manifest(manifest_path, j);
  EXPECT_THAT(open_error(), HasSubstr(": tensors.layers.0.attn.wq: the slices hold 33 of the 48 elements"));

  j = nlohmann::ordered_json::parse(good);
  j["files"][0]["file"] = "../escape.safetensors";
  write_manifest(manifest_path, j);
  EXPECT_THAT(open_error(),
              HasSubstr("files[0].file: \"../escape.safetensors\" is not a file name inside the checkpoint"));

  fs::remove(manifest_path);
  EXPECT_THAT(open_error(), StartsWith(manifest_path + ": missing"));
  auto r = resolve_checkpoint(dir);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("not a checkpoint: neither manifest.json nor latest"));

  write_text(manifest_path, good);
  ASSERT_TRUE(Checkpoint::open(dir).ok());
  const std::string state = read_text(dir + "/trainer_state.json");
  write_text(dir + "/trainer_state.json", "{\"data\": 0}\n" + state.substr(12));
  EXPECT_THAT(open_error(), StartsWith(dir + "/trainer_state.json: checksum mismatch"));
  write_text(dir + "/trainer_state.json", state);

  fs::rename(dir + "/rank-00000.safetensors", dir + "/moved.safetensors");
  EXPECT_EQ(open_error(), dir + "/rank-00000.safetensors: missing (listed in " + manifest_path + ")");
}

TEST_F(CheckpointTest, ResolveNamesWhatIsMissing) {
  auto r = resolve_checkpoint((root_ / "nope").string());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("nope: no such checkpoint directory"));
  r = resolve_checkpoint(root());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("not a checkpoint: neither manifest.json nor latest"));

  Model m;
  ASSERT_TRUE(save_checkpoint(root(), make_meta(10), m.pieces, 0).ok());
  EXPECT_EQ(*resolve_checkpoint(root() + "/"), step_dir(10));
  EXPECT_EQ(*resolve_checkpoint(step_dir(10)), step_dir(10));
  write_text(root_ / "latest", "step_000077\n");
  r = resolve_checkpoint(root());
  EXPECT_EQ(std::string(r.status().message()),
            root() + "/latest names step_000077, but " + step_dir(77) + "/manifest.json does not exist");
  write_text(root_ / "latest", "../../etc\n");
  EXPECT_THAT(std::string(resolve_checkpoint(root()).status().message()),
              HasSubstr("expected a step directory name"));
  fs::remove(root_ / "latest");
  EXPECT_THAT(std::string(resolve_checkpoint(root()).status().message()),
              HasSubstr("no latest file and no manifest.json; step directories here: step_000010"));
}

}  // namespace
}  // namespace strata
