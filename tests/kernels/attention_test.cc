// Causal grouped-query attention, forward and backward, against a double-precision reference
// written out below: GQA groups of 1, 2 and 4; several query tiles; odd head dimensions; a KV
// cache (T < S <= S_cap) with left padding per batch row, including query rows that see no key;
// decode steps (T = 1, the loop path) equal to the matching rows of a full forward; key rows
// beyond S neither read (they hold NaN) nor written; one thread or two. The reference backward
// is itself checked against central finite differences of the reference forward.
//
// Tolerances: scores are fp32 dot products of D terms and the outputs fp32 sums of up to S
// products, each a few ulp relative to the sum of magnitudes; for random data of either sign that
// is ~1e-7 per element relative to the tensor's scale. Checked as ||got - want|| / ||want|| over
// each whole tensor: 1e-6 forward. The backward forms dS = P (dP - D_i), which cancels, and
// recomputes P from the fp32 lse (a relative error of ulp(lse)/2): 3e-6 there. Measured errors
// are ~1e-7 forward and ~3e-7 backward; an indexing or masking mistake gives O(1). lse:
// 1e-6 (1 + |lse|) each.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"

namespace strata {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = 12345.0f;

struct Problem {
  int64_t B, T, S, S_cap, Hq, Hkv, D;
  std::vector<int32_t> key_start;  // empty: nullptr (all 0)

  int64_t q_size() const { return B * T * Hq * D; }
  int64_t kv_size() const { return B * S_cap * Hkv * D; }
  int64_t ks(int64_t b) const { return key_start.empty() ? 0 : key_start[b]; }
  const int32_t* ks_ptr() const { return key_start.empty() ? nullptr : key_start.data(); }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(D)); }
};

std::ostream& operator<<(std::ostream& os, const Problem& p) {
  os << "B=" << p.B << " T=" << p.T << " S=" << p.S << " S_cap=" << p.S_cap << " Hq=" << p.Hq
     << " Hkv=" << p.Hkv << " D=" << p.D << " key_start={";
  for (int32_t k : p.key_start) os << k << ",";
  return os << "}";
}

const std::vector<Problem>& problems() {
  static const std::vector<Problem> kProblems = {
      {2, 5, 5, 5, 2, 2, 4, {}},            // G = 1
      {1, 17, 17, 17, 4, 2, 8, {}},         // G = 2
      {2, 33, 33, 33, 8, 2, 6, {}},         // G = 4
      {1, 70, 70, 70, 4, 1, 16, {}},        // G = 4, three query tiles
      {2, 150, 150, 150, 2, 2, 5, {}},      // G = 1, two tiles, odd D
      {3, 4, 11, 16, 4, 2, 8, {0, 3, 9}},   // cache; batch 2's first queries see nothing
      {2, 40, 100, 128, 4, 1, 8, {5, 70}},  // cache, two tiles, 10 empty rows in batch 1
      {3, 1, 9, 12, 4, 2, 8, {0, 2, 9}},    // decode; batch 2 sees no key
      {2, 1, 1, 1, 2, 1, 4, {}},            // decode over a single key
  };
  return kProblems;
}

std::vector<float> random_vec(std::mt19937& rng, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// k or v with the rows beyond S (per batch) set to NaN: the kernels must never read them.
std::vector<float> random_kv(std::mt19937& rng, const Problem& p) {
  std::vector<float> x = random_vec(rng, p.kv_size());
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t i = p.S * p.Hkv * p.D; i < p.S_cap * p.Hkv * p.D; ++i) {
      x[b * p.S_cap * p.Hkv * p.D + i] = kNaN;
    }
  }
  return x;
}

// ---- the double reference ----

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

// Visits every (b, h, t) with its visible keys [ks, last]; last < ks means none.
template <typename F>
void for_each_query(const Problem& p, F fn) {
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t h = 0; h < p.Hq; ++h) {
      for (int64_t t = 0; t < p.T; ++t) {
        fn(b, h, h / (p.Hq / p.Hkv), t, p.ks(b), p.S - p.T + t);
      }
    }
  }
}

// Forward (out, lse) and, when dout is given, backward (dq, dk, dv) in double, straight from the
// definitions: P = softmax over visible keys of scale * q.k; out = sum P v;
// dS = P (dP - sum P dP) with dP = dout.v; dq = scale sum dS k; dk += scale dS q; dv += P dout.
Reference reference(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>* dout) {
  const int64_t D = p.D;
  const double scale = p.scale();
  auto qi = [&](int64_t b, int64_t t, int64_t h) { return ((b * p.T + t) * p.Hq + h) * D; };
  auto ki = [&](int64_t b, int64_t j, int64_t g) { return ((b * p.S_cap + j) * p.Hkv + g) * D; };
  Reference r;
  r.out.assign(p.q_size(), 0.0);
  r.lse.assign(p.B * p.Hq * p.T, -INFINITY);
  r.dq.assign(p.q_size(), 0.0);
  r.dk.assign(p.kv_size(), 0.0);
  r.dv.assign(p.kv_size(), 0.0);
  for_each_query(p, [&](int64_t b, int64_t h, int64_t g, int64_t t, int64_t ks, int64_t last) {
    if (last < ks) return;
    const int64_t n = last - ks + 1;
    std::vector<double> s(n);
    double m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += q[qi(b, t, h) + d] * k[ki(b, ks + j, g) + d];
      s[j] = scale * dot;
      m = std::max(m, s[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(s[j] - m);
    r.lse[(b * p.Hq + h) * p.T + t] = m + std::log(sum);
    std::vector<double> P(n);
    for (int64_t j = 0; j < n; ++j) {
      P[j] = std::exp(s[j] - m) / sum;
      for (int64_t d = 0; d < D; ++d) r.out[qi(b, t, h) + d] += P[j] * v[ki(b, ks + j, g) + d];
    }
    if (dout == nullptr) return;
    const double* dO = dout->data() + qi(b, t, h);
    std::vector<double> dP(n);
    double Di = 0;
    for (int64_t j = 0; j < n; ++j) {
      dP[j] = 0;
      for (int64_t d = 0; d < D; ++d) dP[j] += dO[d] * v[ki(b, ks + j, g) + d];
      Di += P[j] * dP[j];
    }
    for (int64_t j = 0; j < n; ++j) {
      const double dS = P[j] * (dP[j] - Di);
      for (int64_t d = 0; d < D; ++d) {
        r.dq[qi(b, t, h) + d] += scale * dS * k[ki(b, ks + j, g) + d];
        r.dk[ki(b, ks + j, g) + d] += scale * dS * q[qi(b, t, h) + d];
        r.dv[ki(b, ks + j, g) + d] += P[j] * dO[d];
      }
    }
  });
  return r;
}

std::vector<double> to_double(const std::vector<float>& x) { return {x.begin(), x.end()}; }

// ||got - want|| / ||want|| over the first S key rows of each batch (valid = nullptr: all).
double rel_error(const std::vector<float>& got, const std::vector<double>& want,
                 const Problem* kv_rows_of = nullptr) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (kv_rows_of != nullptr) {
      const Problem& p = *kv_rows_of;
      const int64_t row = static_cast<int64_t>(i) / (p.Hkv * p.D) % p.S_cap;
      if (row >= p.S) continue;
    }
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

struct Inputs {
  std::vector<float> q, k, v, dout;
};

Inputs random_inputs(std::mt19937& rng, const Problem& p) {
  // q scaled up so that softmax rows are far from uniform.
  return {random_vec(rng, p.q_size(), -3.0f, 3.0f), random_kv(rng, p), random_kv(rng, p),
          random_vec(rng, p.q_size())};
}

class AttentionTest : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(AttentionTest, ForwardMatchesDouble) {
  std::mt19937 rng(50);
  for (const Problem& p : problems()) {
    SCOPED_TRACE(testing::Message() << p);
    const Inputs in = random_inputs(rng, p);
    std::vector<float> out(p.q_size(), kNaN), lse(p.B * p.Hq * p.T, kNaN);
    attention_forward_f32(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), p.ks_ptr(),
                          p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
    const Reference r = reference(p, to_double(in.q), to_double(in.k), to_double(in.v), nullptr);
    EXPECT_LT(rel_error(out, r.out), 1e-6);
    for (size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(r.lse[i])) {  // no visible key: lse = -inf and a zero output row
        ASSERT_EQ(lse[i], -INFINITY) << "lse " << i;
        const int64_t b = i / (p.Hq * p.T), h = i / p.T % p.Hq, t = i % p.T;
        for (int64_t d = 0; d < p.D; ++d) {
          ASSERT_EQ(out[((b * p.T + t) * p.Hq + h) * p.D + d], 0.0f) << "empty row " << i;
        }
      } else {
        ASSERT_NEAR(lse[i], r.lse[i], 1e-6 * (1 + std::fabs(r.lse[i]))) << "lse " << i;
      }
    }
  }
}

TEST_F(AttentionTest, BackwardMatchesDouble) {
  std::mt19937 rng(51);
  for (const Problem& p : problems()) {
    SCOPED_TRACE(testing::Message() << p);
    const Inputs in = random_inputs(rng, p);
    std::vector<float> out(p.q_size()), lse(p.B * p.Hq * p.T);
    attention_forward_f32(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), p.ks_ptr(),
                          p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
    std::vector<float> dq(p.q_size(), kNaN), dk(p.kv_size(), kSentinel), dv(p.kv_size(), kSentinel);
    attention_backward_f32(dq.data(), dk.data(), dv.data(), in.dout.data(), out.data(), lse.data(),
                           in.q.data(), in.k.data(), in.v.data(), p.ks_ptr(), p.B, p.T, p.S,
                           p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
    const std::vector<double> dout = to_double(in.dout);
    const Reference r = reference(p, to_double(in.q), to_double(in.k), to_double(in.v), &dout);
    EXPECT_LT(rel_error(dq, r.dq), 3e-6);
    EXPECT_LT(rel_error(dk, r.dk, &p), 3e-6);
    EXPECT_LT(rel_error(dv, r.dv, &p), 3e-6);
    for (int64_t b = 0; b < p.B; ++b) {
      for (int64_t j = 0; j < p.S_cap; ++j) {
        for (int64_t e = 0; e < p.Hkv * p.D; ++e) {
          const int64_t i = (b * p.S_cap + j) * p.Hkv * p.D + e;
          if (j >= p.S) {  // beyond the valid keys: untouched
            ASSERT_EQ(dk[i], kSentinel) << "b=" << b << " j=" << j;
            ASSERT_EQ(dv[i], kSentinel) << "b=" << b << " j=" << j;
          } else if (j < p.ks(b)) {  // left padding: overwritten with zeros
            ASSERT_EQ(dk[i], 0.0f) << "b=" << b << " j=" << j;
            ASSERT_EQ(dv[i], 0.0f) << "b=" << b << " j=" << j;
          }
        }
      }
    }
    for_each_query(p, [&](int64_t b, int64_t h, int64_t, int64_t t, int64_t ks, int64_t last) {
      if (last >= ks) return;
      for (int64_t d = 0; d < p.D; ++d) {  // a row with no visible key: exactly zero
        ASSERT_EQ(dq[((b * p.T + t) * p.Hq + h) * p.D + d], 0.0f) << "b=" << b << " t=" << t;
      }
    });
  }
}

TEST_F(AttentionTest, ReferenceBackwardMatchesFiniteDifferences) {
  // L = sum(dout * out) of the double reference; central differences with h = 1e-6 are accurate
  // to ~1e-9 here (truncation h^2 ~ 1e-12, rounding 1e-16 / h ~ 1e-10).
  std::mt19937 rng(52);
  const Problem p{2, 3, 5, 6, 4, 2, 3, {0, 2}};
  const Inputs in = random_inputs(rng, p);
  std::vector<double> q = to_double(in.q), k = to_double(in.k), v = to_double(in.v);
  const std::vector<double> dout = to_double(in.dout);
  for (std::vector<double>* x : {&k, &v}) {  // the reference reads no row beyond S; zero them
    for (double& e : *x) e = std::isnan(e) ? 0.0 : e;
  }
  const Reference r = reference(p, q, k, v, &dout);
  auto loss = [&] {
    const Reference f = reference(p, q, k, v, nullptr);
    double l = 0;
    for (size_t i = 0; i < f.out.size(); ++i) l += dout[i] * f.out[i];
    return l;
  };
  const double h = 1e-6;
  const std::pair<std::vector<double>*, const std::vector<double>*> pairs[] = {
      {&q, &r.dq}, {&k, &r.dk}, {&v, &r.dv}};
  for (const auto& [x, grad] : pairs) {
    for (size_t i = 0; i < x->size(); ++i) {
      const double saved = (*x)[i];
      (*x)[i] = saved + h;
      const double lp = loss();
      (*x)[i] = saved - h;
      const double lm = loss();
      (*x)[i] = saved;
      ASSERT_NEAR((*grad)[i], (lp - lm) / (2 * h), 1e-8) << "element " << i;
    }
  }
}

TEST_F(AttentionTest, DecodeMatchesRowsOfTheFullForward) {
  // Query t of a full (training) forward over T keys is a decode step with S = t + 1 valid keys
  // of the same cache; batch 1 is left-padded by 6, so its first 6 queries see nothing.
  std::mt19937 rng(53);
  const Problem p{2, 20, 20, 20, 4, 2, 16, {0, 6}};
  const Inputs in = random_inputs(rng, p);
  std::vector<float> out(p.q_size()), lse(p.B * p.Hq * p.T);
  attention_forward_f32(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(), p.ks_ptr(),
                        p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
  const int64_t row = p.Hq * p.D;  // one query of every head
  for (int64_t t = 0; t < p.T; ++t) {
    std::vector<float> q1(p.B * row), out1(p.B * row, kNaN), lse1(p.B * p.Hq, kNaN);
    for (int64_t b = 0; b < p.B; ++b) {
      std::copy_n(&in.q[(b * p.T + t) * row], row, &q1[b * row]);
    }
    attention_forward_f32(out1.data(), lse1.data(), q1.data(), in.k.data(), in.v.data(), p.ks_ptr(),
                          p.B, 1, t + 1, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
    for (int64_t b = 0; b < p.B; ++b) {
      for (int64_t h = 0; h < p.Hq; ++h) {
        const float full_lse = lse[(b * p.Hq + h) * p.T + t];
        if (std::isinf(full_lse)) {
          ASSERT_EQ(lse1[b * p.Hq + h], full_lse) << "b=" << b << " t=" << t << " h=" << h;
        } else {
          ASSERT_NEAR(lse1[b * p.Hq + h], full_lse, 1e-6 * (1 + std::fabs(full_lse)))
              << "b=" << b << " t=" << t << " h=" << h;
        }
        for (int64_t d = 0; d < p.D; ++d) {
          // Values are in [-1, 1]; outputs are averages of them.
          ASSERT_NEAR(out1[b * row + h * p.D + d], out[(b * p.T + t) * row + h * p.D + d], 1e-6)
              << "b=" << b << " t=" << t << " h=" << h << " d=" << d;
        }
      }
    }
  }
}

TEST_F(AttentionTest, EmptyQueriesOnlyZeroTheKeyGradients) {
  const Problem p{2, 0, 3, 4, 2, 1, 4, {}};
  std::vector<float> dk(p.kv_size(), kSentinel), dv(p.kv_size(), kSentinel);
  attention_forward_f32(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, p.B, p.T, p.S,
                        p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
  attention_backward_f32(nullptr, dk.data(), dv.data(), nullptr, nullptr, nullptr, nullptr, nullptr,
                         nullptr, nullptr, p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
  for (size_t i = 0; i < dk.size(); ++i) {
    const bool valid = static_cast<int64_t>(i) / (p.Hkv * p.D) % p.S_cap < p.S;
    ASSERT_EQ(dk[i], valid ? 0.0f : kSentinel) << i;
    ASSERT_EQ(dv[i], valid ? 0.0f : kSentinel) << i;
  }
}

TEST_F(AttentionTest, ThreadCountDoesNotChangeResults) {
  // Both problems are above the threading threshold: the GEMM path (T = 128) and a decode step.
  std::mt19937 rng(54);
  const Problem cases[] = {{4, 128, 128, 128, 4, 2, 32, {0, 0, 9, 30}},
                           {8, 1, 300, 320, 8, 4, 64, {}}};
  for (const Problem& p : cases) {
    SCOPED_TRACE(testing::Message() << p);
    const Inputs in = random_inputs(rng, p);
    std::vector<float> out[2], lse[2], dq[2], dk[2], dv[2];
    for (int t = 0; t < 2; ++t) {
      set_blas_threads(t + 1);
      out[t].resize(p.q_size());
      lse[t].resize(p.B * p.Hq * p.T);
      dq[t].resize(p.q_size());
      dk[t].assign(p.kv_size(), 0.0f);
      dv[t].assign(p.kv_size(), 0.0f);
      attention_forward_f32(out[t].data(), lse[t].data(), in.q.data(), in.k.data(), in.v.data(),
                            p.ks_ptr(), p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
      attention_backward_f32(dq[t].data(), dk[t].data(), dv[t].data(), in.dout.data(),
                             out[t].data(), lse[t].data(), in.q.data(), in.k.data(), in.v.data(),
                             p.ks_ptr(), p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
      EXPECT_EQ(blas_threads(), t + 1);  // the kernels' own threads leave OpenBLAS's setting
    }
    EXPECT_EQ(out[0], out[1]);
    EXPECT_EQ(lse[0], lse[1]);
    EXPECT_EQ(dq[0], dq[1]);
    EXPECT_EQ(dk[0], dk[1]);
    EXPECT_EQ(dv[0], dv[1]);
  }
}

}  // namespace
}  // namespace strata
