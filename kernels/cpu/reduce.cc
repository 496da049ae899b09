// CPU reductions of kernels/ops.h: sum, sum of squares, max-abs, row sums and row maxima.
//
// Each keeps kLanes independent accumulators (lane j takes elements j, j + 8, ...) and combines
// them in a fixed order at the end: GCC vectorises that shape without -ffast-math (it may not
// reorder a single running sum), and the order, hence the result, depends only on n.
// Single-threaded: a reduction reads each element once and is memory-bound.
#include <bit>
#include <cstdint>
#include <limits>

#include "kernels/cpu/vec.h"  // kLanes
#include "kernels/ops.h"

namespace strata {

using cpu::kLanes;

namespace {

// sum over x[0, n) of f(x[i]) in double, lanes combined pairwise in a fixed order.
template <typename F>
double sum_double(const float* x, int64_t n, F f) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += f(static_cast<double>(x[i + j]));
  }
  for (int64_t j = 0; i + j < n; ++j) acc[j] += f(static_cast<double>(x[i + j]));
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Largest element, NaN if any element is NaN: once a lane holds NaN, `v > m` is false for every
// later v and `v != v` only for another NaN, so the NaN stays.
float max_nan(const float* x, int64_t n) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float m[kLanes];
  for (int64_t j = 0; j < kLanes; ++j) m[j] = kNegInf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const float v = x[i + j];
      const bool take = v > m[j] || v != v;
      m[j] = take ? v : m[j];
    }
  }
  for (int64_t j = 0; i + j < n; ++j) {
    const float v = x[i + j];
    if (v > m[j] || v != v) m[j] = v;
  }
  float r = m[0];
  for (int64_t j = 1; j < kLanes; ++j) {
    if (m[j] > r || m[j] != m[j]) r = m[j];
  }
  return r;
}

}  // namespace

double reduce_sum_f32(const float* x, int64_t n) {
  return sum_double(x, n, [](double v) { return v; });
}

double reduce_sum_squares_f32(const float* x, int64_t n) {
  return sum_double(x, n, [](double v) { return v * v; });
}

float reduce_amax_f32(const float* x, int64_t n) {
  // On the bit patterns with the sign cleared, unsigned order is |x| order for every float, and
  // every NaN pattern lies above +inf's (0x7f800000): an integer max is a NaN-propagating max-abs
  // with no compare-and-select on floats.
  uint32_t m[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const uint32_t b = std::bit_cast<uint32_t>(x[i + j]) & 0x7fffffffu;
      m[j] = b > m[j] ? b : m[j];
    }
  }
  for (int64_t j = 0; i + j < n; ++j) {
    const uint32_t b = std::bit_cast<uint32_t>(x[i + j]) & 0x7fffffffu;
    m[j] = b > m[j] ? b : m[j];
  }
  uint32_t r = 0;
  for (int64_t j = 0; j < kLanes; ++j) r = m[j] > r ? m[j] : r;
  return std::bit_cast<float>(r);
}

void reduce_row_sum_f32(float* out, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = static_cast<float>(sum_double(x + r * cols, cols, [](double v) { return v; }));
  }
}

void reduce_row_max_f32(float* out, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) out[r] = max_nan(x + r * cols, cols);
}

}  // namespace strata
