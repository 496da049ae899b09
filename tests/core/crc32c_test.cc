// CRC-32C against the RFC 3720 vectors, and the SSE4.2 path against the portable slicing-by-8
// table at every length and alignment, extended piece by piece as well as in one pass.
#include "core/crc32c.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace strata {
namespace {

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c_extend_portable(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 B.4.
  std::vector<uint8_t> v(32, 0);
  EXPECT_EQ(crc32c(v.data(), v.size()), 0x8A9136AAu);
  std::fill(v.begin(), v.end(), 0xff);
  EXPECT_EQ(crc32c(v.data(), v.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c(v.data(), v.size()), 0x46DD794Eu);
  EXPECT_EQ(crc32c_extend_portable(0, v.data(), v.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc32c(v.data(), v.size()), 0x113FDB5Cu);
}

TEST(Crc32c, FastPathMatchesPortableAtEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  std::vector<uint8_t> data(4096 + 16);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t align = 0; align < 8; ++align) {
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4096}) {
      ASSERT_EQ(crc32c(data.data() + align, n), crc32c_extend_portable(0, data.data() + align, n))
          << "align " << align << " n " << n;
    }
  }
  // Extending piece by piece equals one pass.
  const uint32_t whole = crc32c(data.data(), data.size());
  uint32_t c = 0;
  for (size_t pos = 0, k = 1; pos < data.size(); pos += k, k = k * 3 % 97 + 1) {
    c = crc32c_extend(c, data.data() + pos, std::min(k, data.size() - pos));
  }
  EXPECT_EQ(c, whole);
}

}  // namespace
}  // namespace strata
