// CPU FP8 quantisation (kernels/quant.h). One pass finds the per-column amax of a block of rows
// (a tile's amax is then the max over its columns), a second scales, casts and writes each row.
// Both passes run along rows, so every tile shape (1x128, 128x128, 128x1) vectorises the same
// way; row blocks run in parallel. Codes come from the exact satfinite codecs of core/dtype;
// fake quantisation (the emulation's hot path) rounds to the fp8 grid in AVX2 registers instead
// (round_fp8 below), which computes the same values (tests/kernels/quant_test.cc checks them
// against the codecs) at about a tenth of the cost of encoding and decoding.
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/vec.h"  // kLanes, parallel_for
#include "kernels/quant.h"

namespace strata {

void QuantStats::merge(const QuantStats& o) {
  nonfinite += o.nonfinite;
  saturated += o.saturated;
  amax = std::max(amax, o.amax);
}

float fp8_max(DType fmt) {
  switch (fmt) {
    case DType::kF8E4M3: return kE4M3Max;
    case DType::kF8E5M2: return kE5M2Max;
    default: break;
  }
  FATAL() << "fp8_max: " << dtype_name(fmt) << " is not an fp8 format";
}

float fp8_scale(float amax, DType fmt, bool pow2) {
  if (amax == 0.0f) return 1.0f;
  float s = std::max(amax / fp8_max(fmt), 0x1p-126f);
  if (pow2) {
    const uint32_t u = f32_bits(s);
    if (u & 0x007fffffu) s = f32_from_bits((u & 0x7f800000u) + 0x00800000u);  // next power of two up
  }
  return s;
}

int64_t quant_tile_count(int64_t R, int64_t C, QuantTile tile) {
  return ((R + tile.rows - 1) / tile.rows) * ((C + tile.cols - 1) / tile.cols);
}

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
using cpu::kLanes;

// Rounds 8 floats to the nearest value of an fp8 format with kMant mantissa bits and smallest
// normal exponent kMinExp, ties to even, as fp32: finite values beyond fmax and +-Inf saturate
// to +-fmax, NaN stays NaN, the sign of zero is kept. Normal values keep kMant mantissa bits by
// integer rounding of the fp32 bits; values below the smallest normal round to the fixed
// subnormal quantum 2^(kMinExp - kMant) by adding and subtracting a magic constant whose ulp is
// that quantum.
template <int kMant, int kMinExp>
inline __m256 round_fp8(__m256 v, __m256 fmax) {
  constexpr int kDrop = 23 - kMant;
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_andnot_ps(sign_mask, v);
  __m256i u = _mm256_castps_si256(a);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, kDrop), _mm256_set1_epi32(1));
  u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32((1 << (kDrop - 1)) - 1), lsb));
  u = _mm256_and_si256(u, _mm256_set1_epi32(~((1 << kDrop) - 1)));
  const __m256 normal = _mm256_castsi256_ps(u);
  const __m256 magic = _mm256_set1_ps(std::ldexp(1.5f, 23 + kMinExp - kMant));
  const __m256 sub = _mm256_sub_ps(_mm256_add_ps(a, magic), magic);
  const __m256 small = _mm256_cmp_ps(a, _mm256_set1_ps(std::ldexp(1.0f, kMinExp)), _CMP_LT_OQ);
  __m256 r = _mm256_min_ps(_mm256_blendv_ps(normal, sub, small), fmax);
  r = _mm256_or_ps(r, _mm256_and_ps(sign_mask, v));
  return _mm256_blendv_ps(r, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

// out[c] = round_fp8(x[c] * inv[c]) * sc[c] for c in [0, C): fake quantisation of one row.
template <int kMant, int kMinExp>
void fake_quant_row(const float* x, const float* inv, const float* sc, float* out, int64_t C, float fmax_f) {
  const __m256 fmax = _mm256_set1_ps(fmax_f);
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const __m256 q = round_fp8<kMant, kMinExp>(_mm256_mul_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(inv + c)), fmax);
    _mm256_storeu_ps(out + c, _mm256_mul_ps(q, _mm256_loadu_ps(sc + c)));
  }
  if (c < C) {  // the tail through a padded register
    float xb[8] = {}, ib[8] = {}, sb[8] = {}, ob[8];
    for (int64_t j = 0; c + j < C; ++j) {
      xb[j] = x[c + j];
      ib[j] = inv[c + j];
      sb[j] = sc[c + j];
    }
    const __m256 q = round_fp8<kMant, kMinExp>(_mm256_mul_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(ib)), fmax);
    _mm256_storeu_ps(ob, _mm256_mul_ps(q, _mm256_loadu_ps(sb)));
    for (int64_t j = 0; c + j < C; ++j) out[c + j] = ob[j];
  }
}

// How many of 8 scaled values the satfinite cast clips: rounding to nearest even with an
// unbounded exponent would take them past fp8_max. The boundary is the midpoint between max and
// the next step up (E4M3 448 and 480: 464 ties to the even 448; E5M2 57344 and 65536: 61440 ties
// to the even 65536). A value just above max, such as the 448.00003 that x * (1/s) gives for
// the element that set s = amax / 448, rounds to max anyway and is not saturation.
template <int kMant>
inline int clipped_by_cast(__m256 y) {
  static_assert(kMant == 3 || kMant == 2, "E4M3 or E5M2");
  const __m256 a = _mm256_and_ps(y, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  const __m256 clipped = kMant == 3 ? _mm256_cmp_ps(a, _mm256_set1_ps(464.0f), _CMP_GT_OQ)
                                    : _mm256_cmp_ps(a, _mm256_set1_ps(61440.0f), _CMP_GE_OQ);
  return __builtin_popcount(_mm256_movemask_ps(clipped));
}
inline bool clipped_by_cast(float a, DType fmt) {
  return fmt == DType::kF8E4M3 ? a > 464.0f : a >= 61440.0f;
}

// out[i] = round_fp8(x[i] * inv) * s for i in [0, n); returns how many x[i] * inv the cast clips.
template <int kMant, int kMinExp>
int64_t fake_quant_run(const float* x, float inv_f, float s_f, float* out, int64_t n, float fmax_f) {
  const __m256 fmax = _mm256_set1_ps(fmax_f), inv = _mm256_set1_ps(inv_f), s = _mm256_set1_ps(s_f);
  int64_t saturated = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
    saturated += clipped_by_cast<kMant>(y);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(round_fp8<kMant, kMinExp>(y, fmax), s));
  }
  if (i < n) {
    float xb[8] = {}, ob[8];
    for (int64_t j = 0; i + j < n; ++j) xb[j] = x[i + j];
    const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(xb), inv);
    saturated += clipped_by_cast<kMant>(y);  // the zero padding is never clipped
    _mm256_storeu_ps(ob, _mm256_mul_ps(round_fp8<kMant, kMinExp>(y, fmax), s));
    for (int64_t j = 0; i + j < n; ++j) out[i + j] = ob[j];
  }
  return saturated;
}

int64_t fake_quant_run(const float* x, float inv, float s, float* out, int64_t n, DType fmt) {
  return fmt == DType::kF8E4M3 ? fake_quant_run<3, -6>(x, inv, s, out, n, kE4M3Max)
                               : fake_quant_run<2, -14>(x, inv, s, out, n, kE5M2Max);
}

// Largest finite |x[i]| over n elements; *bad set when any is NaN/Inf.
float abs_max(const float* x, int64_t n, bool* bad) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 big = _mm256_set1_ps(FLT_MAX);
  __m256 m = _mm256_setzero_ps(), nf = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
    const __m256 finite = _mm256_cmp_ps(a, big, _CMP_LE_OQ);  // false for NaN and Inf
    m = _mm256_max_ps(m, _mm256_and_ps(a, finite));
    nf = _mm256_or_ps(nf, _mm256_andnot_ps(finite, abs_mask));
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float r = 0.0f;
  for (float v : lanes) r = std::max(r, v);
  bool any = _mm256_movemask_ps(_mm256_cmp_ps(nf, _mm256_setzero_ps(), _CMP_NEQ_UQ)) != 0;
  for (; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a <= FLT_MAX) {
      r = std::max(r, a);
    } else {
      any = true;
    }
  }
  if (any) *bad = true;
  return r;
}

void fake_quant_row(const float* x, const float* inv, const float* sc, float* out, int64_t C, DType fmt) {
  if (fmt == DType::kF8E4M3) {
    fake_quant_row<3, -6>(x, inv, sc, out, C, kE4M3Max);
  } else {
    fake_quant_row<2, -14>(x, inv, sc, out, C, kE5M2Max);
  }
}

// Per-thread scratch for one block of rows.
struct BlockScratch {
  std::vector<float> colmax, colbad, sc, inv, tmp;
  explicit BlockScratch(int64_t C)
      : colmax(static_cast<size_t>(C)), colbad(static_cast<size_t>(C)), sc(static_cast<size_t>(C)),
        inv(static_cast<size_t>(C)), tmp(static_cast<size_t>(C)) {}
};

// colmax[c] = max |x[r, c]| over the block's finite elements; colbad[c] = 1 where any is NaN/Inf.
void column_amax(const float* x, int64_t rows, int64_t C, float* colmax, float* colbad) {
  std::fill(colmax, colmax + C, 0.0f);
  std::fill(colbad, colbad + C, 0.0f);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 big = _mm256_set1_ps(FLT_MAX), one = _mm256_set1_ps(1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xr + c), abs_mask);
      const __m256 finite = _mm256_cmp_ps(a, big, _CMP_LE_OQ);  // false for NaN and Inf
      _mm256_storeu_ps(colmax + c, _mm256_max_ps(_mm256_loadu_ps(colmax + c), _mm256_and_ps(a, finite)));
      _mm256_storeu_ps(colbad + c, _mm256_or_ps(_mm256_loadu_ps(colbad + c), _mm256_andnot_ps(finite, one)));
    }
    for (; c < C; ++c) {
      const float a = std::fabs(xr[c]);
      if (a <= FLT_MAX) {
        colmax[c] = std::max(colmax[c], a);
      } else {
        colbad[c] = 1.0f;
      }
    }
  }
}

// Tile scales of one block of rows from its column amax, expanded per column into sc / inv.
// Returns the stats of the block (the non-finite count is recounted exactly for bad tiles).
QuantStats block_scales(const float* x, int64_t rows, int64_t C, QuantTile tile, DType fmt, bool pow2,
                        BlockScratch& s, float* scales_row) {
  QuantStats st;
  const int64_t ncb = (C + tile.cols - 1) / tile.cols;
  for (int64_t cb = 0; cb < ncb; ++cb) {
    const int64_t c0 = cb * tile.cols, c1 = std::min(C, c0 + tile.cols);
    float amax = 0.0f;
    bool bad = false;
    for (int64_t c = c0; c < c1; ++c) {
      amax = std::max(amax, s.colmax[c]);
      bad = bad || s.colbad[c] != 0.0f;
    }
    st.amax = std::max(st.amax, amax);
    float scale = kNaN;
    if (bad) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = c0; c < c1; ++c) st.nonfinite += !(std::fabs(x[r * C + c]) <= FLT_MAX);
    } else {
      scale = fp8_scale(amax, fmt, pow2);
    }
    if (scales_row) scales_row[cb] = scale;
    const float inv = 1.0f / scale;
    for (int64_t c = c0; c < c1; ++c) {
      s.sc[c] = scale;
      s.inv[c] = inv;
    }
  }
  return st;
}

// tmp[c] = x[c] * inv[c].
void scale_row(const float* x, const float* inv, float* tmp, int64_t C) {
  cpu::map_f32(tmp, C, [&](int64_t c) { return x[c] * inv[c]; });
}

// Runs `emit(r, x_row, inv, sc, tmp)` for every row with the per-column reciprocal scales and
// scales of its tiles (tmp: a row of scratch), block by block in parallel. scales (optional):
// per tile.
template <typename Emit>
QuantStats quantize_rows(const float* x, int64_t R, int64_t C, QuantTile tile, DType fmt, bool pow2, float* scales,
                         Emit emit) {
  CHECK(tile.rows > 0 && tile.cols > 0) << "quantisation tile " << tile.rows << "x" << tile.cols;
  fp8_max(fmt);  // rejects non-fp8 formats
  const int64_t nrb = (R + tile.rows - 1) / tile.rows, ncb = (C + tile.cols - 1) / tile.cols;
  std::vector<QuantStats> per_block(static_cast<size_t>(nrb));
  cpu::parallel_for(nrb, R * C * 4, [&](int64_t b0, int64_t b1) {
    BlockScratch s(C);
    for (int64_t rb = b0; rb < b1; ++rb) {
      const int64_t r0 = rb * tile.rows, rows = std::min(R, r0 + tile.rows) - r0;
      column_amax(x + r0 * C, rows, C, s.colmax.data(), s.colbad.data());
      per_block[rb] =
          block_scales(x + r0 * C, rows, C, tile, fmt, pow2, s, scales ? scales + rb * ncb : nullptr);
      for (int64_t r = r0; r < r0 + rows; ++r) emit(r, x + r * C, s.inv.data(), s.sc.data(), s.tmp.data());
    }
  });
  QuantStats total;
  for (const QuantStats& b : per_block) total.merge(b);
  return total;
}

}  // namespace

// Fake quantisation in 1 x cols tiles: each tile is a contiguous run, so its amax and its
// rounding are two passes over it with the scale in a register.
QuantStats fake_quant_row_tiles(const float* x, float* out, int64_t R, int64_t C, int64_t cols, DType fmt, bool pow2,
                                float* scales) {
  const int64_t ncb = (C + cols - 1) / cols;
  std::vector<QuantStats> per_row(static_cast<size_t>(R));
  cpu::parallel_for(R, R * C * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      QuantStats st;
      for (int64_t cb = 0; cb < ncb; ++cb) {
        const int64_t c0 = cb * cols, n = std::min(C, c0 + cols) - c0;
        const float* xt = x + r * C + c0;
        bool bad = false;
        const float amax = abs_max(xt, n, &bad);
        st.amax = std::max(st.amax, amax);
        float scale = kNaN;
        if (bad) {
          for (int64_t i = 0; i < n; ++i) st.nonfinite += !(std::fabs(xt[i]) <= FLT_MAX);
        } else {
          scale = fp8_scale(amax, fmt, pow2);
        }
        if (scales) scales[r * ncb + cb] = scale;
        fake_quant_run(xt, 1.0f / scale, scale, out + r * C + c0, n, fmt);
      }
      per_row[r] = st;
    }
  });
  QuantStats total;
  for (const QuantStats& s : per_row) total.merge(s);
  return total;
}

QuantStats fake_quant_tiles(const float* x, float* out, int64_t R, int64_t C, QuantTile tile, DType fmt, bool pow2,
                            float* scales) {
  fp8_max(fmt);  // rejects non-fp8 formats
  if (tile.rows == 1) return fake_quant_row_tiles(x, out, R, C, tile.cols, fmt, pow2, scales);
  return quantize_rows(x, R, C, tile, fmt, pow2, scales, [&](int64_t r, const float* xr, const float* inv,
                                                              const float* sc, float*) {
    fake_quant_row(xr, inv, sc, out + r * C, C, fmt);
  });
}

QuantStats quantize_tiles(const float* x, uint8_t* codes, float* scales, int64_t R, int64_t C, QuantTile tile,
                          DType fmt, bool pow2) {
  CHECK(scales != nullptr) << "quantize_tiles needs somewhere to put the scales";
  return quantize_rows(x, R, C, tile, fmt, pow2, scales, [&](int64_t r, const float* xr, const float* inv,
                                                              const float*, float* tmp) {
    scale_row(xr, inv, tmp, C);
    if (fmt == DType::kF8E4M3) {
      f32_to_e4m3_n(tmp, codes + r * C, static_cast<size_t>(C));
    } else {
      f32_to_e5m2_n(tmp, codes + r * C, static_cast<size_t>(C));
    }
  });
}

void dequantize_tiles(const uint8_t* codes, const float* scales, float* out, int64_t R, int64_t C, QuantTile tile,
                      DType fmt) {
  fp8_max(fmt);
  const int64_t nrb = (R + tile.rows - 1) / tile.rows, ncb = (C + tile.cols - 1) / tile.cols;
  cpu::parallel_for(nrb, R * C * 2, [&](int64_t b0, int64_t b1) {
    std::vector<float> sc(static_cast<size_t>(C));
    for (int64_t rb = b0; rb < b1; ++rb) {
      for (int64_t c = 0; c < C; ++c) sc[c] = scales[rb * ncb + c / tile.cols];
      const int64_t r0 = rb * tile.rows, r1 = std::min(R, r0 + tile.rows);
      for (int64_t r = r0; r < r1; ++r) {
        float* o = out + r * C;
        if (fmt == DType::kF8E4M3) {
          e4m3_to_f32_n(codes + r * C, o, static_cast<size_t>(C));
        } else {
          e5m2_to_f32_n(codes + r * C, o, static_cast<size_t>(C));
        }
        cpu::map_f32(o, C, [&](int64_t c) { return o[c] * sc[c]; });
      }
    }
  });
}

QuantStats amax_f32(const float* x, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<QuantStats> part(static_cast<size_t>(chunks));
  cpu::parallel_for(chunks, n, [&](int64_t b0, int64_t b1) {
    for (int64_t ch = b0; ch < b1; ++ch) {
      const int64_t i0 = ch * kChunk, i1 = std::min(n, i0 + kChunk);
      QuantStats st;
      bool any_bad = false;
      st.amax = abs_max(x + i0, i1 - i0, &any_bad);
      if (any_bad)
        for (int64_t i = i0; i < i1; ++i) st.nonfinite += !(std::fabs(x[i]) <= FLT_MAX);
      part[ch] = st;
    }
  });
  QuantStats total;
  for (const QuantStats& p : part) total.merge(p);
  return total;
}

namespace {

// Per-tensor scale: one pass for amax and non-finite values, then scale and cast chunk by chunk.
// A tensor holding NaN/Inf comes out all NaN (its one "tile" is poisoned).
template <typename Emit>
QuantStats quantize_flat(const float* x, int64_t n, absl::FunctionRef<float(float)> scale_for, DType fmt,
                         float* scale_used, Emit emit) {
  fp8_max(fmt);  // rejects non-fp8 formats
  QuantStats st = amax_f32(x, n);
  const float scale = st.nonfinite > 0 ? kNaN : scale_for(st.amax);
  if (scale_used) *scale_used = scale;
  const float inv = 1.0f / scale;
  constexpr int64_t kChunk = 1 << 12;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<int64_t> sat(static_cast<size_t>(chunks));
  cpu::parallel_for(chunks, n * 4, [&](int64_t b0, int64_t b1) {
    std::vector<float> tmp(kChunk);
    for (int64_t ch = b0; ch < b1; ++ch) {
      const int64_t i0 = ch * kChunk, len = std::min(n, i0 + kChunk) - i0;
      cpu::map_f32(tmp.data(), len, [&](int64_t i) { return x[i0 + i] * inv; });
      int64_t count = 0;
      for (int64_t i = 0; i < len; ++i) count += clipped_by_cast(std::fabs(tmp[i]), fmt);
      sat[ch] = count;
      emit(i0, len, tmp.data());
    }
  });
  for (int64_t c : sat) st.saturated += c;
  return st;
}

}  // namespace

QuantStats fake_quant_tensor(const float* x, float* out, int64_t n, absl::FunctionRef<float(float)> scale_for,
                             DType fmt, float* scale_used) {
  float scale = 0.0f;
  if (!scale_used) scale_used = &scale;
  QuantStats st = amax_f32(x, n);
  *scale_used = st.nonfinite > 0 ? kNaN : scale_for(st.amax);
  const float s = *scale_used, inv = 1.0f / s;
  constexpr int64_t kChunk = 1 << 12;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<int64_t> sat(static_cast<size_t>(chunks));
  cpu::parallel_for(chunks, n * 2, [&](int64_t b0, int64_t b1) {
    for (int64_t ch = b0; ch < b1; ++ch) {
      const int64_t i0 = ch * kChunk, len = std::min(n, i0 + kChunk) - i0;
      sat[ch] = fake_quant_run(x + i0, inv, s, out + i0, len, fmt);
    }
  });
  for (int64_t c : sat) st.saturated += c;
  return st;
}

QuantStats quantize_tensor(const float* x, uint8_t* codes, int64_t n, absl::FunctionRef<float(float)> scale_for,
                           DType fmt, float* scale_used) {
  return quantize_flat(x, n, scale_for, fmt, scale_used, [&](int64_t i0, int64_t len, float* tmp) {
    if (fmt == DType::kF8E4M3) {
      f32_to_e4m3_n(tmp, codes + i0, static_cast<size_t>(len));
    } else {
      f32_to_e5m2_n(tmp, codes + i0, static_cast<size_t>(len));
    }
  });
}

void dequantize_tensor(const uint8_t* codes, float scale, float* out, int64_t n, DType fmt) {
  dequantize_tiles(codes, &scale, out, 1, n, QuantTile{1, n > 0 ? n : 1}, fmt);
}

}  // namespace strata
