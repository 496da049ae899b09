#include "core/device.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "core/check.h"

#ifdef STRATA_WITH_CUDA
#include "core/cuda_check.h"
#endif

namespace strata {

std::string Device::to_string() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

bool built_with_cuda() {
#ifdef STRATA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef STRATA_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later probes start clean
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#ifdef STRATA_WITH_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(e);
  }
  return n == 0 ? "no CUDA device found" : "";
#else
  return "built without CUDA (configure with -DSTRATA_CUDA=ON)";
#endif
}

namespace {

thread_local void* t_current_cuda_stream = nullptr;

#ifdef STRATA_WITH_CUDA
constexpr int kMaxDevices = 64;

// One caching allocator per GPU, made on first use and kept for the process's life (tensors may
// be freed during static destruction, so it is never destroyed).
CachingAllocator& gpu_allocator(int index) {
  CHECK(index >= 0 && index < kMaxDevices) << "cuda:" << index << " is not a device index";
  static std::mutex mu;
  static std::array<CachingAllocator*, kMaxDevices> allocators{};
  std::lock_guard<std::mutex> lock(mu);
  if (allocators[index] == nullptr) {
    AllocatorBackend backend;
    backend.alloc = [index](size_t bytes) -> void* {
      CHECK_CUDA(cudaSetDevice(index));
      void* p = nullptr;
      const cudaError_t e = cudaMalloc(&p, bytes);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // not sticky: clear it so the retry starts clean
        return nullptr;
      }
      CHECK_CUDA(e);
      return p;
    };
    backend.free = [index](void* p) {
      CHECK_CUDA(cudaSetDevice(index));
      CHECK_CUDA(cudaFree(p));
    };
    allocators[index] = new CachingAllocator(std::move(backend), "cuda:" + std::to_string(index));
  }
  return *allocators[index];
}
#endif

}  // namespace

void set_current_cuda_stream(void* stream) { t_current_cuda_stream = stream; }
void* current_cuda_stream() { return t_current_cuda_stream; }

void* device_alloc(Device device, size_t bytes) {
  if (bytes == 0) return nullptr;
  if (device.is_cpu()) {
    size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    void* p = std::aligned_alloc(kCpuAlignment, rounded);
    CHECK(p != nullptr) << "out of host memory allocating " << bytes << " bytes";
    return p;
  }
#ifdef STRATA_WITH_CUDA
  static const int devices = cuda_device_count();
  CHECK(devices > device.index)
      << "cannot allocate on " << device.to_string() << ": " << cuda_unavailable_reason();
  return gpu_allocator(device.index).allocate(bytes, t_current_cuda_stream);
#else
  FATAL() << "cannot allocate on " << device.to_string() << ": " << cuda_unavailable_reason();
  return nullptr;
#endif
}

void device_free(Device device, void* ptr) {
  if (ptr == nullptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
    return;
  }
#ifdef STRATA_WITH_CUDA
  gpu_allocator(device.index).free(ptr);
#endif
}

CachingAllocatorStats device_memory_stats(Device device) {
#ifdef STRATA_WITH_CUDA
  if (device.is_cuda() && cuda_device_count() > device.index) return gpu_allocator(device.index).stats();
#endif
  return {};
}

void device_empty_cache(Device device) {
#ifdef STRATA_WITH_CUDA
  if (device.is_cuda() && cuda_device_count() > device.index) gpu_allocator(device.index).empty_cache();
#endif
}

Stream stream_create(Device device) {
  Stream s{device, nullptr};
#ifdef STRATA_WITH_CUDA
  if (device.is_cuda()) {
    CHECK_CUDA(cudaSetDevice(device.index));
    cudaStream_t cs;
    CHECK_CUDA(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
    s.handle = cs;
  }
#endif
  return s;
}

void stream_destroy(Stream& stream) {
#ifdef STRATA_WITH_CUDA
  if (stream.device.is_cuda() && stream.handle) CHECK_CUDA(cudaStreamDestroy(static_cast<cudaStream_t>(stream.handle)));
#endif
  stream.handle = nullptr;
}

void stream_synchronize(const Stream& stream) {
#ifdef STRATA_WITH_CUDA
  if (stream.device.is_cuda()) CHECK_CUDA(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)));
#endif
}

Event event_create(Device device) {
  Event e{device, nullptr};
#ifdef STRATA_WITH_CUDA
  if (device.is_cuda()) {
    cudaEvent_t ce;
    CHECK_CUDA(cudaEventCreateWithFlags(&ce, cudaEventDisableTiming));
    e.handle = ce;
  }
#endif
  return e;
}

void event_destroy(Event& event) {
#ifdef STRATA_WITH_CUDA
  if (event.device.is_cuda() && event.handle) CHECK_CUDA(cudaEventDestroy(static_cast<cudaEvent_t>(event.handle)));
#endif
  event.handle = nullptr;
}

void event_record(Event& event, const Stream& stream) {
#ifdef STRATA_WITH_CUDA
  if (event.device.is_cuda())
    CHECK_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(event.handle), static_cast<cudaStream_t>(stream.handle)));
#endif
}

void stream_wait_event(const Stream& stream, const Event& event) {
#ifdef STRATA_WITH_CUDA
  if (stream.device.is_cuda())
    CHECK_CUDA(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream.handle), static_cast<cudaEvent_t>(event.handle), 0));
#endif
}

void event_synchronize(const Event& event) {
#ifdef STRATA_WITH_CUDA
  if (event.device.is_cuda()) CHECK_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(event.handle)));
#endif
}

void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes,
                 const Stream& stream) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef STRATA_WITH_CUDA
  cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                        : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                              : cudaMemcpyDeviceToDevice;
  auto cs = static_cast<cudaStream_t>(stream.handle ? stream.handle : t_current_cuda_stream);
  CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, cs));
  // Host memory here is pageable: make the copy complete before the caller touches it.
  if (dst_device.is_cpu() || src_device.is_cpu()) CHECK_CUDA(cudaStreamSynchronize(cs));
#else
  FATAL() << "copy between " << src_device.to_string() << " and " << dst_device.to_string() << ": "
          << cuda_unavailable_reason();
#endif
}

void device_memset_zero(void* dst, Device device, size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  if (device.is_cpu()) {
    std::memset(dst, 0, bytes);
    return;
  }
#ifdef STRATA_WITH_CUDA
  CHECK_CUDA(cudaMemsetAsync(dst, 0, bytes,
                             static_cast<cudaStream_t>(stream.handle ? stream.handle : t_current_cuda_stream)));
#endif
}

}  // namespace strata
