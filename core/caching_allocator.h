// CachingAllocator: device memory that is not handed back to the driver when a tensor dies, but
// kept for the next allocation of about the same size on the same stream (PyTorch's CUDA caching
// allocator, reduced to what Strata needs). cudaMalloc and cudaFree are slow and cudaFree
// synchronises the whole device, so a training step that allocates its activations afresh every
// micro-batch must not reach them: after the first step every allocation is a cache hit.
//
// Stream semantics: a block belongs to the stream it was allocated on. Freeing it makes it
// reusable at once by later allocations on that stream, which is safe because the stream runs
// the work in order: the new owner's kernels queue after the old owner's. Memory used by another
// stream must be freed only after that stream's work is done (synchronise or wait on an event).
//
// Sizes are rounded up: below 1 MiB to a multiple of 512 bytes, above to a multiple of 2 MiB. A
// cached block serves a request when it is at least the rounded size and at most a quarter
// larger (no splitting: a block is used whole). When the backend fails, every cached block is
// returned to it and the request is tried once more; failing again is a CHECK failure naming the
// device, the request and what is allocated and cached.
//
// The backend is a pair of functions so tests can drive the policy on the CPU (core/device.cc
// gives it cudaMalloc / cudaFree for each GPU).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace strata {

struct AllocatorBackend {
  std::function<void*(size_t bytes)> alloc;  // nullptr when out of memory
  std::function<void(void* ptr)> free;
};

struct CachingAllocatorStats {
  int64_t allocated_bytes = 0;       // rounded sizes of the blocks in use
  int64_t reserved_bytes = 0;        // in use + cached: what the backend holds for us
  int64_t peak_allocated_bytes = 0;
  int64_t peak_reserved_bytes = 0;
  int64_t backend_allocs = 0;        // calls that reached the backend
  int64_t backend_frees = 0;
  int64_t cache_hits = 0;            // allocations served from the cache
  int64_t oom_retries = 0;           // backend failures recovered by emptying the cache
};

class CachingAllocator {
 public:
  CachingAllocator(AllocatorBackend backend, std::string device_name);
  ~CachingAllocator();  // returns every block to the backend
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // bytes > 0; `stream` identifies the stream (a cudaStream_t, or any tag in tests).
  void* allocate(size_t bytes, void* stream);
  // ptr must come from allocate() and not be freed yet (checked).
  void free(void* ptr);
  // Returns every cached (unused) block to the backend.
  void empty_cache();
  CachingAllocatorStats stats() const;
  void reset_peaks();

  static size_t round_size(size_t bytes);

 private:
  struct Block {
    size_t size;
    void* stream;
  };
  void* reuse(size_t rounded, void* stream);  // under mu_
  void release_cached();                      // under mu_

  AllocatorBackend backend_;
  std::string device_name_;
  mutable std::mutex mu_;
  std::unordered_map<void*, Block> live_;
  // Cached blocks per stream, by size.
  std::map<void*, std::multimap<size_t, void*>> cached_;
  CachingAllocatorStats stats_;
};

}  // namespace strata
