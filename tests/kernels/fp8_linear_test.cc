// LinearGemm in fp8 mode (kernels/precision/linear.h, scaling.h) and the quantisers under it
// (kernels/quant.h) against tests/golden/fp8/linear_fp8.safetensors, written by the independent
// PyTorch emulation scripts/make_golden_fp8.py (REFERENCE.md section 3); then the recipe state a
// trainer drives, without golden data.
//
// Golden, per case (the script's docstring lists them):
//   - every quantised operand bit for bit: codes, per-tile scales and q * s from quantize_tiles /
//     fake_quant_tiles (blockwise: x and dy 1x128, W 128x128, dy and x 128x1, and the cached x
//     quantised 1x128, dequantised, re-quantised 128x1) or quantize_tensor / fake_quant_tensor
//     (delayed: the scale from the amax history, or the tensor's own amax when the history is
//     empty or zero; saturation counts);
//   - LinearGemm's forward / backward_input / backward_weight (dW from zero, then accumulated) and
//     the SavedInput paths (fp32 copy, and the fp8 cache with its two quantisations), under the
//     PrecisionConfig the case names, "mlp" not kept in high precision. Outputs match to
//     max|a - b| <= 1e-6 * max|ref| per tensor: our operands are the golden ones bit for bit, and
//     only fp32 accumulation (BLAS order) separates one fp32 GEMM from the float64 reference. Case
//     bw_pow2_exact has pow2 scales and data whose products and partial sums are all exact in fp32
//     (the script checks that), so there the outputs must be equal bit for bit. bw_pow2 stores
//     operands only; its reference GEMMs are computed here in double from the golden operands.
// State: pending amaxes per use (MAX over micro-batches), fp8_pending_amax / fp8_commit_amax and
// newest-first histories capped at their capacity, fp8_state_tensors / fp8_load_state round trip
// and its errors, reset_step, non-finite events, the weights-epoch cache (kept while the epoch
// holds, recomputed when it moves or on commit; no pointer, no cache), high_precision_modules.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "core/safetensors.h"
#include "gtest/gtest.h"
#include "kernels/precision/linear.h"
#include "kernels/precision/scaling.h"
#include "kernels/quant.h"

namespace strata {
namespace {

using nlohmann::json;

const char* kGolden = STRATA_SOURCE_DIR "/tests/golden/fp8/linear_fp8.safetensors";
const std::vector<std::string> kBlockwiseCases = {"bw_fp32", "bw_pow2", "bw_pow2_exact"};
const std::vector<std::string> kDelayedCases = {
    "dl_e4m3_fp32_m0_above", "dl_e4m3_pow2_m1_above",   "dl_e4m3_fp32_m0_below", "dl_hybrid_fp32_m0_below",
    "dl_hybrid_pow2_m1_mixed", "dl_e4m3_fp32_m1_empty", "dl_hybrid_pow2_m0_zeros", "dl_hybrid_fp32_m0_empty"};
constexpr double kTol = 1e-6;
constexpr GemmOperand kOps[3] = {GemmOperand::kInput, GemmOperand::kWeight, GemmOperand::kGradOutput};

// ---- golden file -------------------------------------------------------------------------------

const SafetensorsFile& golden() {
  static const SafetensorsFile* file = [] {
    auto f = SafetensorsFile::open(kGolden);
    CHECK(f.ok()) << f.status() << " (written by scripts/make_golden_fp8.py)";
    return new SafetensorsFile(*f);
  }();
  return *file;
}

std::vector<float> read_f32(const std::string& name) {
  auto t = golden().read_f32(name);
  CHECK(t.ok()) << t.status();
  return std::vector<float>(t->f32(), t->f32() + t->numel());
}

// A dataset and recipe of the golden file.
struct Case {
  std::string name;
  json meta;
  int64_t T = 0, K = 0, N = 0;
  std::vector<float> x, W, dy;  // (T, K), (N, K), (T, N)
  bool pow2() const { return meta.at("scale_format") == "pow2"; }
  bool exact() const { return meta.at("exact").get<bool>(); }
  bool stored(const std::string& out) const {
    const auto& o = meta.at("outputs");
    return std::find(o.begin(), o.end(), out) != o.end();
  }
};

Case load_case(const std::string& name) {
  Case c;
  c.name = name;
  c.meta = json::parse(golden().metadata().at("case." + name));
  c.T = c.meta.at("T");
  c.K = c.meta.at("K");
  c.N = c.meta.at("N");
  const std::string in = "in." + c.meta.at("inputs").get<std::string>() + ".";
  c.x = read_f32(in + "x");
  c.W = read_f32(in + "W");
  c.dy = read_f32(in + "dy");
  CHECK_EQ(static_cast<int64_t>(c.x.size()), c.T * c.K);
  CHECK_EQ(static_cast<int64_t>(c.W.size()), c.N * c.K);
  CHECK_EQ(static_cast<int64_t>(c.dy.size()), c.T * c.N);
  return c;
}

// A golden quantised operand (R, C): codes, scales per tile, and x' = decode(code) * scale.
struct Operand {
  DType fmt = DType::kF8E4M3;
  std::vector<uint8_t> codes;
  std::vector<float> scales, deq;
};

Operand golden_operand(const Case& c, const std::string& use, int64_t R, int64_t C, QuantTile tile) {
  Operand o;
  auto codes = golden().read(c.name + "." + use + ".codes");
  CHECK(codes.ok()) << codes.status();
  o.fmt = codes->dtype();
  CHECK(o.fmt == DType::kF8E4M3 || o.fmt == DType::kF8E5M2) << use;
  CHECK_EQ(codes->numel(), R * C) << use;
  o.codes.assign(codes->data<uint8_t>(), codes->data<uint8_t>() + R * C);
  o.scales = read_f32(c.name + "." + use + ".scales");
  CHECK_EQ(static_cast<int64_t>(o.scales.size()), quant_tile_count(R, C, tile)) << use;
  const int64_t nc = (C + tile.cols - 1) / tile.cols;
  o.deq.resize(static_cast<size_t>(R * C));
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t col = 0; col < C; ++col) {
      const uint8_t q = o.codes[r * C + col];
      const float v = o.fmt == DType::kF8E4M3 ? e4m3_to_f32(q) : e5m2_to_f32(q);
      o.deq[r * C + col] = v * o.scales[(r / tile.rows) * nc + col / tile.cols];
    }
  }
  return o;
}

PrecisionConfig config_for(const json& m) {
  PrecisionConfig p;
  p.mode = PrecisionMode::kFp8;
  p.fp8.recipe = m.at("recipe") == "blockwise" ? Fp8Recipe::kBlockwise : Fp8Recipe::kTensorwiseDelayed;
  p.fp8.scale_format = m.at("scale_format") == "pow2" ? Fp8ScaleFormat::kPow2 : Fp8ScaleFormat::kFp32;
  if (m.contains("format")) p.fp8.format = m.at("format") == "hybrid" ? Fp8Format::kHybrid : Fp8Format::kE4M3;
  if (m.contains("margin")) p.fp8.margin = m.at("margin");
  if (m.contains("amax_history_len")) p.fp8.amax_history_len = m.at("amax_history_len");
  p.fp8.high_precision_modules = {"embedding", "head", "router", "norm", "attention_core"};  // not "mlp"
  return p;
}

// ---- comparisons -------------------------------------------------------------------------------

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

::testing::AssertionResult bitwise_equal(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (!same_bits(got[i], want[i]) && bad++ == 0) first = static_cast<int64_t>(i);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " differ; first at " << first << ": "
                                       << got[first] << " vs " << want[first];
}

::testing::AssertionResult codes_equal(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ == 0) first = static_cast<int64_t>(i);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " codes differ; first at " << first << ": "
                                       << int{got[first]} << " vs " << int{want[first]};
}

// max|got - want| <= tol * max|want|.
::testing::AssertionResult close_rel(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return ::testing::AssertionFailure() << "non-finite at " << i;
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  if (scale == 0) return ::testing::AssertionFailure() << "reference is all zero: the check proves nothing";
  if (worst <= tol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |diff| / max |ref| = " << worst / scale << " > " << tol;
}

// C (M, N) = sum_p a(i, p) b(p, j) in double, rounded to fp32.
template <typename A, typename B>
std::vector<float> gemm_ref(int64_t M, int64_t N, int64_t P, A a, B b) {
  std::vector<float> c(static_cast<size_t>(M * N));
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t p = 0; p < P; ++p) s += static_cast<double>(a(i, p)) * b(p, j);
      c[i * N + j] = static_cast<float>(s);
    }
  }
  return c;
}

// y = x W^T (T, N), dx = dy W (T, K), dW = dy^T x (N, K) from the operands each GEMM uses.
std::vector<float> ref_y(const std::vector<float>& x, const std::vector<float>& W, int64_t T, int64_t K, int64_t N) {
  return gemm_ref(T, N, K, [&](int64_t t, int64_t k) { return x[t * K + k]; },
                  [&](int64_t k, int64_t n) { return W[n * K + k]; });
}
std::vector<float> ref_dx(const std::vector<float>& dy, const std::vector<float>& W, int64_t T, int64_t K, int64_t N) {
  return gemm_ref(T, K, N, [&](int64_t t, int64_t n) { return dy[t * N + n]; },
                  [&](int64_t n, int64_t k) { return W[n * K + k]; });
}
std::vector<float> ref_dW(const std::vector<float>& dy, const std::vector<float>& x, int64_t T, int64_t K, int64_t N) {
  return gemm_ref(N, K, T, [&](int64_t n, int64_t t) { return dy[t * N + n]; },
                  [&](int64_t t, int64_t k) { return x[t * K + k]; });
}

// ---- the golden cases --------------------------------------------------------------------------

TEST(Fp8Golden, FileHoldsExactlyTheCasesTested) {
  std::vector<std::string> want = kBlockwiseCases;
  want.insert(want.end(), kDelayedCases.begin(), kDelayedCases.end());
  const std::vector<std::string> have = json::parse(golden().metadata().at("cases"));
  EXPECT_EQ(have, want);
}

class Fp8Blockwise : public ::testing::TestWithParam<std::string> {};

TEST_P(Fp8Blockwise, QuantisedOperandsMatchGoldenBitwise) {
  const Case c = load_case(GetParam());
  struct Use {
    const char* name;
    const std::vector<float>* src;
    int64_t R, C;
    QuantTile tile;
  };
  const Use uses[] = {{"x_1x128", &c.x, c.T, c.K, kTile1x128},    {"w_128x128", &c.W, c.N, c.K, kTile128x128},
                      {"dy_1x128", &c.dy, c.T, c.N, kTile1x128},  {"dy_128x1", &c.dy, c.T, c.N, kTile128x1},
                      {"x_128x1", &c.x, c.T, c.K, kTile128x1}};
  for (const Use& u : uses) {
    SCOPED_TRACE(u.name);
    const Operand g = golden_operand(c, u.name, u.R, u.C, u.tile);
    EXPECT_EQ(g.fmt, DType::kF8E4M3);
    std::vector<float> out(u.src->size()), scales(g.scales.size());
    const QuantStats st =
        fake_quant_tiles(u.src->data(), out.data(), u.R, u.C, u.tile, DType::kF8E4M3, c.pow2(), scales.data());
    EXPECT_EQ(st.nonfinite, 0);
    EXPECT_TRUE(bitwise_equal(scales, g.scales)) << "scales";
    EXPECT_TRUE(bitwise_equal(out, g.deq)) << "dequantised values";
    std::vector<uint8_t> codes(u.src->size());
    std::vector<float> qs(g.scales.size());
    quantize_tiles(u.src->data(), codes.data(), qs.data(), u.R, u.C, u.tile, DType::kF8E4M3, c.pow2());
    EXPECT_TRUE(codes_equal(codes, g.codes));
    EXPECT_TRUE(bitwise_equal(qs, g.scales));
  }
  // The cached input: quantised 1x128 in forward, dequantised and re-quantised 128x1 for dW.
  const Operand g = golden_operand(c, "x_cached_128x1", c.T, c.K, kTile128x1);
  std::vector<uint8_t> codes(c.x.size());
  std::vector<float> s1(static_cast<size_t>(quant_tile_count(c.T, c.K, kTile1x128))), xd(c.x.size()),
      s2(g.scales.size());
  quantize_tiles(c.x.data(), codes.data(), s1.data(), c.T, c.K, kTile1x128, DType::kF8E4M3, c.pow2());
  dequantize_tiles(codes.data(), s1.data(), xd.data(), c.T, c.K, kTile1x128, DType::kF8E4M3);
  fake_quant_tiles(xd.data(), xd.data(), c.T, c.K, kTile128x1, DType::kF8E4M3, c.pow2(), s2.data());
  EXPECT_TRUE(bitwise_equal(s2, g.scales)) << "x_cached_128x1 scales";
  EXPECT_TRUE(bitwise_equal(xd, g.deq)) << "x_cached_128x1 values";
}

TEST_P(Fp8Blockwise, LinearGemmMatchesGolden) {
  const Case c = load_case(GetParam());
  const int64_t T = c.T, K = c.K, N = c.N;
  // Reference outputs: float64 GEMMs of the golden operands, checked against the stored ones.
  const Operand x1 = golden_operand(c, "x_1x128", T, K, kTile1x128);
  const Operand w = golden_operand(c, "w_128x128", N, K, kTile128x128);
  const Operand dy1 = golden_operand(c, "dy_1x128", T, N, kTile1x128);
  const Operand dyt = golden_operand(c, "dy_128x1", T, N, kTile128x1);
  const Operand xt = golden_operand(c, "x_128x1", T, K, kTile128x1);
  const Operand xc = golden_operand(c, "x_cached_128x1", T, K, kTile128x1);
  std::map<std::string, std::vector<float>> want = {{"y", ref_y(x1.deq, w.deq, T, K, N)},
                                                    {"dx", ref_dx(dy1.deq, w.deq, T, K, N)},
                                                    {"dW", ref_dW(dyt.deq, xt.deq, T, K, N)},
                                                    {"dW_cached", ref_dW(dyt.deq, xc.deq, T, K, N)}};
  for (auto& [out, ref] : want) {
    if (!c.stored(out)) continue;
    const std::vector<float> file = read_f32(c.name + "." + out);
    EXPECT_TRUE(close_rel(ref, file, kTol)) << out << ": this test's reference vs the file";
    ref = file;
  }
  // Bitwise where every fp32 sum is exact (bw_pow2_exact), else 1e-6 of the tensor's scale.
  auto check = [&](const std::vector<float>& got, const std::vector<float>& ref, const char* what) {
    if (c.exact()) {
      EXPECT_TRUE(bitwise_equal(got, ref)) << what;
    } else {
      EXPECT_TRUE(close_rel(got, ref, kTol)) << what;
    }
  };

  const PrecisionConfig cfg = config_for(c.meta);
  LinearGemm g(cfg, "mlp", "layers.0.mlp.w_up");
  ASSERT_EQ(g.mode(), PrecisionMode::kFp8);
  ASSERT_FALSE(g.delayed());
  std::vector<float> y(T * N), dx(T * K), dW(N * K, 0.0f);
  g.forward(y.data(), c.x.data(), c.W.data(), T, K, N);
  check(y, want["y"], "y");
  g.backward_input(dx.data(), c.dy.data(), c.W.data(), T, K, N);
  check(dx, want["dx"], "dx");
  g.backward_weight(dW.data(), c.dy.data(), c.x.data(), T, K, N);
  check(dW, want["dW"], "dW");
  // backward_weight accumulates.
  std::vector<float> dW2 = dW;
  g.backward_weight(dW2.data(), c.dy.data(), c.x.data(), T, K, N);
  std::vector<float> twice(want["dW"].size());
  for (size_t i = 0; i < twice.size(); ++i) twice[i] = 2.0f * want["dW"][i];
  check(dW2, twice, "dW accumulated twice");
  EXPECT_EQ(g.events().nonfinite, 0);
  EXPECT_FALSE(g.history(GemmOperand::kInput).has_pending);  // blockwise keeps no amax state

  // SavedInput kept in fp32: the same dW as from x itself.
  SavedInput saved32;
  std::vector<float> y32(T * N), dW32(N * K, 0.0f);
  g.forward(y32.data(), c.x.data(), c.W.data(), T, K, N, &saved32);
  EXPECT_FALSE(saved32.cached());
  EXPECT_TRUE(bitwise_equal(y32, y));
  g.backward_weight(dW32.data(), c.dy.data(), saved32, T, K, N);
  EXPECT_TRUE(bitwise_equal(dW32, dW)) << "dW from a SavedInput in fp32";

  // fp8 activation caching: forward keeps its own 1x128 codes; dW re-tiles them 128x1.
  PrecisionConfig cached_cfg = cfg;
  cached_cfg.fp8.cache_activations = true;
  LinearGemm gc(cached_cfg, "mlp", "layers.0.mlp.w_up");
  SavedInput saved;
  std::vector<float> yc(T * N), dWc(N * K, 0.0f);
  gc.forward(yc.data(), c.x.data(), c.W.data(), T, K, N, &saved);
  EXPECT_TRUE(bitwise_equal(yc, y)) << "y with the fp8 cache";
  ASSERT_TRUE(saved.cached());
  EXPECT_EQ(saved.rows, T);
  EXPECT_EQ(saved.cols, K);
  EXPECT_EQ(saved.fmt, DType::kF8E4M3);
  EXPECT_TRUE(codes_equal(saved.codes, x1.codes));
  EXPECT_TRUE(bitwise_equal(saved.scales, x1.scales));
  EXPECT_EQ(saved.bytes(), T * K + static_cast<int64_t>(x1.scales.size() * sizeof(float)));
  gc.backward_weight(dWc.data(), c.dy.data(), saved, T, K, N);
  check(dWc, want["dW_cached"], "dW_cached");
}

INSTANTIATE_TEST_SUITE_P(Cases, Fp8Blockwise, ::testing::ValuesIn(kBlockwiseCases),
                         [](const auto& info) { return info.param; });

class Fp8Delayed : public ::testing::TestWithParam<std::string> {
 protected:
  struct Op {
    GemmOperand op;
    const char* key;  // metadata key
    const char* use;  // tensor name part
  };
  static constexpr Op kDelayedOps[3] = {{GemmOperand::kInput, "input", "x"},
                                        {GemmOperand::kWeight, "weight", "w"},
                                        {GemmOperand::kGradOutput, "grad_output", "dy"}};
  static const std::vector<float>& src(const Case& c, GemmOperand op) {
    return op == GemmOperand::kInput ? c.x : op == GemmOperand::kWeight ? c.W : c.dy;
  }
  static std::vector<float> history(const Case& c, const char* key) {
    std::vector<float> h;
    for (double v : c.meta.at("history").at(key)) h.push_back(static_cast<float>(v));
    return h;
  }
};

TEST_P(Fp8Delayed, QuantisedOperandsMatchGoldenBitwise) {
  const Case c = load_case(GetParam());
  const bool hybrid = c.meta.at("format") == "hybrid";
  const int margin = c.meta.at("margin");
  for (const Op& o : kDelayedOps) {
    SCOPED_TRACE(o.key);
    const std::vector<float>& v = src(c, o.op);
    const int64_t n = static_cast<int64_t>(v.size());
    const Operand g = golden_operand(c, o.use, 1, n, QuantTile{1, n});
    const DType fmt = hybrid && o.op == GemmOperand::kGradOutput ? DType::kF8E5M2 : DType::kF8E4M3;
    EXPECT_EQ(g.fmt, fmt);
    // The rule of linear.h: s = max(history) / fp8_max * 2^margin, the tensor's own amax while
    // the history's max is zero.
    const std::vector<float> h = history(c, o.key);
    const float hmax = h.empty() ? 0.0f : *std::max_element(h.begin(), h.end());
    const float own = amax_f32(v.data(), n).amax;
    EXPECT_EQ(own, c.meta.at("amax").at(o.key).get<float>());
    EXPECT_EQ(hmax == 0.0f, c.meta.at("own_amax").at(o.key).get<bool>());
    const float s = fp8_scale(std::ldexp(hmax > 0.0f ? hmax : own, margin), fmt, c.pow2());
    std::vector<float> out(v.size());
    float used = 0.0f;
    const QuantStats st = fake_quant_tensor(v.data(), out.data(), n,
                                            [&](float amax) {
                                              EXPECT_EQ(amax, own);
                                              return s;
                                            },
                                            fmt, &used);
    EXPECT_TRUE(bitwise_equal({used}, g.scales)) << "scale";
    EXPECT_TRUE(bitwise_equal(out, g.deq)) << "dequantised values";
    EXPECT_EQ(st.saturated, c.meta.at("saturated").at(o.key).get<int64_t>());
    EXPECT_EQ(st.amax, own);
    std::vector<uint8_t> codes(v.size());
    quantize_tensor(v.data(), codes.data(), n, [&](float) { return s; }, fmt, &used);
    EXPECT_TRUE(codes_equal(codes, g.codes));
  }
}

TEST_P(Fp8Delayed, LinearGemmMatchesGolden) {
  const Case c = load_case(GetParam());
  const int64_t T = c.T, K = c.K, N = c.N;
  const PrecisionConfig cfg = config_for(c.meta);
  auto make = [&](const PrecisionConfig& p) {
    LinearGemm g(p, "mlp", "layers.0.mlp.w_up");
    for (const Op& o : kDelayedOps) g.history(o.op).values = history(c, o.key);
    return g;
  };
  LinearGemm g = make(cfg);
  ASSERT_EQ(g.mode(), PrecisionMode::kFp8);
  ASSERT_TRUE(g.delayed());
  ASSERT_EQ(g.history_capacity(), c.meta.at("amax_history_len").get<int64_t>());
  const json& amax = c.meta.at("amax");
  const json& sat = c.meta.at("saturated");

  std::vector<float> y(T * N), dx(T * K), dW(N * K, 0.0f);
  g.forward(y.data(), c.x.data(), c.W.data(), T, K, N);
  EXPECT_TRUE(close_rel(y, read_f32(c.name + ".y"), kTol)) << "y";
  EXPECT_EQ(g.events().saturated, sat.at("input").get<int64_t>() + sat.at("weight").get<int64_t>());
  EXPECT_EQ(g.history(GemmOperand::kInput).pending, amax.at("input").get<float>());
  EXPECT_EQ(g.history(GemmOperand::kWeight).pending, amax.at("weight").get<float>());
  EXPECT_FALSE(g.history(GemmOperand::kGradOutput).has_pending);

  g.backward_input(dx.data(), c.dy.data(), c.W.data(), T, K, N);
  EXPECT_TRUE(close_rel(dx, read_f32(c.name + ".dx"), kTol)) << "dx";
  g.backward_weight(dW.data(), c.dy.data(), c.x.data(), T, K, N);
  EXPECT_TRUE(close_rel(dW, read_f32(c.name + ".dW"), kTol)) << "dW";
  EXPECT_EQ(fp8_pending_amax({&g}), (std::vector<float>{amax.at("input").get<float>(), amax.at("weight").get<float>(),
                                                         amax.at("grad_output").get<float>()}));
  EXPECT_EQ(g.events().nonfinite, 0);

  // The stored outputs are the GEMMs of the stored operands.
  const Operand gx = golden_operand(c, "x", 1, T * K, QuantTile{1, T * K});
  const Operand gw = golden_operand(c, "w", 1, N * K, QuantTile{1, N * K});
  const Operand gdy = golden_operand(c, "dy", 1, T * N, QuantTile{1, T * N});
  EXPECT_TRUE(close_rel(ref_y(gx.deq, gw.deq, T, K, N), read_f32(c.name + ".y"), kTol));
  EXPECT_TRUE(close_rel(ref_dx(gdy.deq, gw.deq, T, K, N), read_f32(c.name + ".dx"), kTol));
  EXPECT_TRUE(close_rel(ref_dW(gdy.deq, gx.deq, T, K, N), read_f32(c.name + ".dW"), kTol));

  // fp8 activation caching: one per-tensor scale; dW from the cached codes is the same dW.
  PrecisionConfig cached_cfg = cfg;
  cached_cfg.fp8.cache_activations = true;
  LinearGemm gc = make(cached_cfg);
  SavedInput saved;
  std::vector<float> yc(T * N), dWc(N * K, 0.0f);
  gc.forward(yc.data(), c.x.data(), c.W.data(), T, K, N, &saved);
  EXPECT_TRUE(bitwise_equal(yc, y)) << "y with the fp8 cache";
  ASSERT_TRUE(saved.cached());
  EXPECT_EQ(saved.fmt, DType::kF8E4M3);
  EXPECT_TRUE(bitwise_equal(saved.scales, gx.scales));
  EXPECT_TRUE(codes_equal(saved.codes, gx.codes));
  gc.backward_weight(dWc.data(), c.dy.data(), saved, T, K, N);
  EXPECT_TRUE(bitwise_equal(dWc, dW)) << "dW from the fp8 cache";
}

INSTANTIATE_TEST_SUITE_P(Cases, Fp8Delayed, ::testing::ValuesIn(kDelayedCases),
                         [](const auto& info) { return info.param; });

// ---- recipe state ------------------------------------------------------------------------------

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

PrecisionConfig fp8_config(Fp8Recipe recipe, int64_t history_len = 4) {
  PrecisionConfig p;
  p.mode = PrecisionMode::kFp8;
  p.fp8.recipe = recipe;
  p.fp8.amax_history_len = history_len;
  return p;
}

// Small operands with known amaxes: x (T, K) 3, W (N, K) 0.5, dy (T, N) 0.25.
struct Small {
  static constexpr int64_t T = 4, K = 8, N = 5;
  std::vector<float> x, W, dy;
  explicit Small(uint32_t seed) {
    std::mt19937 rng(seed);
    x = random_vec(rng, T * K);
    x[5] = -3.0f;
    W = random_vec(rng, N * K, -0.4f, 0.4f);
    W[7] = 0.5f;
    dy = random_vec(rng, T * N, -0.2f, 0.2f);
    dy[3] = -0.25f;
  }
  std::vector<float> forward(LinearGemm& g, const std::vector<float>& w) const {
    std::vector<float> y(T * N);
    g.forward(y.data(), x.data(), w.data(), T, K, N);
    return y;
  }
};

TEST(Fp8State, PendingAmaxIsRecordedPerUseAndMaxReducedOverMicroBatches) {
  const Small s(1);
  LinearGemm g(fp8_config(Fp8Recipe::kTensorwiseDelayed), "mlp", "a");
  LinearGemm idle(fp8_config(Fp8Recipe::kTensorwiseDelayed), "mlp", "b");
  LinearGemm blockwise(fp8_config(Fp8Recipe::kBlockwise), "mlp", "c");
  std::vector<float> y(Small::T * Small::N), dx(Small::T * Small::K), dW(Small::N * Small::K, 0.0f);
  g.forward(y.data(), s.x.data(), s.W.data(), Small::T, Small::K, Small::N);
  blockwise.forward(y.data(), s.x.data(), s.W.data(), Small::T, Small::K, Small::N);
  EXPECT_EQ(g.history(GemmOperand::kInput).pending, 3.0f);
  EXPECT_EQ(g.history(GemmOperand::kWeight).pending, 0.5f);
  EXPECT_FALSE(g.history(GemmOperand::kGradOutput).has_pending);
  g.backward_input(dx.data(), s.dy.data(), s.W.data(), Small::T, Small::K, Small::N);
  EXPECT_EQ(g.history(GemmOperand::kGradOutput).pending, 0.25f);
  // A second micro-batch with a larger input, then a backward with the first one: MAX.
  std::vector<float> x2 = s.x;
  x2[9] = 7.0f;
  g.forward(y.data(), x2.data(), s.W.data(), Small::T, Small::K, Small::N);
  g.backward_weight(dW.data(), s.dy.data(), s.x.data(), Small::T, Small::K, Small::N);
  EXPECT_EQ(g.history(GemmOperand::kInput).pending, 7.0f);
  EXPECT_FALSE(blockwise.history(GemmOperand::kInput).has_pending);

  // Three per delayed GEMM in list order, zero for unused operands; blockwise GEMMs skipped.
  const std::vector<LinearGemm*> all = {&g, &blockwise, &idle};
  EXPECT_EQ(fp8_pending_amax(all), (std::vector<float>{7.0f, 0.5f, 0.25f, 0.0f, 0.0f, 0.0f}));
  EXPECT_TRUE(fp8_pending_amax({&blockwise}).empty());
  // What the all-reduce returned goes into the histories; pending is cleared.
  fp8_commit_amax(all, {7.5f, 0.5f, 0.25f, 1.0f, 2.0f, 3.0f});
  EXPECT_EQ(g.history(GemmOperand::kInput).values, std::vector<float>{7.5f});
  EXPECT_EQ(idle.history(GemmOperand::kGradOutput).values, std::vector<float>{3.0f});
  for (GemmOperand op : kOps) EXPECT_FALSE(g.history(op).has_pending);
  EXPECT_EQ(fp8_pending_amax(all), std::vector<float>(6, 0.0f));
  EXPECT_TRUE(blockwise.history(GemmOperand::kInput).values.empty());
}

TEST(Fp8State, HistoriesAreNewestFirstUpToCapacity) {
  LinearGemm g(fp8_config(Fp8Recipe::kTensorwiseDelayed, 3), "mlp", "a");
  ASSERT_EQ(g.history_capacity(), 3);
  for (int v = 1; v <= 5; ++v) g.commit({float(v), 10.0f * v, 100.0f * v});
  EXPECT_EQ(g.history(GemmOperand::kInput).values, (std::vector<float>{5, 4, 3}));
  EXPECT_EQ(g.history(GemmOperand::kWeight).values, (std::vector<float>{50, 40, 30}));
  EXPECT_EQ(g.history(GemmOperand::kGradOutput).values, (std::vector<float>{500, 400, 300}));
  EXPECT_EQ(g.history(GemmOperand::kInput).max(), 5.0f);
}

TEST(Fp8State, CommitDropsTheCachedWeight) {
  const Small s(2);
  int64_t epoch = 0;
  LinearGemm g(fp8_config(Fp8Recipe::kTensorwiseDelayed), "mlp", "a", &epoch);
  const std::vector<float> y1 = s.forward(g, s.W);
  // A larger weight amax in the history: another weight scale from now on (not a power-of-two
  // multiple of the old one, which would round every normal value the same way).
  g.commit({3.0f, 0.5f * 37.3f, 0.25f});
  const std::vector<float> y2 = s.forward(g, s.W);
  EXPECT_FALSE(bitwise_equal(y2, y1));
  LinearGemm fresh(fp8_config(Fp8Recipe::kTensorwiseDelayed), "mlp", "a");
  for (GemmOperand op : kOps) fresh.history(op).values = g.history(op).values;
  EXPECT_TRUE(bitwise_equal(y2, s.forward(fresh, s.W)));
  // Served from the cache now, and still recording the weight's amax for this step.
  g.reset_step();
  EXPECT_TRUE(bitwise_equal(s.forward(g, s.W), y2));
  EXPECT_EQ(g.history(GemmOperand::kWeight).pending, 0.5f);
}

TEST(Fp8State, StateTensorsRoundTrip) {
  const Small s(3);
  auto make = [](const std::string& name) {
    return LinearGemm(fp8_config(Fp8Recipe::kTensorwiseDelayed), "mlp", name);
  };
  LinearGemm up = make("layers.0.mlp.w_up"), down = make("layers.0.mlp.w_down");
  LinearGemm blockwise(fp8_config(Fp8Recipe::kBlockwise), "mlp", "layers.0.mlp.w_gate");
  const std::vector<LinearGemm*> gemms = {&up, &blockwise, &down};
  fp8_commit_amax(gemms, {1.0f, 0.1f, 0.01f, 2.0f, 0.2f, 0.02f});
  fp8_commit_amax(gemms, {4.0f, 0.4f, 0.04f, 3.0f, 0.3f, 0.03f});
  const std::vector<Fp8StateTensor> state = fp8_state_tensors(gemms);
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].name, "fp8.layers.0.mlp.w_up.amax_history");
  EXPECT_EQ(state[1].name, "fp8.layers.0.mlp.w_down.amax_history");
  ASSERT_EQ(state[0].value.shape().rank(), 2);
  EXPECT_EQ(state[0].value.shape()[0], 3);
  EXPECT_EQ(state[0].value.shape()[1], 4);
  // Rows input / weight / grad_output, newest first, zero-padded.
  const float* t = state[0].value.f32();
  EXPECT_EQ(std::vector<float>(t, t + 12),
            (std::vector<float>{4.0f, 1.0f, 0, 0, 0.4f, 0.1f, 0, 0, 0.04f, 0.01f, 0, 0}));

  std::map<std::string, Tensor> saved;
  for (const Fp8StateTensor& st : state) saved[st.name] = st.value.clone();
  auto find = [&](const std::string& name) -> StatusOr<Tensor> {
    const auto it = saved.find(name);
    if (it == saved.end()) return absl::NotFoundError(name);
    return it->second;
  };
  LinearGemm up2 = make("layers.0.mlp.w_up"), down2 = make("layers.0.mlp.w_down");
  LinearGemm blockwise2(fp8_config(Fp8Recipe::kBlockwise), "mlp", "layers.0.mlp.w_gate");
  ASSERT_TRUE(fp8_load_state({&up2, &blockwise2, &down2}, find).ok());
  const std::vector<Fp8StateTensor> again = fp8_state_tensors({&up2, &blockwise2, &down2});
  ASSERT_EQ(again.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again[i].name, state[i].name);
    const float* a = again[i].value.f32();
    const float* b = state[i].value.f32();
    EXPECT_EQ(std::vector<float>(a, a + 12), std::vector<float>(b, b + 12));
  }
  for (GemmOperand op : kOps) EXPECT_EQ(up2.history(op).max(), up.history(op).max());
  EXPECT_TRUE(bitwise_equal(s.forward(up2, s.W), s.forward(up, s.W)));  // the same scales

  // A longer saved history (amax_history_len shrank) keeps its newest entries.
  Tensor longer = Tensor::zeros({3, 6}, DType::kF32);
  for (int64_t i = 0; i < 18; ++i) longer.f32()[i] = static_cast<float>(i + 1);
  saved["fp8.layers.0.mlp.w_up.amax_history"] = longer;
  ASSERT_TRUE(fp8_load_state({&up2}, find).ok());
  EXPECT_EQ(up2.history(GemmOperand::kInput).values, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(up2.history(GemmOperand::kGradOutput).values, (std::vector<float>{13, 14, 15, 16}));
  // Errors: a missing tensor, and one of the wrong shape.
  LinearGemm other = make("layers.1.mlp.w_up");
  EXPECT_EQ(fp8_load_state({&other}, find).code(), absl::StatusCode::kNotFound);
  saved["fp8.layers.0.mlp.w_up.amax_history"] = Tensor::zeros({2, 4}, DType::kF32);
  const Status bad = fp8_load_state({&up2}, find);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("fp8.layers.0.mlp.w_up.amax_history"), std::string::npos) << bad;
  EXPECT_TRUE(fp8_state_tensors({&blockwise}).empty());
}

TEST(Fp8State, ResetStepClearsPendingAndEvents) {
  const Small s(4);
  LinearGemm g(fp8_config(Fp8Recipe::kTensorwiseDelayed), "mlp", "layers.1.mlp.w_up");
  g.history(GemmOperand::kWeight).values = {0.5f / 8.0f};  // W saturates
  std::vector<float> x = s.x;
  x[2] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y(Small::T * Small::N);
  g.forward(y.data(), x.data(), s.W.data(), Small::T, Small::K, Small::N);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(g.events().nonfinite, 1);
  EXPECT_EQ(g.events().first, "layers.1.mlp.w_up: input of forward");
  EXPECT_GT(g.events().saturated, 0);
  EXPECT_EQ(g.history(GemmOperand::kInput).pending, 3.0f);  // the largest finite |x|
  const Fp8Events all = fp8_events({&g});
  EXPECT_EQ(all.nonfinite, 1);
  EXPECT_EQ(all.first, g.events().first);

  fp8_reset_step({&g});
  EXPECT_EQ(g.events().nonfinite, 0);
  EXPECT_EQ(g.events().saturated, 0);
  EXPECT_TRUE(g.events().first.empty());
  for (GemmOperand op : kOps) {
    EXPECT_FALSE(g.history(op).has_pending);
    EXPECT_EQ(g.history(op).pending, 0.0f);
  }
  EXPECT_EQ(g.history(GemmOperand::kWeight).values, std::vector<float>{0.5f / 8.0f});  // histories kept

  // Blockwise GEMMs report events too, naming the use.
  LinearGemm b(fp8_config(Fp8Recipe::kBlockwise), "mlp", "layers.2.mlp.w_down");
  std::vector<float> dy = s.dy, dx(Small::T * Small::K);
  dy[1] = std::numeric_limits<float>::infinity();
  b.backward_input(dx.data(), dy.data(), s.W.data(), Small::T, Small::K, Small::N);
  EXPECT_EQ(b.events().nonfinite, 1);
  EXPECT_EQ(b.events().first, "layers.2.mlp.w_down: grad_output of backward_input");
  b.reset_step();
  EXPECT_EQ(b.events().nonfinite, 0);
}

TEST(Fp8State, WeightCacheFollowsTheEpoch) {
  const Small s(5);
  const PrecisionConfig cfg = fp8_config(Fp8Recipe::kBlockwise);
  int64_t epoch = 0;
  LinearGemm g(cfg, "mlp", "a", &epoch);
  std::vector<float> W = s.W;
  const std::vector<float> original = W;
  const std::vector<float> y1 = s.forward(g, W);
  // The optimizer changes W in place without telling: the cached quantisation is served.
  for (int64_t k = 0; k < Small::K; ++k) W[k] *= 3.0f;
  W[11] += 0.125f;
  EXPECT_TRUE(bitwise_equal(s.forward(g, W), y1));
  std::vector<float> dx(Small::T * Small::K), dx_ref(Small::T * Small::K);
  g.backward_input(dx.data(), s.dy.data(), W.data(), Small::T, Small::K, Small::N);
  LinearGemm fresh(cfg, "mlp", "a");
  fresh.backward_input(dx_ref.data(), s.dy.data(), original.data(), Small::T, Small::K, Small::N);
  EXPECT_TRUE(bitwise_equal(dx, dx_ref)) << "backward_input uses the cached weight too";
  // The epoch moves: recomputed.
  ++epoch;
  const std::vector<float> y3 = s.forward(g, W);
  EXPECT_FALSE(bitwise_equal(y3, y1));
  EXPECT_TRUE(bitwise_equal(y3, s.forward(fresh, W)));
  // Another weight buffer under the same epoch is not mistaken for the cached one.
  std::vector<float> W2 = original;
  EXPECT_TRUE(bitwise_equal(s.forward(g, W2), y1));
  // invalidate_weight_cache forces a recompute without an epoch change.
  for (float& v : W2) v *= -1.0f;
  g.invalidate_weight_cache();
  EXPECT_TRUE(bitwise_equal(s.forward(g, W2), s.forward(fresh, W2)));
}

TEST(Fp8State, NoEpochMeansNoWeightCache) {
  const Small s(6);
  const PrecisionConfig cfg = fp8_config(Fp8Recipe::kBlockwise);
  LinearGemm g(cfg, "mlp", "a");
  std::vector<float> W = s.W;
  const std::vector<float> y1 = s.forward(g, W);
  for (int64_t k = 0; k < Small::K; ++k) W[k] *= 3.0f;
  const std::vector<float> y2 = s.forward(g, W);
  EXPECT_FALSE(bitwise_equal(y2, y1));
  LinearGemm fresh(cfg, "mlp", "a");
  EXPECT_TRUE(bitwise_equal(y2, s.forward(fresh, W)));
}

TEST(Fp8State, HighPrecisionModulesLeaveFp8) {
  PrecisionConfig cfg = fp8_config(Fp8Recipe::kBlockwise);
  cfg.fp8.high_precision_modules = {"head", "router", "attention_core"};
  EXPECT_EQ(LinearGemm(cfg, "mlp").mode(), PrecisionMode::kFp8);
  EXPECT_EQ(LinearGemm(cfg, "experts").mode(), PrecisionMode::kFp8);
  EXPECT_EQ(LinearGemm(cfg, "head").mode(), PrecisionMode::kBf16);
  EXPECT_EQ(LinearGemm(cfg, "router").mode(), PrecisionMode::kFp32);
  cfg.fp8.high_precision_modules.push_back("mlp");
  LinearGemm kept(cfg, "mlp");
  EXPECT_EQ(kept.mode(), PrecisionMode::kBf16);
  EXPECT_FALSE(kept.delayed());
}

}  // namespace
}  // namespace strata
