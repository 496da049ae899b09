#include "core/crc32c.h"

#ifdef __SSE4_2__
#include <nmmintrin.h>  // _mm_crc32_u64 / _u8
#endif

#include <array>
#include <cstring>  // memcpy

namespace strata {
namespace {

// kCrcTables[k][b]: the CRC register after byte b followed by k zero bytes (reflected polynomial
// 0x82F63B78), for slicing-by-8.
constexpr std::array<std::array<uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? 0x82F63B78u : 0u);
    t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
  }
  return t;
}
constexpr auto kCrcTables = make_crc_tables();

}  // namespace

uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t n) {
  const auto& t = kCrcTables;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t l = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);  // little-endian: byte 0 is the low byte, processed first
    w ^= l;
    l = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
        t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
  }
  for (; n > 0; ++p, --n) l = t[0][(l ^ *p) & 0xffu] ^ (l >> 8);
  return ~l;
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
#ifdef __SSE4_2__  // implied by the -mavx2 floor of the build
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t l = ~crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    l = _mm_crc32_u64(l, w);
  }
  uint32_t l32 = static_cast<uint32_t>(l);
  for (; n > 0; ++p, --n) l32 = _mm_crc32_u8(l32, *p);
  return ~l32;
#else
  return crc32c_extend_portable(crc, data, n);
#endif
}

}  // namespace strata
