// The caching allocator's policy on a counting CPU backend: reuse on the same stream only,
// rounding, the size window, no reuse while in use, statistics and peaks, emptying the cache,
// recovering from a backend failure by releasing the cache, and the clear failure when even
// that does not help. The GPU backend (cudaMalloc) is the same class with other functions.
#include "core/caching_allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

namespace strata {
namespace {

// malloc with a byte limit and a record of what is live.
struct FakeBackend {
  size_t limit = SIZE_MAX;
  size_t live_bytes = 0;
  std::map<void*, size_t> live;
  int allocs = 0, frees = 0;

  AllocatorBackend make() {
    AllocatorBackend b;
    b.alloc = [this](size_t bytes) -> void* {
      if (live_bytes + bytes > limit) return nullptr;
      void* p = std::malloc(bytes);
      live[p] = bytes;
      live_bytes += bytes;
      allocs++;
      return p;
    };
    b.free = [this](void* p) {
      ASSERT_TRUE(live.count(p)) << "backend free of an unknown pointer";
      live_bytes -= live[p];
      live.erase(p);
      std::free(p);
      frees++;
    };
    return b;
  }
};

void* const kStreamA = reinterpret_cast<void*>(0x1);
void* const kStreamB = reinterpret_cast<void*>(0x2);

TEST(CachingAllocatorTest, RoundsSmallTo512AndLargeTo2MiB) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) - 1), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) + 1), size_t{2} << 20);
  EXPECT_EQ(CachingAllocator::round_size((size_t{5} << 20) + 7), size_t{6} << 20);
}

TEST(CachingAllocatorTest, ReusesAFreedBlockOnTheSameStreamOnly) {
  FakeBackend fake;
  CachingAllocator a(fake.make(), "fake:0");
  void* p = a.allocate(1000, kStreamA);
  a.free(p);
  EXPECT_EQ(fake.frees, 0) << "a freed block stays cached";
  void* q = a.allocate(900, kStreamB);  // another stream: must not get p
  EXPECT_NE(q, p);
  void* r = a.allocate(1024, kStreamA);  // same stream, same rounded size
  EXPECT_EQ(r, p);
  EXPECT_EQ(fake.allocs, 2);
  const CachingAllocatorStats s = a.stats();
  EXPECT_EQ(s.cache_hits, 1);
  EXPECT_EQ(s.allocated_bytes, 2048);
  EXPECT_EQ(s.reserved_bytes, 2048);
}

TEST(CachingAllocatorTest, NeverHandsOutABlockInUseAndKeepsTheSizeWindow) {
  FakeBackend fake;
  CachingAllocator a(fake.make(), "fake:0");
  void* big = a.allocate(size_t{8} << 20, kStreamA);
  void* live = a.allocate(512, kStreamA);
  a.free(big);
  // 1 MiB + 1 rounds to 2 MiB: an 8 MiB block is more than a quarter larger, so no reuse.
  void* small = a.allocate((size_t{1} << 20) + 1, kStreamA);
  EXPECT_NE(small, big);
  // 7 MiB rounds to 8 MiB: the cached block fits.
  void* again = a.allocate(size_t{7} << 20, kStreamA);
  EXPECT_EQ(again, big);
  void* other = a.allocate(512, kStreamA);
  EXPECT_NE(other, live) << "a live block was handed out twice";
  for (void* p : {live, small, again, other}) a.free(p);
  EXPECT_EQ(a.stats().allocated_bytes, 0);
}

TEST(CachingAllocatorTest, StatsPeaksAndEmptyCache) {
  FakeBackend fake;
  CachingAllocator a(fake.make(), "fake:0");
  void* p = a.allocate(3000, kStreamA);  // 3072
  void* q = a.allocate(100, kStreamA);   // 512
  a.free(p);
  CachingAllocatorStats s = a.stats();
  EXPECT_EQ(s.allocated_bytes, 512);
  EXPECT_EQ(s.reserved_bytes, 3584);
  EXPECT_EQ(s.peak_allocated_bytes, 3584);
  a.reset_peaks();
  EXPECT_EQ(a.stats().peak_allocated_bytes, 512);
  a.empty_cache();
  s = a.stats();
  EXPECT_EQ(s.reserved_bytes, 512);
  EXPECT_EQ(s.backend_frees, 1);
  EXPECT_EQ(fake.live.size(), 1u);
  a.free(q);
}

TEST(CachingAllocatorTest, ReleasesTheCacheAndRetriesWhenTheBackendFails) {
  FakeBackend fake;
  fake.limit = 4096;
  CachingAllocator a(fake.make(), "fake:0");
  void* p = a.allocate(3000, kStreamB);  // 3072 cached on B after the free
  a.free(p);
  void* q = a.allocate(2048, kStreamA);  // 3072 + 2048 > 4096: retry after releasing B's block
  EXPECT_NE(q, nullptr);
  const CachingAllocatorStats s = a.stats();
  EXPECT_EQ(s.oom_retries, 1);
  EXPECT_EQ(s.reserved_bytes, 2048);
  a.free(q);
}

TEST(CachingAllocatorDeathTest, OutOfMemoryNamesTheDeviceAndTheRequest) {
  EXPECT_DEATH(
      {
        FakeBackend fake;
        fake.limit = 1024;
        CachingAllocator a(fake.make(), "fake:3");
        a.allocate(5000, kStreamA);
      },
      "out of memory on fake:3: 5000 bytes requested \\(5120 rounded\\)");
}

TEST(CachingAllocatorDeathTest, DoubleFreeIsCaught) {
  EXPECT_DEATH(
      {
        FakeBackend fake;
        CachingAllocator a(fake.make(), "fake:0");
        void* p = a.allocate(10, kStreamA);
        a.free(p);
        a.free(p);
      },
      "not a live allocation of this device");
}

TEST(CachingAllocatorTest, DestructorReturnsEverything) {
  FakeBackend fake;
  {
    CachingAllocator a(fake.make(), "fake:0");
    a.allocate(100, kStreamA);
    a.free(a.allocate(5000, kStreamB));
  }
  EXPECT_TRUE(fake.live.empty());
}

}  // namespace
}  // namespace strata
