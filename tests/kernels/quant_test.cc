// kernels/quant.h edge cases (REFERENCE.md section 3); the golden comparison against an
// independent PyTorch emulation is tests/kernels/fp8_linear_test.cc. Checked here, mostly against
// a plain scalar reference (per-tile amax, fp8_scale, x * (1/s), the scalar satfinite codec, q * s)
// or against values worked out by hand:
//   - an all-zero tile gets scale 1 and comes out zero; fp32 subnormal inputs get the 2^-126
//     floor and finite, non-zero results; one huge value in a 1x128 tile sends the others to zero
//     or to E4M3 subnormal codes exactly as the maths says (ties to even included);
//   - a given per-tensor scale saturates to +-448 s and counts exactly the values the cast clips
//     (not the 448.00003 that x * (1/s) gives for the tensor's own amax);
//   - K not a multiple of 128, 128x1 and 128x128 tiles, E5M2; pow2 scales are powers of two with
//     exact dequantisation; quantize + dequantize == fake_quant bit for bit; out may alias x;
//   - NaN/Inf poison exactly their tile (or the whole tensor, per-tensor) and are counted;
//   - amax_f32 on lengths that are not multiples of 8 or of its chunk;
//   - results do not depend on the thread count.
#include "kernels/quant.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/ops.h"  // set_blas_threads, blas_threads

namespace strata {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr DType kE4M3 = DType::kF8E4M3;
constexpr DType kE5M2 = DType::kF8E5M2;

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// Bitwise equality of two float vectors (NaN == NaN), naming the first difference.
::testing::AssertionResult bitwise_equal(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool eq = same_bits(got[i], want[i]) || (std::isnan(got[i]) && std::isnan(want[i]));
    if (!eq && bad++ == 0) first = static_cast<int64_t>(i);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " elements differ; first at " << first << ": " << got[first]
                                       << " vs " << want[first];
}

float decode(uint8_t c, DType fmt) { return fmt == kE4M3 ? e4m3_to_f32(c) : e5m2_to_f32(c); }
uint8_t encode(float v, DType fmt) { return fmt == kE4M3 ? f32_to_e4m3(v) : f32_to_e5m2(v); }

// The plain scalar reference of fake_quant_tiles: out (R, C), scales per tile, non-finite count.
struct RefQuant {
  std::vector<float> out, scales;
  int64_t nonfinite = 0;
};
RefQuant ref_fake_quant(const std::vector<float>& x, int64_t R, int64_t C, QuantTile t, DType fmt, bool pow2) {
  RefQuant r;
  r.out.resize(x.size());
  const int64_t nr = (R + t.rows - 1) / t.rows, nc = (C + t.cols - 1) / t.cols;
  for (int64_t br = 0; br < nr; ++br) {
    for (int64_t bc = 0; bc < nc; ++bc) {
      const int64_t r1 = std::min(R, (br + 1) * t.rows), c1 = std::min(C, (bc + 1) * t.cols);
      float amax = 0.0f;
      bool bad = false;
      for (int64_t i = br * t.rows; i < r1; ++i) {
        for (int64_t j = bc * t.cols; j < c1; ++j) {
          const float v = x[i * C + j];
          if (std::isfinite(v)) {
            amax = std::max(amax, std::fabs(v));
          } else {
            bad = true;
            ++r.nonfinite;
          }
        }
      }
      const float s = bad ? kNaN : fp8_scale(amax, fmt, pow2);
      r.scales.push_back(s);
      const float inv = 1.0f / s;
      for (int64_t i = br * t.rows; i < r1; ++i)
        for (int64_t j = bc * t.cols; j < c1; ++j) r.out[i * C + j] = decode(encode(x[i * C + j] * inv, fmt), fmt) * s;
    }
  }
  return r;
}

// Runs fake_quant_tiles and checks it against the scalar reference bit for bit.
void check_against_ref(const std::vector<float>& x, int64_t R, int64_t C, QuantTile t, DType fmt, bool pow2) {
  SCOPED_TRACE(testing::Message() << R << "x" << C << " tile " << t.rows << "x" << t.cols << " "
                                  << dtype_name(fmt) << (pow2 ? " pow2" : " fp32"));
  std::vector<float> out(x.size()), scales(static_cast<size_t>(quant_tile_count(R, C, t)));
  const QuantStats st = fake_quant_tiles(x.data(), out.data(), R, C, t, fmt, pow2, scales.data());
  const RefQuant ref = ref_fake_quant(x, R, C, t, fmt, pow2);
  EXPECT_TRUE(bitwise_equal(scales, ref.scales)) << "scales";
  EXPECT_TRUE(bitwise_equal(out, ref.out)) << "values";
  EXPECT_EQ(st.nonfinite, ref.nonfinite);
  EXPECT_EQ(st.saturated, 0);
}

// Restores the thread count a test changes.
class QuantTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(QuantTest, ScaleRule) {
  EXPECT_EQ(fp8_max(kE4M3), 448.0f);
  EXPECT_EQ(fp8_max(kE5M2), 57344.0f);
  EXPECT_EQ(fp8_scale(0.0f, kE4M3, false), 1.0f);
  EXPECT_EQ(fp8_scale(0.0f, kE4M3, true), 1.0f);
  EXPECT_EQ(fp8_scale(3.0f, kE4M3, false), 3.0f / 448.0f);
  EXPECT_EQ(fp8_scale(3.0f, kE5M2, false), 3.0f / 57344.0f);
  EXPECT_EQ(fp8_scale(3.0f, kE4M3, true), 0x1p-7f);      // 3/448 = 0.0067 -> 2^-7 = 0.0078
  EXPECT_EQ(fp8_scale(448.0f * 0.25f, kE4M3, true), 0.25f);  // already a power of two: kept
  EXPECT_EQ(fp8_scale(1e-40f, kE4M3, false), 0x1p-126f);
  EXPECT_EQ(fp8_scale(1e-40f, kE4M3, true), 0x1p-126f);
  EXPECT_EQ(quant_tile_count(130, 200, kTile1x128), 130 * 2);
  EXPECT_EQ(quant_tile_count(130, 200, kTile128x1), 2 * 200);
  EXPECT_EQ(quant_tile_count(256, 256, kTile128x128), 4);
  EXPECT_EQ(quant_tile_count(0, 5, kTile1x128), 0);
}

TEST_F(QuantTest, AllZeroTileHasScaleOneAndZeroOutput) {
  const int64_t R = 2, C = 300;
  std::vector<float> x(R * C, 0.0f);
  for (int64_t c = 0; c < C; ++c) x[C + c] = 0.01f * static_cast<float>(c + 1);  // row 1 nonzero
  x[5] = -0.0f;
  for (bool pow2 : {false, true}) {
    std::vector<float> out(x.size(), 7.0f), scales(6, -1.0f);
    const QuantStats st = fake_quant_tiles(x.data(), out.data(), R, C, kTile1x128, kE4M3, pow2, scales.data());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(scales[i], 1.0f) << i;
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[c], 0.0f) << c;
    EXPECT_NE(scales[3], 1.0f);
    EXPECT_EQ(st.nonfinite, 0);
    std::vector<uint8_t> codes(x.size(), 0xaa);
    quantize_tiles(x.data(), codes.data(), scales.data(), R, C, kTile1x128, kE4M3, pow2);
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(codes[c] & 0x7f, 0) << c;  // +-0
  }
  // The whole tensor zero: per-tensor scale 1 too.
  std::vector<float> z(50, 0.0f), out(50, 3.0f);
  float used = 0.0f;
  fake_quant_tensor(z.data(), out.data(), 50, [](float a) { return fp8_scale(a, kE4M3, false); }, kE4M3, &used);
  EXPECT_EQ(used, 1.0f);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST_F(QuantTest, SubnormalInputsUseTheScaleFloor) {
  // One 1x128 tile of fp32 subnormals (below 2^-126 ~ 1.18e-38): amax / 448 would underflow and
  // 1 / s overflow; the scale stops at 2^-126, so x * 2^126 lands in E4M3's range.
  std::vector<float> x(128);
  for (int i = 0; i < 128; ++i) x[i] = static_cast<float>((i % 17) - 8) * 0x1p-131f;  // up to 8 * 2^-131
  for (bool pow2 : {false, true}) {
    std::vector<float> out(128), scales(1);
    fake_quant_tiles(x.data(), out.data(), 1, 128, kTile1x128, kE4M3, pow2, scales.data());
    EXPECT_EQ(scales[0], 0x1p-126f);
    int nonzero = 0;
    for (int i = 0; i < 128; ++i) {
      ASSERT_TRUE(std::isfinite(out[i])) << i;
      // x * 2^126 = k * 2^-5 is exact and E4M3-representable: dequantisation gives x back.
      EXPECT_EQ(out[i], x[i]) << i;
      nonzero += out[i] != 0.0f;
    }
    EXPECT_GT(nonzero, 100);
  }
}

TEST_F(QuantTest, OneHugeValueFlushesTheRestOfItsTile) {
  // amax = 448 * 1024: s = 1024 exactly (fp32 and pow2), so q = x / 1024 and E4M3's smallest
  // subnormal 2^-9 corresponds to x = 2.
  std::vector<float> x(128, 0.0f);
  x[0] = 448.0f * 1024.0f;
  x[1] = 1.0f;    // half the smallest subnormal: the tie goes to even, 0
  x[2] = 1.5f;    // 0.75 units -> 1 unit: 2
  x[3] = 3.0f;    // 1.5 units: tie to even, 2 units: 4
  x[4] = 10.0f;   // 5 units exactly: 10
  x[5] = -0.4f;   // 0.2 units: -0
  x[6] = 5.0f;    // 2.5 units: tie to even, 2 units: 4
  x[7] = 40.0f;   // 2^-6 * 1024 / ... = 20 units = 1.25 * 2^-5: normal code, exact: 40
  x[8] = 100.0f;  // 0.09765625 = 1.5625 * 2^-4: 3 mantissa bits give 1.5 or 1.625: tie? no, 1.5625
                  // is exactly between 1.5 and 1.625 -> even mantissa (100b = 1.5): 96
  const std::vector<float> want = {458752.0f, 0.0f, 2.0f, 4.0f, 10.0f, -0.0f, 4.0f, 40.0f, 96.0f};
  const std::vector<uint8_t> want_codes = {0x7e, 0x00, 0x01, 0x02, 0x05, 0x80, 0x02};
  for (bool pow2 : {false, true}) {
    std::vector<float> out(128), scales(1);
    fake_quant_tiles(x.data(), out.data(), 1, 128, kTile1x128, kE4M3, pow2, scales.data());
    EXPECT_EQ(scales[0], 1024.0f);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_TRUE(same_bits(out[i], want[i])) << i << ": " << out[i];
    for (int i = 9; i < 128; ++i) EXPECT_EQ(out[i], 0.0f);
    std::vector<uint8_t> codes(128);
    quantize_tiles(x.data(), codes.data(), scales.data(), 1, 128, kTile1x128, kE4M3, pow2);
    for (size_t i = 0; i < want_codes.size(); ++i) EXPECT_EQ(codes[i], want_codes[i]) << i;
  }
}

TEST_F(QuantTest, GivenScaleSaturatesAndCountsClippedValues) {
  const float s = 0.5f;
  // Scaled values (x / s): 500, 465 and -1000 are clipped; 460 and 464 (the tie between 448 and
  // 480 goes to the even 448) round to 448 without clipping; 448 and 100 are exact.
  const std::vector<float> scaled = {500.0f, 460.0f, 464.0f, 465.0f, -1000.0f, 100.0f, 448.0f, -448.5f};
  std::vector<float> x;
  for (float v : scaled) x.push_back(v * s);
  std::vector<float> out(x.size());
  float used = 0.0f;
  QuantStats st =
      fake_quant_tensor(x.data(), out.data(), static_cast<int64_t>(x.size()), [&](float) { return s; }, kE4M3, &used);
  EXPECT_EQ(used, s);
  EXPECT_EQ(st.saturated, 3);
  EXPECT_EQ(st.amax, 500.0f);  // largest |x| (the -1000 * s), before scaling
  const std::vector<float> want = {224.0f, 224.0f, 224.0f, 224.0f, -224.0f, 48.0f, 224.0f, -224.0f};
  EXPECT_TRUE(bitwise_equal(out, want));

  // E5M2: max 57344; 61440 is the tie between 57344 and 65536, which goes to the even 65536, so
  // it is clipped; 61439 rounds to 57344.
  const std::vector<float> scaled5 = {61439.0f, 61440.0f, 70000.0f, -1e6f, 1000.0f};
  std::vector<float> x5, out5(scaled5.size());
  for (float v : scaled5) x5.push_back(v * s);
  st = fake_quant_tensor(x5.data(), out5.data(), 5, [&](float) { return s; }, kE5M2, &used);
  EXPECT_EQ(st.saturated, 3);
  EXPECT_TRUE(bitwise_equal(out5, {28672.0f, 28672.0f, 28672.0f, -28672.0f, 512.0f}));
  std::vector<uint8_t> codes(5);
  st = quantize_tensor(x5.data(), codes.data(), 5, [&](float) { return s; }, kE5M2, &used);
  EXPECT_EQ(st.saturated, 3);
  EXPECT_EQ(codes[2], 0x7b);
  EXPECT_EQ(codes[3], 0xfb);
}

TEST_F(QuantTest, OwnAmaxScaleNeverCountsSaturation) {
  // x * (1 / (x / 448)) is 448.00003 in fp32 for some x: rounding, not clipping. Find such an x.
  float amax = 0.0f;
  for (float a = 1.0f; a < 2.0f; a = std::nextafter(a, 2.0f)) {
    const float s = a / 448.0f;
    if (a * (1.0f / s) > 448.0f) {
      amax = a;
      break;
    }
  }
  ASSERT_GT(amax, 0.0f) << "no fp32 value rounds above 448: the check below proves nothing";
  std::vector<float> x = {amax, -0.5f * amax, 0.1f};
  std::vector<float> out(3);
  const QuantStats st =
      fake_quant_tensor(x.data(), out.data(), 3, [](float a) { return fp8_scale(a, kE4M3, false); }, kE4M3);
  EXPECT_EQ(st.saturated, 0);
  EXPECT_EQ(out[0], 448.0f * (amax / 448.0f));
}

TEST_F(QuantTest, PartialAndTallTilesMatchScalarReference) {
  std::mt19937 rng(11);
  struct Shape {
    int64_t R, C;
  };
  for (Shape sh : {Shape{3, 200}, Shape{1, 7}, Shape{130, 3}, Shape{130, 200}, Shape{128, 128}, Shape{257, 129}}) {
    std::vector<float> x = random_vec(rng, sh.R * sh.C);
    for (int64_t i = 0; i < sh.R * sh.C; i += 37) x[i] *= 1000.0f;  // tiles of different amax
    for (int64_t c = 0; c < sh.C; ++c) x[c] *= 1e-3f;                // a quiet first row
    for (QuantTile t : {kTile1x128, kTile128x1, kTile128x128})
      for (bool pow2 : {false, true}) check_against_ref(x, sh.R, sh.C, t, kE4M3, pow2);
  }
  // The short second tile (columns 128..199) is scaled by its own amax, 50; the first by 0.25.
  std::vector<float> x(200, 0.25f);
  x[150] = 50.0f;
  std::vector<float> out(200), scales(2);
  fake_quant_tiles(x.data(), out.data(), 1, 200, kTile1x128, kE4M3, false, scales.data());
  EXPECT_EQ(scales[0], 0.25f / 448.0f);
  EXPECT_EQ(scales[1], 50.0f / 448.0f);
}

TEST_F(QuantTest, E5M2MatchesScalarReference) {
  std::mt19937 rng(5);
  std::vector<float> x = random_vec(rng, 130 * 200, 1e-3f);
  for (int64_t i = 0; i < 130 * 200; i += 101) x[i] *= 1e4f;
  for (QuantTile t : {kTile1x128, kTile128x1, kTile128x128})
    for (bool pow2 : {false, true}) check_against_ref(x, 130, 200, t, kE5M2, pow2);
  std::vector<float> out(x.size()), scales(260);
  fake_quant_tiles(x.data(), out.data(), 130, 200, kTile1x128, kE5M2, false, scales.data());
  float amax0 = 0.0f;
  for (int i = 0; i < 128; ++i) amax0 = std::max(amax0, std::fabs(x[i]));
  EXPECT_EQ(scales[0], amax0 / 57344.0f);
}

TEST_F(QuantTest, NonFiniteValuesPoisonTheirTileOnly) {
  std::mt19937 rng(7);
  const int64_t R = 3, C = 300;
  std::vector<float> x = random_vec(rng, R * C);
  const std::vector<float> clean = x;
  x[0 * C + 5] = kNaN;     // tile (0, 0)
  x[1 * C + 200] = kInf;   // tile (1, 1)
  x[1 * C + 201] = -kInf;  // tile (1, 1)
  std::vector<float> out(x.size()), scales(R * 3);
  const QuantStats st = fake_quant_tiles(x.data(), out.data(), R, C, kTile1x128, kE4M3, false, scales.data());
  EXPECT_EQ(st.nonfinite, 3);
  const RefQuant ref = ref_fake_quant(clean, R, C, kTile1x128, kE4M3, false);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t cb = 0; cb < 3; ++cb) {
      const bool poisoned = (r == 0 && cb == 0) || (r == 1 && cb == 1);
      EXPECT_EQ(std::isnan(scales[r * 3 + cb]), poisoned) << r << "," << cb;
      for (int64_t c = cb * 128; c < std::min(C, (cb + 1) * 128); ++c) {
        if (poisoned) {
          EXPECT_TRUE(std::isnan(out[r * C + c])) << r << "," << c;
        } else {
          EXPECT_TRUE(same_bits(out[r * C + c], ref.out[r * C + c])) << r << "," << c;
        }
      }
    }
  }
  // Largest finite |x| still reported.
  float amax = 0.0f;
  for (float v : x)
    if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
  EXPECT_EQ(st.amax, amax);

  // 128x1: the NaN poisons its column's token block only.
  std::vector<float> tall = random_vec(rng, 130 * 4);
  tall[129 * 4 + 2] = kNaN;
  std::vector<float> tout(tall.size()), tsc(8);
  EXPECT_EQ(fake_quant_tiles(tall.data(), tout.data(), 130, 4, kTile128x1, kE4M3, false, tsc.data()).nonfinite, 1);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(std::isnan(tsc[i]), i == 6) << i;
  EXPECT_TRUE(std::isnan(tout[128 * 4 + 2]) && std::isnan(tout[129 * 4 + 2]));
  EXPECT_FALSE(std::isnan(tout[127 * 4 + 2]));

  // Per tensor: everything NaN, the scale is never asked for.
  int calls = 0;
  float used = 0.0f;
  std::vector<float> pout(x.size());
  const QuantStats pst = fake_quant_tensor(x.data(), pout.data(), R * C, [&](float) { return ++calls, 1.0f; },
                                           kE4M3, &used);
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(std::isnan(used));
  EXPECT_EQ(pst.nonfinite, 3);
  EXPECT_EQ(pst.saturated, 0);
  for (float v : pout) ASSERT_TRUE(std::isnan(v));
}

TEST_F(QuantTest, QuantizeThenDequantizeEqualsFakeQuant) {
  std::mt19937 rng(13);
  const int64_t R = 130, C = 200;
  std::vector<float> x = random_vec(rng, R * C);
  for (int64_t i = 0; i < R * C; i += 53) x[i] *= 300.0f;
  for (DType fmt : {kE4M3, kE5M2}) {
    for (QuantTile t : {kTile1x128, kTile128x1, kTile128x128}) {
      for (bool pow2 : {false, true}) {
        SCOPED_TRACE(testing::Message() << dtype_name(fmt) << " " << t.rows << "x" << t.cols << " " << pow2);
        const size_t ns = static_cast<size_t>(quant_tile_count(R, C, t));
        std::vector<float> fake(x.size()), fs(ns), deq(x.size()), qs(ns);
        std::vector<uint8_t> codes(x.size());
        fake_quant_tiles(x.data(), fake.data(), R, C, t, fmt, pow2, fs.data());
        quantize_tiles(x.data(), codes.data(), qs.data(), R, C, t, fmt, pow2);
        dequantize_tiles(codes.data(), qs.data(), deq.data(), R, C, t, fmt);
        EXPECT_TRUE(bitwise_equal(qs, fs));
        EXPECT_TRUE(bitwise_equal(deq, fake));
      }
    }
    // Per tensor.
    std::vector<float> fake(x.size()), deq(x.size());
    std::vector<uint8_t> codes(x.size());
    float s1 = 0.0f, s2 = 0.0f;
    auto rule = [&](float a) { return fp8_scale(a, fmt, false); };
    fake_quant_tensor(x.data(), fake.data(), R * C, rule, fmt, &s1);
    quantize_tensor(x.data(), codes.data(), R * C, rule, fmt, &s2);
    dequantize_tensor(codes.data(), s2, deq.data(), R * C, fmt);
    EXPECT_EQ(s1, s2);
    EXPECT_TRUE(bitwise_equal(deq, fake));
  }
}

TEST_F(QuantTest, Pow2ScalesArePowersOfTwoAndDequantiseExactly) {
  std::mt19937 rng(17);
  const int64_t R = 130, C = 200;
  std::vector<float> x = random_vec(rng, R * C);
  for (int64_t i = 0; i < R * C; i += 29) x[i] *= 77.7f;
  for (QuantTile t : {kTile1x128, kTile128x1, kTile128x128}) {
    const size_t ns = static_cast<size_t>(quant_tile_count(R, C, t));
    std::vector<float> out(x.size()), s2(ns), out32(x.size()), s32(ns);
    fake_quant_tiles(x.data(), out.data(), R, C, t, kE4M3, true, s2.data());
    fake_quant_tiles(x.data(), out32.data(), R, C, t, kE4M3, false, s32.data());
    for (size_t i = 0; i < ns; ++i) {
      EXPECT_EQ(f32_bits(s2[i]) & 0x007fffffu, 0u) << i;  // a normal power of two
      EXPECT_GE(s2[i], s32[i]);
      EXPECT_LT(s2[i], 2.0f * s32[i]);
    }
    // Exact dequantisation: out / s is an E4M3 value, recovered without rounding.
    std::vector<uint8_t> codes(x.size());
    std::vector<float> qs(ns);
    quantize_tiles(x.data(), codes.data(), qs.data(), R, C, t, kE4M3, true);
    const int64_t nc = (C + t.cols - 1) / t.cols;
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < C; ++c) {
        const float s = qs[(r / t.rows) * nc + c / t.cols];
        ASSERT_EQ(out[r * C + c] / s, e4m3_to_f32(codes[r * C + c])) << r << "," << c;
      }
    }
  }
}

TEST_F(QuantTest, OutputMayAliasInput) {
  std::mt19937 rng(19);
  const int64_t R = 257, C = 130;
  const std::vector<float> x = random_vec(rng, R * C);
  for (QuantTile t : {kTile1x128, kTile128x1, kTile128x128}) {
    std::vector<float> out(x.size()), inplace = x;
    fake_quant_tiles(x.data(), out.data(), R, C, t, kE4M3, false);
    fake_quant_tiles(inplace.data(), inplace.data(), R, C, t, kE4M3, false);
    EXPECT_TRUE(bitwise_equal(inplace, out)) << t.rows << "x" << t.cols;
  }
  std::vector<float> out(x.size()), inplace = x;
  auto rule = [](float a) { return fp8_scale(a, kE4M3, false); };
  fake_quant_tensor(x.data(), out.data(), R * C, rule, kE4M3);
  fake_quant_tensor(inplace.data(), inplace.data(), R * C, rule, kE4M3);
  EXPECT_TRUE(bitwise_equal(inplace, out)) << "per tensor";
}

TEST_F(QuantTest, AmaxOnOddLengths) {
  std::mt19937 rng(23);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{17}, int64_t{16383},
                    int64_t{16385}, int64_t{40007}}) {
    SCOPED_TRACE(n);
    std::vector<float> x = random_vec(rng, n);
    QuantStats st = amax_f32(x.data(), n);
    float want = 0.0f;
    for (float v : x) want = std::max(want, std::fabs(v));
    EXPECT_EQ(st.amax, want);
    EXPECT_EQ(st.nonfinite, 0);
    if (n == 0) continue;
    x[n - 1] = -1000.0f;  // the largest magnitude in the tail, negative
    EXPECT_EQ(amax_f32(x.data(), n).amax, 1000.0f);
    x[n - 1] = kNaN;  // a non-finite tail element
    if (n > 2) x[n / 2] = -kInf;
    st = amax_f32(x.data(), n);
    EXPECT_EQ(st.nonfinite, n > 2 ? 2 : 1);
    float finite_max = 0.0f;
    for (float v : x)
      if (std::isfinite(v)) finite_max = std::max(finite_max, std::fabs(v));
    EXPECT_EQ(st.amax, finite_max);
  }
}

TEST_F(QuantTest, ThreadCountDoesNotChangeResults) {
  std::mt19937 rng(29);
  const int64_t R = 300, C = 260;  // R * C * 4 is above the parallel threshold
  std::vector<float> x = random_vec(rng, R * C);
  for (int64_t i = 0; i < R * C; i += 61) x[i] *= 500.0f;
  x[77] = kNaN;
  const int64_t n = 300000;  // amax_f32: several 16384-element chunks on each thread
  std::vector<float> big = random_vec(rng, n);
  big[n - 3] = 99.0f;
  big[12345] = kInf;
  struct Run {
    std::vector<std::vector<float>> outs;
    std::vector<QuantStats> stats;
  };
  auto run = [&](int threads) {
    set_blas_threads(threads);
    Run r;
    for (QuantTile t : {kTile1x128, kTile128x1, kTile128x128}) {
      std::vector<float> out(x.size()), sc(static_cast<size_t>(quant_tile_count(R, C, t)));
      r.stats.push_back(fake_quant_tiles(x.data(), out.data(), R, C, t, kE4M3, false, sc.data()));
      r.outs.push_back(out);
      r.outs.push_back(sc);
    }
    std::vector<float> out(big.size());
    big[12345] = 1.0f;
    r.stats.push_back(fake_quant_tensor(big.data(), out.data(), n, [](float) { return 0.05f; }, kE4M3));
    big[12345] = kInf;
    r.outs.push_back(out);
    r.stats.push_back(amax_f32(big.data(), n));
    return r;
  };
  const Run one = run(1);
  const Run two = run(2);
  const Run four = run(4);
  for (const Run* other : {&two, &four}) {
    ASSERT_EQ(one.outs.size(), other->outs.size());
    for (size_t i = 0; i < one.outs.size(); ++i) EXPECT_TRUE(bitwise_equal(other->outs[i], one.outs[i])) << i;
    for (size_t i = 0; i < one.stats.size(); ++i) {
      EXPECT_EQ(other->stats[i].nonfinite, one.stats[i].nonfinite) << i;
      EXPECT_EQ(other->stats[i].saturated, one.stats[i].saturated) << i;
      EXPECT_EQ(other->stats[i].amax, one.stats[i].amax) << i;
    }
  }
  EXPECT_GT(one.stats[3].saturated, 0);  // the per-tensor run did clip
  EXPECT_EQ(one.stats[4].nonfinite, 1);
  EXPECT_EQ(one.stats[4].amax, 99.0f);
}

}  // namespace
}  // namespace strata
