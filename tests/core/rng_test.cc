// Philox 4x32-10 against the Random123 known-answer vectors, and the keyed-stream properties the
// layout invariance relies on: same (seed, stream, offset) -> same value, anywhere.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "core/rng.h"

namespace strata {
namespace {

uint64_t pack(uint32_t lo, uint32_t hi) { return static_cast<uint64_t>(hi) << 32 | lo; }

TEST(Philox, MatchesRandom123KnownAnswers) {
  // kat_vectors from Random123 1.09: philox4x32 10 rounds (counter c0..c3, key k0 k1).
  auto a = philox4x32(0, 0, 0);
  EXPECT_EQ(a, (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  auto b = philox4x32(pack(0xffffffffu, 0xffffffffu), pack(0xffffffffu, 0xffffffffu), pack(0xffffffffu, 0xffffffffu));
  EXPECT_EQ(b, (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  auto c = philox4x32(pack(0xa4093822u, 0x299f31d0u), pack(0x13198a2eu, 0x03707344u), pack(0x243f6a88u, 0x85a308d3u));
  EXPECT_EQ(c, (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(RngStream, ValueDependsOnlyOnSeedStreamOffset) {
  RngStream s(42, "layers.0.attn.wq");
  RngStream t(42, "layers.0.attn.wq");
  std::vector<float> whole(1000), part(100);
  s.fill_normal(whole.data(), 1000, 0, 0.0f, 1.0f);
  t.fill_normal(part.data(), 100, 500, 0.0f, 1.0f);  // a shard starting at element 500
  for (int i = 0; i < 100; ++i) EXPECT_EQ(part[i], whole[500 + i]);
  EXPECT_NE(RngStream(42, "layers.0.attn.wk").normal(0), s.normal(0));
  EXPECT_NE(RngStream(43, "layers.0.attn.wq").normal(0), s.normal(0));
}

TEST(RngStream, NameHashIsStable) {
  // Checkpoints and golden data depend on these ids never changing; the value was checked with
  // an independent Python FNV-1a + splitmix64.
  EXPECT_EQ(stream_id(""), stream_id(""));
  EXPECT_NE(stream_id("a"), stream_id("b"));
  EXPECT_EQ(stream_id("layers.0.attn.wq"), 0xb5457458544bafdfull);
}

TEST(RngStream, NormalAndUniformMoments) {
  RngStream s(7, 1);
  const int n = 200000;
  std::vector<float> x(n);
  s.fill_normal(x.data(), n, 0, 0.0f, 1.0f);
  double sum = 0, sq = 0;
  for (float v : x) {
    sum += v;
    sq += double(v) * v;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.01);  // 4.5 standard errors (1/sqrt(n) = 0.0022)
  EXPECT_NEAR(var, 1.0, 0.015);
  s.fill_uniform(x.data(), n, 0, -1.0f, 3.0f);
  sum = 0;
  for (float v : x) {
    ASSERT_GE(v, -1.0f);
    ASSERT_LT(v, 3.0f);
    sum += v;
  }
  EXPECT_NEAR(sum / n, 1.0, 0.02);
}

}  // namespace
}  // namespace strata
