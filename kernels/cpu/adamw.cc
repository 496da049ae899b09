// CPU reference of kernels/optim_ops.h: the AdamW update of one tensor and the sum of squares of
// a list of gradients (optim/adamw.h has the formulas and their torch counterparts).
//
// The update's inner loop is AVX2 intrinsics over 8 lanes, with a scalar loop for the tail that
// computes the same operations per element (tests/optim/adamw_test.cc checks the two against a
// plain reference, bit for bit). Plain blocked loops (kernels/cpu/vec.h) were close for fp32
// moments (0.68 against 0.57 ns per element in cache), but with bf16 moments GCC 12 vectorised
// them at half width and passed the per-block arrays through memory in mismatched widths, and the
// store-forwarding stalls cost 3-5 ns per element against 0.85 here. The clip, scale and
// non-finite loops are plain blocked loops.
//
// The build contracts a * b + c into one fma wherever it sees the pair (-ffp-contract=fast is
// GCC's C++ default, and it applies to intrinsics too), so the update offers no such pair besides
// the fmas torch itself makes: the weight decay p * (1 - lr wd), whose rounded product torch adds
// to the update later, is a separate pass over each L1-sized piece of p, as torch's p.mul_() is a
// separate pass.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/vec.h"  // kLanes, parallel_for
#include "kernels/optim_ops.h"

namespace strata {
namespace {

using cpu::kLanes;

// Elements per chunk of the norm reduction: chunk sums are the unit of threading and of the fixed
// summation order.
constexpr int64_t kNormChunk = int64_t{1} << 14;

// Work per element for parallel_for's threshold (kMinParallelWork, in softmax-element units):
// the update runs at about half softmax's time per element in cache (0.6 ns), but out of cache it
// is memory bound (28 bytes per element) and a second core's bandwidth pays from about 2^18
// elements (measured: 16M elements 1.7 -> 0.65 ns per element with 2 threads).
constexpr int64_t kAdamWorkPerElement = 1;

// Moment storage, fp32 or bf16 (uint16_t): 8 lanes or one element at a time, decoded to fp32 on
// load, rounded to the storage by round (bf16: nearest even, NaN stays a quiet NaN, exactly
// f32_to_bf16), and stored from an already rounded value.
template <typename M>
struct MomentIo;

template <>
struct MomentIo<float> {
  static __m256 load8(const float* x) { return _mm256_loadu_ps(x); }
  static __m256 round8(__m256 x) { return x; }
  static void store8(float* x, __m256 val) { _mm256_storeu_ps(x, val); }
  static float load(const float* x) { return *x; }
  static float round(float x) { return x; }
  static void store(float* x, float val) { *x = val; }
};

template <>
struct MomentIo<uint16_t> {
  static __m256 load8(const uint16_t* x) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static __m256 round8(__m256 x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i hi_mask = _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb);
    const __m256i rounded = _mm256_and_si256(_mm256_add_epi32(u, bias), hi_mask);
    const __m256i quiet_nan =
        _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), hi_mask);
    const __m256i magnitude = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i is_nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000));
    return _mm256_castsi256_ps(_mm256_blendv_epi8(rounded, quiet_nan, is_nan));
  }
  static void store8(uint16_t* x, __m256 val) {
    const __m256i hi = _mm256_srli_epi32(_mm256_castps_si256(val), 16);  // each fits in 16 bits
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(hi, hi), 0b1000);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(x), _mm256_castsi256_si128(packed));
  }
  static float load(const uint16_t* x) { return bf16_to_f32(*x); }
  static float round(float x) { return bf16_to_f32(f32_to_bf16(x)); }
  static void store(uint16_t* x, float val) { *x = static_cast<uint16_t>(f32_bits(val) >> 16); }
};

// Elements [begin, end) of one tensor, weight decay excluded (adamw.h has the formulas). M is the
// moment storage; kLowWeight selects torch's lerp branch (weight < 0.5), fixed for a run.
template <bool kLowWeight, typename M>
void adam_update_range(const AdamwScalars& s, float* p, const float* g, M* m, M* v, int64_t begin,
                       int64_t end) {
  using Io = MomentIo<M>;
  const __m256 w = _mm256_set1_ps(s.w), one_minus_w = _mm256_set1_ps(s.one_minus_w);
  const __m256 b2 = _mm256_set1_ps(s.b2), c2 = _mm256_set1_ps(s.c2);
  const __m256 bc2_sqrt = _mm256_set1_ps(s.bc2_sqrt), eps = _mm256_set1_ps(s.eps);
  const __m256 neg_step = _mm256_set1_ps(s.neg_step);
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi = Io::load8(m + i);
    const __m256 vi = Io::load8(v + i);
    const __m256 d = _mm256_sub_ps(gi, mi);
    // fnmadd(d, 1 - w, g) = fma(-d, 1 - w, g)
    const __m256 m_new =
        Io::round8(kLowWeight ? _mm256_fmadd_ps(w, d, mi) : _mm256_fnmadd_ps(d, one_minus_w, gi));
    const __m256 v_new =
        Io::round8(_mm256_fmadd_ps(_mm256_mul_ps(c2, gi), gi, _mm256_mul_ps(vi, b2)));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v_new), bc2_sqrt), eps);
    const __m256 update = _mm256_div_ps(_mm256_mul_ps(neg_step, m_new), denom);
    _mm256_storeu_ps(p + i, _mm256_add_ps(_mm256_loadu_ps(p + i), update));
    Io::store8(m + i, m_new);
    Io::store8(v + i, v_new);
  }
  for (; i < end; ++i) {
    const float gi = g[i];
    const float mi = Io::load(m + i);
    const float vi = Io::load(v + i);
    const float d = gi - mi;
    const float m_new =
        Io::round(kLowWeight ? std::fma(s.w, d, mi) : std::fma(-d, s.one_minus_w, gi));
    const float v_new = Io::round(std::fma(s.c2 * gi, gi, vi * s.b2));
    const float denom = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(v_new))) / s.bc2_sqrt + s.eps;
    p[i] = p[i] + (s.neg_step * m_new) / denom;
    Io::store(m + i, m_new);
    Io::store(v + i, v_new);
  }
}

// Elements [begin, end): decay then update, a piece of kPiece elements at a time so that the
// decayed p is re-read from L1.
template <bool kLowWeight, typename M>
void adamw_range(const AdamwScalars& s, float* p, const float* g, M* m, M* v, int64_t begin,
                 int64_t end) {
  constexpr int64_t kPiece = 1024;  // 4 KiB of p
  for (int64_t b = begin; b < end; b += kPiece) {
    const int64_t e = std::min(end, b + kPiece);
    if (s.decay) {
      float* pb = p + b;
      cpu::map_f32(pb, e - b, [&](int64_t k) { return pb[k] * s.decay_mul; });
    }
    adam_update_range<kLowWeight>(s, p, g, m, v, b, e);
  }
}

template <typename M>
void adamw_tensor(const AdamwScalars& s, float* p, const float* g, M* m, M* v, int64_t n) {
  const bool low_weight = s.w < 0.5f;
  cpu::parallel_for(n, n * kAdamWorkPerElement, [&](int64_t begin, int64_t end) {
    if (low_weight) {
      adamw_range<true>(s, p, g, m, v, begin, end);
    } else {
      adamw_range<false>(s, p, g, m, v, begin, end);
    }
  });
}

// Sum of squares of x[0, n) in double: kLanes running sums per chunk of kNormChunk, lanes then
// chunks added in order. The result depends only on x and n.
double sum_of_squares(const float* x, int64_t n) {
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  cpu::parallel_for(chunks, n, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t begin = c * kNormChunk;
      const int64_t end = std::min(n, begin + kNormChunk);
      double acc[kLanes] = {};
      int64_t i = begin;
      for (; i + kLanes <= end; i += kLanes) {
        for (int64_t j = 0; j < kLanes; ++j) {
          const double xj = x[i + j];
          acc[j] += xj * xj;  // exact product: a float's square fits in a double
        }
      }
      for (int64_t j = 0; i + j < end; ++j) {
        const double xj = x[i + j];
        acc[j] += xj * xj;
      }
      double sum = 0.0;
      for (int64_t j = 0; j < kLanes; ++j) sum += acc[j];
      partial[static_cast<size_t>(c)] = sum;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

AdamwScalars adamw_scalars(double beta1, double beta2, double eps, double weight_decay, double lr,
                           int64_t t, bool decay) {
  // As torch: the scalars are Python floats (double), rounded to fp32 where they meet a tensor.
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  AdamwScalars s;
  s.w = static_cast<float>(1.0 - beta1);
  s.one_minus_w = 1.0f - s.w;
  s.b2 = static_cast<float>(beta2);
  s.c2 = static_cast<float>(1.0 - beta2);
  s.bc2_sqrt = static_cast<float>(std::pow(bias_correction2, 0.5));
  s.eps = static_cast<float>(eps);
  s.neg_step = static_cast<float>(-(lr / bias_correction1));
  s.decay_mul = static_cast<float>(1.0 - lr * weight_decay);
  s.decay = decay && weight_decay != 0.0;  // torch skips p.mul_ when wd == 0
  return s;
}

void adamw_update_f32(float* p, const float* g, float* m, float* v, int64_t n,
                      const AdamwScalars& s) {
  adamw_tensor(s, p, g, m, v, n);
}

void adamw_update_bf16(float* p, const float* g, uint16_t* m, uint16_t* v, int64_t n,
                       const AdamwScalars& s) {
  adamw_tensor(s, p, g, m, v, n);
}

double grad_sum_squares_f32(const float* const* xs, const int64_t* ns, int64_t count) {
  double total = 0.0;
  for (int64_t i = 0; i < count; ++i) total += sum_of_squares(xs[i], ns[i]);
  return total;
}

}  // namespace strata
