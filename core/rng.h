// Counter-based random numbers (Philox 4x32-10, Salmon et al. 2011, as cuRAND and JAX use).
// A value is a pure function of (seed, stream, offset): no hidden state advances, so any rank can
// compute the number any other rank would have drawn. Strata keys every random choice this way:
// initialisation by (seed, hash of the tensor's global name, element offset), data order by
// (seed, epoch), sampling by (seed, step, prompt, sample). See DESIGN.md "The parallel layout".
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace strata {

// One Philox4x32-10 block: 4 random 32-bit words for a 128-bit counter under a 64-bit key.
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo);

// A stable 64-bit id for a name ("layers.3.moe.experts.w_up"): FNV-1a followed by a splitmix64
// finaliser. Stable across runs, platforms and releases: checkpoints and tests rely on it.
uint64_t stream_id(std::string_view name);

class RngStream {
 public:
  RngStream(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  RngStream(uint64_t seed, std::string_view name) : seed_(seed), stream_(stream_id(name)) {}

  // The raw 32-bit word at `offset` (words are numbered 4 per Philox block).
  uint32_t u32(uint64_t offset) const;
  // Uniform in [0, 1) with 24 random bits, from the word at `offset`.
  float uniform(uint64_t offset) const;
  // Standard normal for element `offset`: Box-Muller on the first two words of block `offset`.
  float normal(uint64_t offset) const;

  // out[i] = mean + std * normal(first + i).
  void fill_normal(float* out, int64_t n, uint64_t first, float mean, float std) const;
  // out[i] = lo + (hi - lo) * uniform(first + i).
  void fill_uniform(float* out, int64_t n, uint64_t first, float lo, float hi) const;

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }

 private:
  uint64_t seed_;
  uint64_t stream_;
};

}  // namespace strata
