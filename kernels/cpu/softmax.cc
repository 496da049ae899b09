// CPU softmax and log-softmax, forward and backward, along the last dimension (kernels/ops.h).
//
// One row at a time: max, then exp(x - max) with its sum, then the normalisation. Sums are kept in
// double (8 lanes, fixed order), which costs nothing next to the exp and keeps vocabulary-sized
// rows (cols ~ 10^5) accurate to a few ulp. Rows are the unit of threading: exp is compute-bound
// here, so the second core pays off once a matrix has more than ~256K elements.
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/vec.h"  // kLanes, exp_f32, parallel_for
#include "kernels/ops.h"

namespace strata {

using cpu::exp_f32;
using cpu::kLanes;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

double combine(const double (&acc)[kLanes]) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// sum of exp(x - m) over the row; when y is not null also stores each exp(x - m) in y.
double sum_exp(float* y, const float* x, float m, int64_t cols) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
    float e[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) e[j] = exp_f32(x[i + j] - m);
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += e[j];
    if (y != nullptr) {
      for (int64_t j = 0; j < kLanes; ++j) y[i + j] = e[j];
    }
  }
  for (int64_t j = 0; i + j < cols; ++j) {
    const float e = exp_f32(x[i + j] - m);
    acc[j] += e;
    if (y != nullptr) y[i + j] = e;
  }
  return combine(acc);
}

// sum of a * b over the row.
double dot(const float* a, const float* b, int64_t cols) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= cols; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(a[i + j]) * b[i + j];
  }
  for (int64_t j = 0; i + j < cols; ++j) acc[j] += static_cast<double>(a[i + j]) * b[i + j];
  return combine(acc);
}

void softmax_row(float* y, const float* x, int64_t cols) {
  float m;
  reduce_row_max_f32(&m, x, 1, cols);
  if (m == kNegInf) {  // every entry -inf (or cols == 0): a fully masked row attends to nothing
    fill_f32(y, 0.0f, cols);
    return;
  }
  const double sum = sum_exp(y, x, m, cols);
  scale_f32(y, static_cast<float>(1.0 / sum), cols);
}

void log_softmax_row(float* y, const float* x, int64_t cols) {
  float m;
  reduce_row_max_f32(&m, x, 1, cols);
  if (m == kNegInf) {  // log of the all-zero softmax row
    fill_f32(y, kNegInf, cols);
    return;
  }
  const float log_sum = static_cast<float>(std::log(sum_exp(nullptr, x, m, cols)));
  cpu::map_f32(y, cols, [=](int64_t i) { return (x[i] - m) - log_sum; });
}

// Runs row_fn(r) for every row, split over threads when the matrix is large enough.
template <typename F>
void for_rows(int64_t rows, int64_t cols, F row_fn) {
  cpu::parallel_for(rows, rows * cols, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row_fn(r);
  });
}

}  // namespace

void softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols) {
  for_rows(rows, cols, [=](int64_t r) { softmax_row(y + r * cols, x + r * cols, cols); });
}

void softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows, int64_t cols) {
  for_rows(rows, cols, [=](int64_t r) {
    const float* dyr = dy + r * cols;
    const float* yr = y + r * cols;
    const float d = static_cast<float>(dot(dyr, yr, cols));
    cpu::map_f32(dx + r * cols, cols, [=](int64_t i) { return yr[i] * (dyr[i] - d); });
  });
}

void log_softmax_forward_f32(float* y, const float* x, int64_t rows, int64_t cols) {
  for_rows(rows, cols, [=](int64_t r) { log_softmax_row(y + r * cols, x + r * cols, cols); });
}

void log_softmax_backward_f32(float* dx, const float* dy, const float* y, int64_t rows,
                              int64_t cols) {
  for_rows(rows, cols, [=](int64_t r) {
    const float* dyr = dy + r * cols;
    const float* yr = y + r * cols;
    const float s = static_cast<float>(reduce_sum_f32(dyr, cols));
    cpu::map_f32(dx + r * cols, cols, [=](int64_t i) { return dyr[i] - exp_f32(yr[i]) * s; });
  });
}

}  // namespace strata
