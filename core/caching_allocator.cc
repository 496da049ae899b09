#include "core/caching_allocator.h"

#include <utility>

#include "core/check.h"

namespace strata {
namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;  // 1 MiB
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t{2} << 20;  // 2 MiB

}  // namespace

CachingAllocator::CachingAllocator(AllocatorBackend backend, std::string device_name)
    : backend_(std::move(backend)), device_name_(std::move(device_name)) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached();
  for (auto& [ptr, block] : live_) backend_.free(ptr);
}

size_t CachingAllocator::round_size(size_t bytes) {
  const size_t unit = bytes < kSmallLimit ? kSmallRound : kLargeRound;
  return (bytes + unit - 1) / unit * unit;
}

void* CachingAllocator::reuse(size_t rounded, void* stream) {
  auto pool = cached_.find(stream);
  if (pool == cached_.end()) return nullptr;
  auto it = pool->second.lower_bound(rounded);
  if (it == pool->second.end() || it->first > rounded + rounded / 4) return nullptr;
  void* ptr = it->second;
  live_[ptr] = Block{it->first, stream};
  pool->second.erase(it);
  return ptr;
}

void CachingAllocator::release_cached() {
  for (auto& [stream, pool] : cached_) {
    for (auto& [size, ptr] : pool) {
      backend_.free(ptr);
      stats_.reserved_bytes -= static_cast<int64_t>(size);
      stats_.backend_frees++;
    }
  }
  cached_.clear();
}

void* CachingAllocator::allocate(size_t bytes, void* stream) {
  CHECK_GT(bytes, size_t{0}) << "allocating 0 bytes on " << device_name_;
  const size_t rounded = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* ptr = reuse(rounded, stream);
  size_t size = rounded;
  if (ptr != nullptr) {
    size = live_[ptr].size;
    stats_.cache_hits++;
  } else {
    ptr = backend_.alloc(rounded);
    if (ptr == nullptr) {
      const int64_t cached = stats_.reserved_bytes - stats_.allocated_bytes;
      release_cached();
      stats_.oom_retries++;
      ptr = backend_.alloc(rounded);
      CHECK(ptr != nullptr) << "out of memory on " << device_name_ << ": " << bytes
                            << " bytes requested (" << rounded << " rounded), "
                            << stats_.allocated_bytes << " bytes in use, " << cached
                            << " bytes were cached and have been released";
    }
    stats_.backend_allocs++;
    stats_.reserved_bytes += static_cast<int64_t>(rounded);
    live_[ptr] = Block{rounded, stream};
  }
  stats_.allocated_bytes += static_cast<int64_t>(size);
  if (stats_.allocated_bytes > stats_.peak_allocated_bytes) stats_.peak_allocated_bytes = stats_.allocated_bytes;
  if (stats_.reserved_bytes > stats_.peak_reserved_bytes) stats_.peak_reserved_bytes = stats_.reserved_bytes;
  return ptr;
}

void CachingAllocator::free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  CHECK(it != live_.end()) << "freeing " << ptr << " on " << device_name_
                           << ": not a live allocation of this device (double free?)";
  const Block block = it->second;
  live_.erase(it);
  stats_.allocated_bytes -= static_cast<int64_t>(block.size);
  cached_[block.stream].emplace(block.size, ptr);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached();
}

CachingAllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

}  // namespace strata
