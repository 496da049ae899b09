// FP8 quantisation ops (REFERENCE.md section 3): scaled casts of fp32 tensors to E4M3/E5M2 with
// one scale per tile (DeepSeek-V3's blockwise recipe) or per tensor (delayed scaling), either
// as codes plus scales (what a GPU GEMM consumes, and what FP8 activation caching stores) or
// "fake-quantised" back to fp32 (q * s: what the CPU emulation feeds one fp32 GEMM).
//
// A tile is `rows x cols` of a row-major (R, C) operand: 1x128 for activations and output
// gradients along the reduction dimension, 128x128 for weights, 128x1 (128 tokens of one channel)
// for the weight-gradient operands. Tiles at the right or bottom edge that are cut short are
// scaled over the elements they have. Scales are stored row-major per tile:
// (ceil(R / tile.rows), ceil(C / tile.cols)).
//
// Scale of a tile with largest magnitude `amax`: s = amax / fp8_max; 1 when amax is 0; never
// below 2^-126 (so that 1/s stays finite: a tile of fp32 subnormals would otherwise overflow the
// reciprocal); with pow2, rounded up to a power of two (exact dequantisation). Quantised value:
// q = cast_satfinite(x * (1/s)), dequantised x' = q * s.
//
// NaN/Inf are never saturated away: a tile holding one gets a NaN scale, so every element of it
// comes out NaN, and the op reports how many non-finite inputs it saw (the caller turns that
// into the run's NaN policy).
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "core/dtype.h"

namespace strata {

struct QuantTile {
  int64_t rows = 1, cols = 128;
};
inline constexpr QuantTile kTile1x128{1, 128};
inline constexpr QuantTile kTile128x128{128, 128};
inline constexpr QuantTile kTile128x1{128, 1};

// What a quantisation saw.
struct QuantStats {
  int64_t nonfinite = 0;  // NaN/Inf inputs (their tiles come out NaN)
  int64_t saturated = 0;  // finite inputs whose x * (1/s) the cast clips to fp8_max (only a given scale can)
  float amax = 0.0f;      // largest finite |x|
  void merge(const QuantStats& o);
};

// Largest finite value of an fp8 format (448 for E4M3, 57344 for E5M2).
float fp8_max(DType fmt);
// The scale for a tile or tensor whose largest magnitude is `amax` (see above). `amax` must be
// finite and >= 0.
float fp8_scale(float amax, DType fmt, bool pow2);
// Scales per tile of an (R, C) operand: ceil(R / tile.rows) * ceil(C / tile.cols).
int64_t quant_tile_count(int64_t R, int64_t C, QuantTile tile);

// x: (R, C); out: (R, C) fake-quantised, may alias x; scales: per tile (optional, may be null).
QuantStats fake_quant_tiles(const float* x, float* out, int64_t R, int64_t C, QuantTile tile, DType fmt, bool pow2,
                            float* scales = nullptr);
// Same with one scale for all n elements (per-tensor recipes; counts saturation). The scale is
// `scale_for(amax)` of this tensor's own amax (a delayed recipe ignores it and returns the scale
// of its history); `scale_used` (optional) receives it.
QuantStats fake_quant_tensor(const float* x, float* out, int64_t n, absl::FunctionRef<float(float)> scale_for,
                             DType fmt, float* scale_used = nullptr);

// x: (R, C) -> codes (R, C) and per-tile scales.
QuantStats quantize_tiles(const float* x, uint8_t* codes, float* scales, int64_t R, int64_t C, QuantTile tile,
                          DType fmt, bool pow2);
// codes (R, C) and per-tile scales -> out (R, C) = q * s.
void dequantize_tiles(const uint8_t* codes, const float* scales, float* out, int64_t R, int64_t C, QuantTile tile,
                      DType fmt);

// One given scale for all n elements: codes (n), and back (out = q * scale).
QuantStats quantize_tensor(const float* x, uint8_t* codes, int64_t n, absl::FunctionRef<float(float)> scale_for,
                           DType fmt, float* scale_used);
void dequantize_tensor(const uint8_t* codes, float scale, float* out, int64_t n, DType fmt);

// Largest finite |x| and the count of non-finite elements of x (n elements), without quantising.
QuantStats amax_f32(const float* x, int64_t n);

}  // namespace strata
