// Tests of the element-type codecs (core/dtype.h, REFERENCE.md section 3):
//   - every fp8 code decodes and re-encodes to itself (NaN codes decode to NaN);
//   - handwritten satfinite / tie-to-even cases, derived in the comments;
//   - the scalar fp8 cast against a brute-force nearest-code search on rounding-critical inputs;
//   - bulk == scalar bit for bit for every conversion, at lengths that exercise the AVX2 tails
//     and the two-thread split;
//   - the golden codes PyTorch produced (tests/golden/casts.json, scripts/gen_golden_casts.py).
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace strata {
namespace {

bool is_e4m3_nan(uint8_t c) { return (c & 0x7f) == 0x7f; }
bool is_e5m2_nan(uint8_t c) { return (c & 0x7c) == 0x7c && (c & 0x03) != 0; }
bool is_bf16_nan(uint16_t c) { return (c & 0x7f80) == 0x7f80 && (c & 0x7f) != 0; }

float pow2(int e) { return std::ldexp(1.0f, e); }

// ---- names --------------------------------------------------------------------------------------

TEST(DType, NamesSizesAndParsing) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2, DType::kI32,
                  DType::kI64, DType::kU8}) {
    DType parsed;
    ASSERT_TRUE(parse_dtype(dtype_name(t), &parsed)) << dtype_name(t);
    EXPECT_EQ(parsed, t);
  }
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF8E4M3), 1u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_STREQ(dtype_name(DType::kF8E5M2), "f8e5m2");
  DType unused;
  EXPECT_FALSE(parse_dtype("float", &unused));
  EXPECT_FALSE(parse_dtype("", &unused));
}

// ---- every code ---------------------------------------------------------------------------------

TEST(Fp8, E4M3EveryCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_f32(static_cast<uint8_t>(c));
    if (is_e4m3_nan(static_cast<uint8_t>(c))) {
      EXPECT_TRUE(std::isnan(v)) << c;
      continue;
    }
    EXPECT_EQ(f32_to_e4m3(v), c) << "code " << c << " value " << v;
  }
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x08), pow2(-6));  // min normal
  EXPECT_EQ(e4m3_to_f32(0x01), pow2(-9));  // min subnormal
  EXPECT_EQ(e4m3_to_f32(0x07), 7 * pow2(-9));
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_f32(0x80)));
  for (int c = 1; c < 0x7f; ++c) {  // positive codes are ordered like their values
    EXPECT_LT(e4m3_to_f32(static_cast<uint8_t>(c - 1)), e4m3_to_f32(static_cast<uint8_t>(c)));
  }
}

TEST(Fp8, E5M2EveryCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const float v = e5m2_to_f32(static_cast<uint8_t>(c));
    if (is_e5m2_nan(static_cast<uint8_t>(c))) {
      EXPECT_TRUE(std::isnan(v)) << c;
    } else if ((c & 0x7f) == 0x7c) {
      // Inf decodes to Inf; satfinite then encodes it to +-max, the only code that cannot
      // round-trip.
      EXPECT_TRUE(std::isinf(v)) << c;
      EXPECT_EQ(f32_to_e5m2(v), (c & 0x80) | 0x7b);
    } else {
      EXPECT_EQ(f32_to_e5m2(v), c) << "code " << c << " value " << v;
    }
  }
  EXPECT_EQ(e5m2_to_f32(0x7b), 57344.0f);
  EXPECT_EQ(e5m2_to_f32(0x04), pow2(-14));  // min normal
  EXPECT_EQ(e5m2_to_f32(0x01), pow2(-16));  // min subnormal
  EXPECT_EQ(e5m2_to_f32(0x3c), 1.0f);
  for (int c = 1; c < 0x7c; ++c) {
    EXPECT_LT(e5m2_to_f32(static_cast<uint8_t>(c - 1)), e5m2_to_f32(static_cast<uint8_t>(c)));
  }
}

// ---- handwritten cases --------------------------------------------------------------------------

TEST(Fp8, E4M3HandwrittenCases) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(f32_to_e4m3(448.0f), 0x7e);  // max: exponent 15, mantissa 110
  EXPECT_EQ(f32_to_e4m3(464.0f), 0x7e);  // halfway to the (NaN) next code: saturates
  EXPECT_EQ(f32_to_e4m3(500.0f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(1e9f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(inf), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-inf), 0xfe);
  EXPECT_EQ(f32_to_e4m3(-1e9f), 0xfe);
  EXPECT_EQ(f32_to_e4m3(nan), 0x7f);
  EXPECT_EQ(f32_to_e4m3(-nan), 0xff);
  EXPECT_EQ(f32_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(f32_to_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e4m3(1.0f), 0x38);  // exponent 7 (bias 7), mantissa 0
  EXPECT_EQ(f32_to_e4m3(-2.0f), 0xc0);
  // Ties between codes go to the even mantissa.
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);  // 1 + 1/16: between 1.0 (m=0) and 1.125 (m=1) -> m=0
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3a);  // between 1.125 (m=1) and 1.25 (m=2) -> m=2
  EXPECT_EQ(f32_to_e4m3(1.9375f), 0x40);  // between 1.875 (m=7) and 2.0: carries into exponent 8
  EXPECT_EQ(f32_to_e4m3(432.0f), 0x7e);   // between 416 (0x7d, m=5) and 448 (m=6) -> 448
  EXPECT_EQ(f32_to_e4m3(std::nextafter(1.0625f, 2.0f)), 0x39);  // just past the tie rounds up
  // Subnormals are k * 2^-9; the same rules hold there.
  EXPECT_EQ(f32_to_e4m3(pow2(-9)), 0x01);
  EXPECT_EQ(f32_to_e4m3(pow2(-10)), 0x00);  // half the min subnormal: tie -> 0 (even)
  EXPECT_EQ(f32_to_e4m3(-pow2(-10)), 0x80);  // ... keeping the sign
  EXPECT_EQ(f32_to_e4m3(std::nextafter(pow2(-10), 1.0f)), 0x01);
  EXPECT_EQ(f32_to_e4m3(pow2(-11)), 0x00);
  EXPECT_EQ(f32_to_e4m3(3 * pow2(-10)), 0x02);  // 1.5 subnormals: tie between 1 and 2 -> 2
  EXPECT_EQ(f32_to_e4m3(5 * pow2(-10)), 0x02);  // 2.5 subnormals: tie between 2 and 3 -> 2
  EXPECT_EQ(f32_to_e4m3(15 * pow2(-10)), 0x08);  // 7.5 subnormals: tie 7 / min normal -> 0x08
  EXPECT_EQ(f32_to_e4m3(pow2(-130)), 0x00);      // an fp32 denormal
}

TEST(Fp8, E5M2HandwrittenCases) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(f32_to_e5m2(57344.0f), 0x7b);  // max: exponent 30, mantissa 11
  EXPECT_EQ(f32_to_e5m2(61440.0f), 0x7b);  // halfway to Inf: saturates
  EXPECT_EQ(f32_to_e5m2(1e9f), 0x7b);
  EXPECT_EQ(f32_to_e5m2(inf), 0x7b);  // satfinite: no Inf output
  EXPECT_EQ(f32_to_e5m2(-inf), 0xfb);
  EXPECT_EQ(f32_to_e5m2(nan), 0x7e);
  EXPECT_EQ(f32_to_e5m2(-nan), 0xfe);
  EXPECT_EQ(f32_to_e5m2(-0.0f), 0x80);
  EXPECT_EQ(f32_to_e5m2(1.0f), 0x3c);    // exponent 15 (bias 15), mantissa 0
  EXPECT_EQ(f32_to_e5m2(1.125f), 0x3c);  // between 1.0 (m=0) and 1.25 (m=1) -> m=0
  EXPECT_EQ(f32_to_e5m2(1.375f), 0x3e);  // between 1.25 (m=1) and 1.5 (m=2) -> m=2
  EXPECT_EQ(f32_to_e5m2(1.875f), 0x40);  // between 1.75 (m=3) and 2.0: carries into exponent 16
  EXPECT_EQ(f32_to_e5m2(pow2(-16)), 0x01);
  EXPECT_EQ(f32_to_e5m2(pow2(-17)), 0x00);  // half the min subnormal: tie -> 0
  EXPECT_EQ(f32_to_e5m2(3 * pow2(-17)), 0x02);
  EXPECT_EQ(f32_to_e5m2(7 * pow2(-17)), 0x04);  // 3.5 subnormals: tie 3 / min normal -> 0x04
}

TEST(Bf16, HandwrittenCases) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + pow2(-8)), 0x3f80);      // tie -> even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * pow2(-8)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x7f7fffff)), 0x7f80);  // fp32 max rounds to Inf
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x7f800001)), 0x7fc0);  // signalling NaN is quieted
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x00018000)), 0x0002);  // fp32 denormal tie -> even
}

// ---- brute-force reference ----------------------------------------------------------------------

// Nearest finite code by search over all codes, ties to the even code; saturating. Independent of
// the bit tricks in dtype.cc.
uint8_t nearest_code(float x, float (*decode)(uint8_t), uint8_t max_code) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= decode(max_code)) return sign | max_code;
  for (uint8_t c = 0; c < max_code; ++c) {
    const double lo = decode(c), hi = decode(static_cast<uint8_t>(c + 1));
    if (a > hi) continue;
    if (a - lo < hi - a || (a - lo == hi - a && c % 2 == 0)) return sign | c;
    return sign | static_cast<uint8_t>(c + 1);
  }
  return sign | max_code;
}

// Rounding-critical fp32 inputs: every code, every midpoint between neighbours and the fp32
// values either side of it, and patterns around the cut bit across the whole exponent range.
std::vector<float> critical_inputs(float (*decode)(uint8_t), uint8_t max_code, int cut) {
  std::vector<float> xs;
  for (uint8_t c = 0; c < max_code; ++c) {
    const float mid = (decode(c) + decode(static_cast<uint8_t>(c + 1))) / 2;  // exact in fp32
    for (float v : {decode(c), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      xs.push_back(v);
      xs.push_back(-v);
    }
  }
  const uint32_t half = 1u << (cut - 1);
  for (uint32_t top = 0; top < (1u << (32 - cut)); ++top) {
    for (uint32_t low : {0u, 1u, half - 1, half, half + 1, 2 * half - 1}) {
      const float v = f32_from_bits((top << cut) | low);
      if (!std::isnan(v)) xs.push_back(v);
    }
  }
  return xs;
}

TEST(Fp8, E4M3MatchesBruteForce) {
  for (float x : critical_inputs(e4m3_to_f32, 0x7e, 20)) {
    ASSERT_EQ(f32_to_e4m3(x), nearest_code(x, e4m3_to_f32, 0x7e)) << x;
  }
}

TEST(Fp8, E5M2MatchesBruteForce) {
  for (float x : critical_inputs(e5m2_to_f32, 0x7b, 21)) {
    ASSERT_EQ(f32_to_e5m2(x), nearest_code(x, e5m2_to_f32, 0x7b)) << x;
  }
}

// ---- bulk == scalar -----------------------------------------------------------------------------

// Random bit patterns (every class: NaN payloads, Inf, denormals), log-uniform magnitudes of both
// signs, and a block of edge values, shuffled so edges land in vector bodies and tails alike.
std::vector<float> mixed_inputs(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> log_mag(-30.0f, 18.0f);
  const float edges[] = {0.0f, -0.0f, 448.0f, 464.0f, 57344.0f, 61440.0f, pow2(-10), pow2(-17),
                         3 * pow2(-10), 1.0f + pow2(-8), 1.0625f, 1.1875f, 1.9375f, -432.0f,
                         1.125f, 1.375f, 1.875f, f32_from_bits(0x7f800000),
                         f32_from_bits(0xff800000), f32_from_bits(0x7fc00000),
                         f32_from_bits(0xffa12345), f32_from_bits(0x7f800001),
                         f32_from_bits(0x00000001), f32_from_bits(0x7f7fffff)};
  std::vector<float> xs(n);
  for (size_t i = 0; i < n; ++i) {
    switch (rng() % 3) {
      case 0: xs[i] = f32_from_bits(rng()); break;
      case 1: xs[i] = std::exp2(log_mag(rng)) * ((rng() & 1) ? -1.0f : 1.0f); break;
      default: xs[i] = edges[rng() % std::size(edges)]; break;
    }
  }
  return xs;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

const size_t kLengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1000, 4097, (1u << 20) + 37};

TEST(Bulk, EncodesMatchScalar) {
  for (size_t n : kLengths) {
    const std::vector<float> x = mixed_inputs(n, static_cast<uint32_t>(n) + 1);
    std::vector<uint16_t> bf(n), bf_ref(n);
    std::vector<uint8_t> e4(n), e4_ref(n), e5(n), e5_ref(n);
    f32_to_bf16_n(x.data(), bf.data(), n);
    f32_to_e4m3_n(x.data(), e4.data(), n);
    f32_to_e5m2_n(x.data(), e5.data(), n);
    for (size_t i = 0; i < n; ++i) {
      bf_ref[i] = f32_to_bf16(x[i]);
      e4_ref[i] = f32_to_e4m3(x[i]);
      e5_ref[i] = f32_to_e5m2(x[i]);
    }
    EXPECT_TRUE(same_bits(bf, bf_ref)) << "f32_to_bf16_n, n=" << n;
    EXPECT_TRUE(same_bits(e4, e4_ref)) << "f32_to_e4m3_n, n=" << n;
    EXPECT_TRUE(same_bits(e5, e5_ref)) << "f32_to_e5m2_n, n=" << n;
  }
}

TEST(Bulk, DecodesMatchScalar) {
  for (size_t n : kLengths) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::vector<uint16_t> bf(n);
    std::vector<uint8_t> f8(n);
    for (size_t i = 0; i < n; ++i) {
      bf[i] = static_cast<uint16_t>(rng());
      f8[i] = static_cast<uint8_t>(rng());
    }
    std::vector<float> out(n), ref(n);
    bf16_to_f32_n(bf.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) ref[i] = bf16_to_f32(bf[i]);
    EXPECT_TRUE(same_bits(out, ref)) << "bf16_to_f32_n, n=" << n;
    e4m3_to_f32_n(f8.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) ref[i] = e4m3_to_f32(f8[i]);
    EXPECT_TRUE(same_bits(out, ref)) << "e4m3_to_f32_n, n=" << n;
    e5m2_to_f32_n(f8.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) ref[i] = e5m2_to_f32(f8[i]);
    EXPECT_TRUE(same_bits(out, ref)) << "e5m2_to_f32_n, n=" << n;
  }
}

TEST(Bulk, UnalignedPointers) {
  const size_t n = 1000;
  const std::vector<float> x = mixed_inputs(n + 1, 7);
  std::vector<uint8_t> out(n + 1);
  f32_to_e4m3_n(x.data() + 1, out.data() + 1, n);
  for (size_t i = 1; i <= n; ++i) ASSERT_EQ(out[i], f32_to_e4m3(x[i])) << i;
  std::vector<uint16_t> bf(n + 1);
  f32_to_bf16_n(x.data() + 1, bf.data() + 1, n);
  for (size_t i = 1; i <= n; ++i) ASSERT_EQ(bf[i], f32_to_bf16(x[i])) << i;
}

TEST(Bulk, RoundToDTypeMatchesScalar) {
  struct Case {
    DType to;
    float (*round)(float);
  };
  const Case cases[] = {
      {DType::kF32, [](float f) { return f; }},
      {DType::kBF16, [](float f) { return round_to_bf16(f); }},
      {DType::kF8E4M3, [](float f) { return e4m3_to_f32(f32_to_e4m3(f)); }},
      {DType::kF8E5M2, [](float f) { return e5m2_to_f32(f32_to_e5m2(f)); }},
  };
  for (const Case& c : cases) {
    for (size_t n : kLengths) {
      std::vector<float> x = mixed_inputs(n, static_cast<uint32_t>(n) + 99);
      std::vector<float> ref(n);
      for (size_t i = 0; i < n; ++i) ref[i] = c.round(x[i]);
      round_to_dtype_n(x.data(), n, c.to);
      EXPECT_TRUE(same_bits(x, ref)) << dtype_name(c.to) << " n=" << n;
    }
  }
}

// ---- golden codes from PyTorch ------------------------------------------------------------------

struct GoldenCase {
  uint32_t x;
  uint8_t e4m3, e5m2;
  uint16_t bf16;
};

// The value of "key":"0x..." on one line of casts.json (written one case per line).
uint32_t hex_field(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":\"";
  const size_t at = line.find(tag);
  EXPECT_NE(at, std::string::npos) << key << " missing in: " << line;
  if (at == std::string::npos) return 0;
  return static_cast<uint32_t>(std::stoul(line.substr(at + tag.size()), nullptr, 16));
}

std::vector<GoldenCase> load_golden() {
  const std::string path = std::string(STRATA_SOURCE_DIR) + "/tests/golden/casts.json";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path << " (run scripts/gen_golden_casts.py)";
  std::vector<GoldenCase> cases;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("{\"x\":", 0) != 0) continue;
    cases.push_back({hex_field(line, "x"), static_cast<uint8_t>(hex_field(line, "e4m3")),
                     static_cast<uint8_t>(hex_field(line, "e5m2")),
                     static_cast<uint16_t>(hex_field(line, "bf16"))});
  }
  return cases;
}

TEST(Golden, CastsMatchPyTorch) {
  const std::vector<GoldenCase> cases = load_golden();
  ASSERT_GT(cases.size(), 2000u);
  const size_t n = cases.size();
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = f32_from_bits(cases[i].x);
  std::vector<uint8_t> e4(n), e5(n);
  std::vector<uint16_t> bf(n);
  f32_to_e4m3_n(x.data(), e4.data(), n);
  f32_to_e5m2_n(x.data(), e5.data(), n);
  f32_to_bf16_n(x.data(), bf.data(), n);
  int nan_inputs = 0;
  for (size_t i = 0; i < n; ++i) {
    const GoldenCase& g = cases[i];
    const uint8_t s4 = f32_to_e4m3(x[i]), s5 = f32_to_e5m2(x[i]);
    const uint16_t sb = f32_to_bf16(x[i]);
    SCOPED_TRACE(testing::Message() << "input 0x" << std::hex << g.x);
    EXPECT_EQ(e4[i], s4);
    EXPECT_EQ(e5[i], s5);
    EXPECT_EQ(bf[i], sb);
    if (std::isnan(x[i])) {  // sign and payload are not part of the contract
      ++nan_inputs;
      EXPECT_TRUE(is_e4m3_nan(s4) && is_e5m2_nan(s5) && is_bf16_nan(sb));
      continue;
    }
    EXPECT_EQ(s4, g.e4m3);
    EXPECT_EQ(s5, g.e5m2);
    EXPECT_EQ(sb, g.bf16);
  }
  EXPECT_GT(nan_inputs, 0);
}

}  // namespace
}  // namespace strata
