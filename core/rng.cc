#include "core/rng.h"

#include <cmath>

namespace strata {
namespace {
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

inline void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c0, &hi0, &lo0);
    mulhilo(kM1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

uint64_t stream_id(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return splitmix64(h);
}

uint32_t RngStream::u32(uint64_t offset) const {
  return philox4x32(seed_, stream_, offset >> 2)[offset & 3];
}

float RngStream::uniform(uint64_t offset) const {
  return static_cast<float>(u32(offset) >> 8) * (1.0f / 16777216.0f);
}

float RngStream::normal(uint64_t offset) const {
  auto w = philox4x32(seed_, stream_, offset);
  // u1 in (0, 1] so log() is finite; u2 in [0, 1).
  double u1 = (static_cast<double>(w[0]) + 1.0) * (1.0 / 4294967296.0);
  double u2 = static_cast<double>(w[1]) * (1.0 / 4294967296.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

void RngStream::fill_normal(float* out, int64_t n, uint64_t first, float mean, float std) const {
  for (int64_t i = 0; i < n; ++i) out[i] = mean + std * normal(first + static_cast<uint64_t>(i));
}

void RngStream::fill_uniform(float* out, int64_t n, uint64_t first, float lo, float hi) const {
  for (int64_t i = 0; i < n; ++i) out[i] = lo + (hi - lo) * uniform(first + static_cast<uint64_t>(i));
}

}  // namespace strata
