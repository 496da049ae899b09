// CPU RMSNorm forward and backward (kernels/ops.h).
//
// y = (x * rstd) * w with rstd = 1 / sqrt(mean(x^2) + eps), the order Hugging Face's
// LlamaRMSNorm multiplies in. Row statistics (sum of squares, the backward's dot product)
// accumulate in double over 8 lanes in a fixed order. The weight gradient sums over rows, so it
// is not split by rows: a separate pass splits the columns over threads and adds each column's
// rows in order, which keeps dw independent of the thread count.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/vec.h"  // kLanes, map_f32, parallel_for
#include "kernels/ops.h"

namespace strata {

using cpu::kLanes;
using cpu::map_f32;

namespace {

// sum over the row of w * dy * x in double, lanes combined in a fixed order.
double dot3(const float* w, const float* dy, const float* x, int64_t C) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= C; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      acc[j] += static_cast<double>(w[i + j] * dy[i + j]) * x[i + j];
    }
  }
  for (int64_t j = 0; i + j < C; ++j)
    acc[j] += static_cast<double>(w[i + j] * dy[i + j]) * x[i + j];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace

void rmsnorm_forward_f32(float* y, float* rstd, const float* x, const float* w, int64_t rows,
                         int64_t C, float eps) {
  CHECK(rows >= 0 && C > 0) << "rmsnorm_forward: rows=" << rows << " C=" << C;
  cpu::parallel_for(rows, rows * C, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * C;
      const double mean_sq = reduce_sum_squares_f32(xr, C) / static_cast<double>(C);
      const float rs = static_cast<float>(1.0 / std::sqrt(mean_sq + static_cast<double>(eps)));
      rstd[r] = rs;
      map_f32(y + r * C, C, [=](int64_t i) { return (xr[i] * rs) * w[i]; });
    }
  });
}

void rmsnorm_backward_f32(float* dx, float* dw, const float* dy, const float* x, const float* w,
                          const float* rstd, int64_t rows, int64_t C) {
  CHECK(rows >= 0 && C > 0) << "rmsnorm_backward: rows=" << rows << " C=" << C;
  // dw first: dx may alias dy.
  // dw_i += sum_r dy_ri * x_ri * rstd_r, columns split over threads, rows added in order.
  cpu::parallel_for(C, rows * C, [=](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    std::vector<double> acc(static_cast<size_t>(n), 0.0);
    double* a = acc.data();
    for (int64_t r = 0; r < rows; ++r) {
      const float* dyr = dy + r * C + begin;
      const float* xr = x + r * C + begin;
      const float rs = rstd[r];
      int64_t i = 0;
      for (; i + kLanes <= n; i += kLanes) {  // fixed-size blocks: GCC vectorises these at -O2
        for (int64_t j = 0; j < kLanes; ++j) {
          a[i + j] += static_cast<double>(dyr[i + j] * (xr[i + j] * rs));
        }
      }
      for (; i < n; ++i) a[i] += static_cast<double>(dyr[i] * (xr[i] * rs));
    }
    for (int64_t i = 0; i < n; ++i) dw[begin + i] += static_cast<float>(a[i]);
  });
  // y_i = w_i x_i r with r = (mean(x^2) + eps)^(-1/2) and dr/dx_j = -r^3 x_j / C, so
  // dx_j = r w_j dy_j - x_j (r^3 / C) sum_i w_i dy_i x_i.
  cpu::parallel_for(rows, rows * C, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* dyr = dy + r * C;
      const float* xr = x + r * C;
      const double rs = rstd[r];
      const float k =
          static_cast<float>(rs * rs * rs / static_cast<double>(C) * dot3(w, dyr, xr, C));
      const float rsf = rstd[r];
      map_f32(dx + r * C, C, [=](int64_t i) { return rsf * (w[i] * dyr[i]) - xr[i] * k; });
    }
  });
}

}  // namespace strata
