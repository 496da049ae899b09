// The CUDA causal grouped-query attention (kernels/cuda/attention.cu), forward and backward,
// against the CPU op (kernels/cpu/attention.cc) on the same random inputs: GQA (Hq = 4 Hkv) and
// MHA, head dimensions 64, 72, 128 and 256 and tiny odd ones, a decode step (T = 1) over a long
// cache, prefill with a cache (T < S <= S_cap), more queries than keys, left padding (key_start)
// with query rows that see no key (zeros, lse = -inf) and a batch row that sees nothing at all, key
// counts that end mid-chunk and query groups longer than a chunk, and empty sizes. Key rows
// S..S_cap-1 hold NaN (never read) and dk, dv rows there hold a sentinel (never written); every
// other output is poisoned before the GPU run. The backward runs on the CPU's out and lse, so it is
// checked alone. Running each op twice must give the same bits (no atomics, fixed summation
// orders).
//
// Bound: kFp32Bound (1e-5 relative L2) for every output. Both sides compute fp32 dot products and
// fp32 sums of the same terms in different orders (the CPU's in OpenBLAS's blocking, the GPU's by
// lanes of a warp), each a few ulp of the sum of magnitudes; the CPU's own test measures ~1e-7
// forward and ~3e-7 backward against a double reference, so 1e-5 leaves a wide margin while an
// indexing or masking mistake gives O(1).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

using gputest::DeviceArray;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kSentinel = 12345.0f;

struct Shape {
  int64_t B, T, S, S_cap, Hq, Hkv, D;
  std::vector<int32_t> key_start;  // empty: nullptr (all 0)
  std::string what;

  int64_t q_size() const { return B * T * Hq * D; }
  int64_t kv_size() const { return B * S_cap * Hkv * D; }
  int64_t lse_size() const { return B * Hq * T; }
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(D)); }
  // Whether element i of a (B, S_cap, Hkv, D) tensor lies in a row j >= S.
  bool beyond_s(int64_t i) const { return (i / (Hkv * D)) % S_cap >= S; }
};

std::ostream& operator<<(std::ostream& os, const Shape& p) {
  os << p.what << ": B=" << p.B << " T=" << p.T << " S=" << p.S << " S_cap=" << p.S_cap
     << " Hq=" << p.Hq << " Hkv=" << p.Hkv << " D=" << p.D << " key_start={";
  for (int32_t k : p.key_start) os << k << ",";
  return os << "}";
}

// k or v of random values, NaN in rows S..S_cap-1 of each batch row: never to be read.
std::vector<float> random_kv(const Shape& p, std::mt19937& rng) {
  std::vector<float> x = gputest::randn(static_cast<size_t>(p.kv_size()), rng);
  for (int64_t i = 0; i < p.kv_size(); ++i) {
    if (p.beyond_s(i)) x[i] = kNaN;
  }
  return x;
}

// dk or dv before the op: NaN (poison) in rows < S, which the op overwrites; the sentinel in rows
// S..S_cap-1, which it must leave alone.
std::vector<float> poisoned_dkv(const Shape& p) {
  std::vector<float> x(static_cast<size_t>(p.kv_size()));
  for (int64_t i = 0; i < p.kv_size(); ++i) x[i] = p.beyond_s(i) ? kSentinel : kNaN;
  return x;
}

// Rows S..S_cap-1 of a downloaded dk or dv still hold the sentinel, bit for bit.
void expect_sentinel_rows(const Shape& p, const std::vector<float>& got, const char* name) {
  int64_t bad = 0;
  for (int64_t i = 0; i < p.kv_size(); ++i) {
    if (p.beyond_s(i) && !(got[i] == kSentinel)) ++bad;
  }
  EXPECT_EQ(bad, 0) << name << ": elements of rows S..S_cap-1 were written";
}

// The elements of a (B, S_cap, Hkv, D) tensor in rows j < S (the sentinel rows would swamp a
// relative error).
std::vector<float> valid_rows(const Shape& p, const std::vector<float>& x) {
  std::vector<float> r;
  for (int64_t i = 0; i < p.kv_size(); ++i) {
    if (!p.beyond_s(i)) r.push_back(x[i]);
  }
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_attention(const Shape& p, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " " << p);
  std::mt19937 rng(seed);
  const std::vector<float> q = gputest::randn(static_cast<size_t>(p.q_size()), rng);
  const std::vector<float> k = random_kv(p, rng);
  const std::vector<float> v = random_kv(p, rng);
  const std::vector<float> dout = gputest::randn(static_cast<size_t>(p.q_size()), rng);
  const int32_t* ks_host = p.key_start.empty() ? nullptr : p.key_start.data();

  // CPU reference.
  std::vector<float> out(p.q_size()), lse(p.lse_size());
  attention_forward_f32(out.data(), lse.data(), q.data(), k.data(), v.data(), ks_host, p.B, p.T,
                        p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
  std::vector<float> dq(p.q_size()), dk = poisoned_dkv(p), dv = poisoned_dkv(p);
  attention_backward_f32(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                         q.data(), k.data(), v.data(), ks_host, p.B, p.T, p.S, p.S_cap, p.Hq,
                         p.Hkv, p.D, p.scale());

  DeviceArray<float> d_q(q), d_k(k), d_v(v), d_dout(dout);
  std::unique_ptr<DeviceArray<int32_t>> d_ks;
  if (!p.key_start.empty()) d_ks = std::make_unique<DeviceArray<int32_t>>(p.key_start);
  const int32_t* ks_dev = d_ks ? d_ks->data() : nullptr;

  // Forward, twice: the same bits both times.
  DeviceArray<float> d_out(p.q_size()), d_lse(p.lse_size());
  std::vector<float> first_out, first_lse;
  for (int run = 0; run < 2; ++run) {
    d_out.poison();
    d_lse.poison();
    cuda::attention_forward_f32(d_out.data(), d_lse.data(), d_q.data(), d_k.data(), d_v.data(),
                                ks_dev, p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D, p.scale());
    const std::vector<float> g_out = d_out.download(), g_lse = d_lse.download();
    if (run == 0) {
      EXPECT_CLOSE(g_out, out, gputest::kFp32Bound, "attention out");
      EXPECT_CLOSE(g_lse, lse, gputest::kFp32Bound, "attention lse");
      for (int64_t i = 0; i < p.lse_size(); ++i) {  // masked rows: exactly -inf
        if (std::isinf(lse[i])) {
          EXPECT_EQ(g_lse[i], lse[i]) << "lse row " << i;
        }
      }
      first_out = g_out;
      first_lse = g_lse;
    } else {
      EXPECT_TRUE(same_bits(g_out, first_out)) << "forward out differs between two runs";
      EXPECT_TRUE(same_bits(g_lse, first_lse)) << "forward lse differs between two runs";
    }
  }

  // Backward from the CPU's out and lse, twice.
  DeviceArray<float> d_out_cpu(out), d_lse_cpu(lse);
  DeviceArray<float> d_dq(p.q_size()), d_dk(p.kv_size()), d_dv(p.kv_size());
  std::vector<float> first_dq, first_dk, first_dv;
  for (int run = 0; run < 2; ++run) {
    d_dq.poison();
    d_dk.upload(poisoned_dkv(p));
    d_dv.upload(poisoned_dkv(p));
    cuda::attention_backward_f32(d_dq.data(), d_dk.data(), d_dv.data(), d_dout.data(),
                                 d_out_cpu.data(), d_lse_cpu.data(), d_q.data(), d_k.data(),
                                 d_v.data(), ks_dev, p.B, p.T, p.S, p.S_cap, p.Hq, p.Hkv, p.D,
                                 p.scale());
    const std::vector<float> g_dq = d_dq.download(), g_dk = d_dk.download(),
                             g_dv = d_dv.download();
    if (run == 0) {
      EXPECT_CLOSE(g_dq, dq, gputest::kFp32Bound, "attention dq");
      EXPECT_CLOSE(valid_rows(p, g_dk), valid_rows(p, dk), gputest::kFp32Bound, "attention dk");
      EXPECT_CLOSE(valid_rows(p, g_dv), valid_rows(p, dv), gputest::kFp32Bound, "attention dv");
      expect_sentinel_rows(p, g_dk, "dk");
      expect_sentinel_rows(p, g_dv, "dv");
      first_dq = g_dq;
      first_dk = g_dk;
      first_dv = g_dv;
    } else {
      EXPECT_TRUE(same_bits(g_dq, first_dq)) << "dq differs between two runs";
      EXPECT_TRUE(same_bits(g_dk, first_dk)) << "dk differs between two runs";
      EXPECT_TRUE(same_bits(g_dv, first_dv)) << "dv differs between two runs";
    }
  }
}

GPU_TEST(CudaAttentionTest, GqaAndMhaPrefill) {
  check_attention({2, 37, 37, 37, 8, 2, 64, {}, "GQA G=4, T ends mid-warp"},
                  gputest::fresh_seed());
  check_attention({1, 130, 130, 130, 3, 3, 72, {}, "MHA, odd D, keys over three chunks"},
                  gputest::fresh_seed());
  check_attention({1, 33, 33, 40, 4, 1, 256, {}, "GQA G=4, D=256, S < S_cap"},
                  gputest::fresh_seed());
  check_attention({2, 5, 5, 5, 2, 2, 5, {}, "MHA, tiny odd D"}, gputest::fresh_seed());
}

GPU_TEST(CudaAttentionTest, DecodeOverCache) {
  // Batch row 2's key_start is S: it sees no key (zeros, lse = -inf; dk, dv zero).
  check_attention({3, 1, 300, 320, 8, 2, 64, {0, 17, 300}, "decode, G=4, padded"},
                  gputest::fresh_seed());
  check_attention({2, 1, 1, 1, 2, 1, 4, {}, "decode over a single key"}, gputest::fresh_seed());
  check_attention({1, 1, 1, 1, 1, 1, 1, {}, "all sizes 1"}, gputest::fresh_seed());
}

GPU_TEST(CudaAttentionTest, PrefillWithCacheAndPadding) {
  // Batch row 1: queries sit at keys 70..89, key_start 80, so its first 10 rows see nothing.
  check_attention({2, 20, 90, 96, 8, 2, 72, {5, 80}, "T < S, padded, masked rows"},
                  gputest::fresh_seed());
  // G * T = 400 query rows per key: several chunks in the dk, dv loop.
  check_attention({1, 200, 1500, 1536, 4, 2, 128, {}, "long cache, G=2, D=128"},
                  gputest::fresh_seed());
  check_attention({3, 4, 11, 16, 4, 2, 8, {0, 3, 9}, "cache; batch 2's first queries see nothing"},
                  gputest::fresh_seed());
}

GPU_TEST(CudaAttentionTest, MoreQueriesThanKeysAndEmpty) {
  // The first T - S = 2 queries see nothing.
  check_attention({1, 6, 4, 4, 2, 1, 16, {}, "T > S"}, gputest::fresh_seed());
  // T = 0: no queries; the backward still zeroes the first S rows of dk and dv.
  check_attention({2, 0, 7, 9, 4, 2, 8, {}, "T = 0"}, gputest::fresh_seed());
  check_attention({0, 3, 3, 3, 2, 1, 8, {}, "B = 0"}, gputest::fresh_seed());
  // S = 0: every query sees nothing.
  check_attention({1, 2, 0, 4, 2, 2, 8, {}, "S = 0"}, gputest::fresh_seed());
}

}  // namespace
}  // namespace strata
