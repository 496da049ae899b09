// The CUDA fp8 quantisation ops (kernels/cuda/quant.cu) against the CPU ops of kernels/quant.h on
// the same inputs, bit for bit: quantize_tiles (codes and scales), dequantize_tiles,
// fake_quant_tiles (with and without a scales array, and in place), quantize_tensor_scaled against
// quantize_tensor with that scale, and amax_f32, for every tile shape (1x128, 128x128, 128x1), E4M3
// and E5M2, pow2 scales on and off. The inputs span many magnitudes (fp8 subnormal codes,
// saturation, an fp32 subnormal tile hitting the 2^-126 scale floor) on R x C not multiples of 128
// (edge tiles cut short), with a tile holding NaN, one holding +Inf and -Inf, and all-zero tiles;
// sizes 0 and 1. Codes, scales and outputs must match exactly (NaN matching NaN: the sign of a NaN
// code is the input NaN's, so the inputs use the positive quiet NaN), and so must the statistics
// (non-finite and saturated counts, the amax bits).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/quant.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

using gputest::DeviceArray;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr QuantTile kTiles[] = {kTile1x128, kTile128x128, kTile128x1};
constexpr DType kFormats[] = {DType::kF8E4M3, DType::kF8E5M2};

std::string describe(int64_t R, int64_t C, QuantTile tile, DType fmt, bool pow2) {
  return "R=" + std::to_string(R) + " C=" + std::to_string(C) + " tile " +
         std::to_string(tile.rows) + "x" + std::to_string(tile.cols) + " " + dtype_name(fmt) +
         (pow2 ? " pow2" : "");
}

// x (R, C): normal values whose scale varies by row over ~2^-20..2^12 (so tiles reach fp8
// subnormal codes and ties), plus, when the matrix is large enough, a NaN in tile (0, 0), +Inf and
// -Inf together in the last tile, an all-zero block rows [128, 256) x cols [128, 256) (a whole tile
// of every shape) and a row of fp32 subnormals (the 2^-126 scale floor for 1x128 tiles).
std::vector<float> make_input(int64_t R, int64_t C, std::mt19937& rng) {
  std::uniform_real_distribution<float> log_mag(-20.0f, 12.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(R * C));
  for (int64_t r = 0; r < R; ++r) {
    const float row_scale = std::exp2(log_mag(rng));
    for (int64_t c = 0; c < C; ++c) x[r * C + c] = normal(rng) * row_scale;
  }
  if (R >= 260 && C >= 256) {
    x[3 * C + 5] = kNaN;
    x[(R - 1) * C + C - 1] = kInf;
    x[(R - 2) * C + C - 2] = -kInf;
    for (int64_t r = 128; r < 256; ++r) {
      for (int64_t c = 128; c < 256; ++c) x[r * C + c] = 0.0f;
    }
    for (int64_t c = 0; c < 128; ++c) x[259 * C + c] = normal(rng) * 1e-40f;
  }
  return x;
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(float)) == 0;
}

// Exact equality of float vectors (NaN == NaN), naming the first difference.
::testing::AssertionResult floats_equal(const std::vector<float>& got,
                                        const std::vector<float>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  }
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!same_float(got[i], want[i]) && bad++ == 0) first = static_cast<int64_t>(i);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " differ; first at "
                                       << first << ": gpu " << got[first] << " cpu "
                                       << want[first];
}

::testing::AssertionResult codes_equal(const std::vector<uint8_t>& got,
                                       const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  }
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ == 0) first = static_cast<int64_t>(i);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " codes differ; first at "
                                       << first << ": gpu " << int{got[first]} << " cpu "
                                       << int{want[first]};
}

void expect_stats_equal(const QuantStats& got, const QuantStats& want) {
  EXPECT_EQ(got.nonfinite, want.nonfinite) << "non-finite count";
  EXPECT_EQ(got.saturated, want.saturated) << "saturated count";
  EXPECT_TRUE(same_float(got.amax, want.amax)) << "amax: gpu " << got.amax << " cpu " << want.amax;
}

// quantize_tiles, dequantize_tiles and fake_quant_tiles (scales given, null, in place) on one
// input, each against the CPU.
void check_tiles(int64_t R, int64_t C, QuantTile tile, DType fmt, bool pow2, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " " << describe(R, C, tile, fmt, pow2));
  std::mt19937 rng(seed);
  const std::vector<float> x = make_input(R, C, rng);
  const size_t n = x.size(), tiles = static_cast<size_t>(quant_tile_count(R, C, tile));
  // quantize_tiles CHECKs for a scales array even when there are no tiles: never pass null.
  const size_t scales_size = std::max<size_t>(tiles, 1);
  auto first_tiles = [&](std::vector<float> v) {
    v.resize(tiles);
    return v;
  };

  // CPU.
  std::vector<uint8_t> codes(n);
  std::vector<float> scales(scales_size), deq(n), fake(n), fake_scales(scales_size);
  const QuantStats st =
      quantize_tiles(x.data(), codes.data(), scales.data(), R, C, tile, fmt, pow2);
  dequantize_tiles(codes.data(), scales.data(), deq.data(), R, C, tile, fmt);
  const QuantStats fst =
      fake_quant_tiles(x.data(), fake.data(), R, C, tile, fmt, pow2, fake_scales.data());

  // quantize_tiles.
  DeviceArray<float> d_x(x), d_scales(scales_size);
  DeviceArray<uint8_t> d_codes(n);
  d_codes.poison();
  d_scales.poison();
  const QuantStats gst =
      cuda::quantize_tiles(d_x.data(), d_codes.data(), d_scales.data(), R, C, tile, fmt, pow2);
  EXPECT_TRUE(codes_equal(d_codes.download(), codes)) << "quantize_tiles codes";
  EXPECT_TRUE(floats_equal(first_tiles(d_scales.download()), first_tiles(scales)))
      << "quantize_tiles scales";
  expect_stats_equal(gst, st);

  // dequantize_tiles of the CPU's codes and scales.
  DeviceArray<uint8_t> d_cpu_codes(codes);
  DeviceArray<float> d_cpu_scales(scales), d_deq(n);
  d_deq.poison();
  cuda::dequantize_tiles(d_cpu_codes.data(), d_cpu_scales.data(), d_deq.data(), R, C, tile, fmt);
  EXPECT_TRUE(floats_equal(d_deq.download(), deq)) << "dequantize_tiles";

  // fake_quant_tiles with scales, without, and in place.
  DeviceArray<float> d_fake(n), d_fake_scales(scales_size);
  d_fake.poison();
  d_fake_scales.poison();
  const QuantStats gfst = cuda::fake_quant_tiles(d_x.data(), d_fake.data(), R, C, tile, fmt, pow2,
                                                 d_fake_scales.data());
  EXPECT_TRUE(floats_equal(d_fake.download(), fake)) << "fake_quant_tiles";
  EXPECT_TRUE(floats_equal(first_tiles(d_fake_scales.download()), first_tiles(fake_scales)))
      << "fake_quant_tiles scales";
  expect_stats_equal(gfst, fst);

  d_fake.poison();
  expect_stats_equal(
      cuda::fake_quant_tiles(d_x.data(), d_fake.data(), R, C, tile, fmt, pow2, nullptr), fst);
  EXPECT_TRUE(floats_equal(d_fake.download(), fake)) << "fake_quant_tiles, scales null";

  DeviceArray<float> d_inplace(x);
  expect_stats_equal(cuda::fake_quant_tiles(d_inplace.data(), d_inplace.data(), R, C, tile, fmt,
                                            pow2, nullptr),
                     fst);
  EXPECT_TRUE(floats_equal(d_inplace.download(), fake)) << "fake_quant_tiles in place";
}

GPU_TEST(CudaQuantTest, TilesEveryShapeFormatAndPow2) {
  for (DType fmt : kFormats) {
    for (bool pow2 : {false, true}) {
      for (QuantTile tile : kTiles) {
        check_tiles(300, 333, tile, fmt, pow2, gputest::fresh_seed());  // edges, NaN, Inf, zeros
        check_tiles(256, 384, tile, fmt, pow2, gputest::fresh_seed());  // whole tiles only
        check_tiles(5, 131, tile, fmt, pow2, gputest::fresh_seed());    // short tiles
      }
    }
  }
}

GPU_TEST(CudaQuantTest, TilesTinyAndEmpty) {
  for (QuantTile tile : kTiles) {
    check_tiles(1, 1, tile, DType::kF8E4M3, false, gputest::fresh_seed());
    check_tiles(1, 1, tile, DType::kF8E5M2, true, gputest::fresh_seed());
    check_tiles(0, 7, tile, DType::kF8E4M3, false, gputest::fresh_seed());
    check_tiles(7, 0, tile, DType::kF8E4M3, true, gputest::fresh_seed());
  }
}

// quantize_tensor_scaled(scale on the device) against quantize_tensor returning that scale.
void check_tensor_scaled(const std::vector<float>& x, float scale, DType fmt, const char* what) {
  SCOPED_TRACE(testing::Message() << what << " n=" << x.size() << " scale " << scale << " "
                                  << dtype_name(fmt));
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> codes(x.size());
  float used = 0.0f;
  const QuantStats st = quantize_tensor(x.data(), codes.data(), n, [&](float) { return scale; },
                                        fmt, &used);
  DeviceArray<float> d_x(x), d_scale(std::vector<float>{scale});
  DeviceArray<uint8_t> d_codes(x.size());
  d_codes.poison();
  const QuantStats gst =
      cuda::quantize_tensor_scaled(d_x.data(), d_codes.data(), n, d_scale.data(), fmt);
  EXPECT_TRUE(codes_equal(d_codes.download(), codes)) << "quantize_tensor_scaled codes";
  expect_stats_equal(gst, st);
}

GPU_TEST(CudaQuantTest, TensorScaled) {
  for (DType fmt : kFormats) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    std::vector<float> x = gputest::randn(100003, rng, 3.0f);
    const float amax = amax_f32(x.data(), static_cast<int64_t>(x.size())).amax;
    // The tensor's own scale (the amax element gives 448.00003, not saturation), a scale a
    // quarter of it (the largest values saturate and are counted) and a pow2 one.
    check_tensor_scaled(x, fp8_scale(amax, fmt, false), fmt, "own scale");
    check_tensor_scaled(x, fp8_scale(amax, fmt, false) * 0.25f, fmt, "quarter scale");
    check_tensor_scaled(x, fp8_scale(amax, fmt, true), fmt, "pow2 scale");
    // Tiny values against a large scale: fp8 subnormal codes and zeros.
    check_tensor_scaled(gputest::randn(1000, rng, 1e-3f), 1.0f, fmt, "subnormal codes");
    check_tensor_scaled({2.5f}, 1e-5f, fmt, "one element, saturated");
    check_tensor_scaled({}, 1.0f, fmt, "empty");
    // A NaN or an Inf makes the whole tensor NaN, saturating nothing.
    x[77] = kNaN;
    check_tensor_scaled(x, fp8_scale(amax, fmt, false) * 0.25f, fmt, "with NaN");
    x[77] = 1.0f;
    x[100002] = -kInf;
    check_tensor_scaled(x, fp8_scale(amax, fmt, false), fmt, "with -Inf");
  }
}

void check_amax(const std::vector<float>& x, const char* what) {
  SCOPED_TRACE(testing::Message() << what << " n=" << x.size());
  const int64_t n = static_cast<int64_t>(x.size());
  const QuantStats st = amax_f32(x.data(), n);
  DeviceArray<float> d_x(x);
  expect_stats_equal(cuda::amax_f32(d_x.data(), n), st);
}

GPU_TEST(CudaQuantTest, Amax) {
  const uint32_t seed = gputest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  check_amax({}, "empty");
  check_amax({-3.5f}, "one element");
  check_amax({0.0f, -0.0f, 0.0f}, "zeros");
  check_amax({1e-45f, -3e-40f}, "fp32 subnormals");
  std::vector<float> x = gputest::randn(1000003, rng, 10.0f);
  check_amax(x, "random");
  x[12345] = kNaN;
  x[999999] = kInf;
  x[5] = -kInf;
  check_amax(x, "with NaN and Inf");
  check_amax({kNaN, kInf}, "nothing finite");
}

}  // namespace
}  // namespace strata
