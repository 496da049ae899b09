// Internal helpers shared by the CPU kernels in this folder (not part of the op interface, which
// is kernels/ops.h): the blocked loop shape that GCC vectorises at -O2, a vectorisable exp, and a
// row-parallel loop.
//
// Why blocks of 8: the build uses -O2, where GCC 12 vectorises only with its "very cheap" cost
// model, which refuses a loop whose trip count is unknown (it would need a scalar epilogue) or
// whose pointers might alias. A loop over a fixed block of kLanes floats (one AVX2 register) that
// reads into a local array before storing is vectorised whatever the pointers are, and the
// load-then-store order keeps exact in-place aliasing (out == x) correct. Check with
// -fopt-info-vec after changing a kernel.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "kernels/ops.h"  // blas_threads(), the one thread-count knob

namespace strata::cpu {

inline constexpr int64_t kLanes = 8;  // floats per AVX2 register

// out[i] = f(i) for i in [0, n).
template <typename F>
inline void map_f32(float* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    float t[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) t[j] = f(i + j);
    for (int64_t j = 0; j < kLanes; ++j) out[i + j] = t[j];
  }
  for (; i < n; ++i) out[i] = f(i);
}

// exp(x) in fp32 to within 2 ulp (measured over [-104, 88.7]), written without branches or
// library calls so that GCC vectorises it; std::exp stays a scalar call without -ffast-math,
// about 6x slower. Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, the Cephes expf
// polynomial for exp(r), and 2^n applied as two factors so that n from -160 to 128 needs no
// special case: overflow gives +inf, underflow gradual denormals then 0, NaN stays NaN (the
// clamps compare false on NaN and the NaN flows through the arithmetic), -inf gives 0.
inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so that n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kLo = -110.0f;         // exp(-110) < 2^-158: rounds to 0
  constexpr float kHi = 89.0f;           // exp(89) > FLT_MAX: overflows to inf
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  const float t = std::fma(xc, kLog2e, kRound);
  const float n = t - kRound;
  float r = std::fma(n, -kLn2Hi, xc);
  r = std::fma(n, -kLn2Lo, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r + 1.0f);
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  const int32_t n1 = ni >> 1;
  const int32_t n2 = ni - n1;
  const float s1 = std::bit_cast<float>((n1 + 127) << 23);
  const float s2 = std::bit_cast<float>((n2 + 127) << 23);
  return (p * s1) * s2;
}

// sigmoid(x) = 1 / (1 + exp(-x)): 0 for x below about -88 (exp overflows to inf), 1 above ~17.
inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

// Elements of work below which a second thread does not pay: starting and joining one costs
// ~40 us here, and softmax runs at ~1.2 ns per element, so 2^18 elements (~300 us on one thread)
// is where two threads first save a worthwhile third (gemm_bench: 1024 x 128 gained 12% with
// threads, 1024 x 1024 gained 50-90%).
inline constexpr int64_t kMinParallelWork = int64_t{1} << 18;

// Calls fn(begin, end) on contiguous chunks of [0, n) on up to blas_threads() threads (the
// caller's thread takes the first chunk). `work` is the total cost in elements touched; small
// jobs run inline. Chunks depend only on n and the thread count, and fn must write disjoint
// outputs per index, so results never depend on how the work was split.
template <typename F>
inline void parallel_for(int64_t n, int64_t work, F fn) {
  int64_t threads = blas_threads();
  if (threads > n) threads = n;
  if (threads <= 1 || work < kMinParallelWork) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t begin = chunk; begin < n; begin += chunk) {
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    pool.emplace_back([=, &fn] { fn(begin, end); });
  }
  fn(int64_t{0}, chunk < n ? chunk : n);
  for (std::thread& t : pool) t.join();
}

}  // namespace strata::cpu
