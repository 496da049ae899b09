// CPU rotary position embedding in Hugging Face's rotate_half layout (kernels/ops.h): the
// cos/sin tables and the in-place rotation of (rows, H, D) activations, forward and inverse.
//
// HF computes q * cos + rotate_half(q) * sin with emb = cat(freqs, freqs): element i < D/2 and
// element i + D/2 share angle i, so each pair (x1, x2) = (x[i], x[i + D/2]) turns by one angle.
// Written as x1 cos - x2 sin and x2 cos + x1 sin, each output is one product rounded, then a sum
// rounded, as in HF's fp32 arithmetic. The backward of a rotation is its transpose (the angle
// negated), which is all `inverse` does.
#include <cmath>
#include <cstdint>

#include "core/check.h"
#include "kernels/cpu/vec.h"  // kLanes, parallel_for
#include "kernels/ops.h"

namespace strata {

using cpu::kLanes;

namespace {

// Rotates the pairs (x[i], x[i + half]) of one head by the angles whose cos and sin are c[i],
// s[i]; sign = -1 turns the other way. Inputs are read before outputs are written.
inline void rotate_head(float* x, const float* c, const float* s, int64_t half, float sign) {
  float* x1 = x;
  float* x2 = x + half;
  int64_t i = 0;
  for (; i + kLanes <= half; i += kLanes) {
    float a[kLanes], b[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) {
      const float sn = sign * s[i + j];
      a[j] = x1[i + j] * c[i + j] - x2[i + j] * sn;
      b[j] = x2[i + j] * c[i + j] + x1[i + j] * sn;
    }
    for (int64_t j = 0; j < kLanes; ++j) {
      x1[i + j] = a[j];
      x2[i + j] = b[j];
    }
  }
  for (; i < half; ++i) {
    const float sn = sign * s[i];
    const float a = x1[i] * c[i] - x2[i] * sn;
    const float b = x2[i] * c[i] + x1[i] * sn;
    x1[i] = a;
    x2[i] = b;
  }
}

}  // namespace

void rope_tables_f32(float* cos, float* sin, const float* inv_freq, int64_t max_pos, int64_t D) {
  CHECK(D > 0 && D % 2 == 0) << "rope_tables: head dimension D=" << D << " must be even";
  CHECK_GE(max_pos, 0) << "rope_tables";
  const int64_t half = D / 2;
  for (int64_t p = 0; p < max_pos; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];  // one fp32 rounding, as HF's matmul
      cos[p * half + i] = std::cos(angle);
      sin[p * half + i] = std::sin(angle);
    }
  }
}

void rope_apply_f32(float* x, const int32_t* pos, const float* cos, const float* sin, int64_t rows,
                    int64_t H, int64_t D, bool inverse) {
  CHECK(D > 0 && D % 2 == 0) << "rope_apply: head dimension D=" << D << " must be even";
  CHECK(rows >= 0 && H >= 0) << "rope_apply: rows=" << rows << " H=" << H;
  const int64_t half = D / 2;
  const float sign = inverse ? -1.0f : 1.0f;
  cpu::parallel_for(rows, rows * H * D, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      CHECK_GE(pos[r], 0) << "rope_apply: row " << r;
      const float* c = cos + static_cast<int64_t>(pos[r]) * half;
      const float* s = sin + static_cast<int64_t>(pos[r]) * half;
      for (int64_t h = 0; h < H; ++h) rotate_head(x + (r * H + h) * D, c, s, half, sign);
    }
  });
}

}  // namespace strata
