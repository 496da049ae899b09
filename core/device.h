// The minimal device layer: where memory lives (cpu or cuda:N), how to allocate it, copy between
// devices, and order work with streams and events. Later code asks a Tensor for its device rather
// than assuming host memory, so the same model code runs on either backend.
//
// On CPU, streams and events are trivial (work is synchronous). Without a CUDA build, or without
// a GPU, cuda_device_count() is 0 and any cuda allocation is a CHECK failure naming why.
#pragma once

#include <cstddef>
#include <string>

#include "core/caching_allocator.h"

namespace strata {

enum class DeviceKind { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::kCpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::kCuda, i}; }
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  bool is_cuda() const { return kind == DeviceKind::kCuda; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string to_string() const;  // "cpu", "cuda:0"
};

// True when this binary was built with STRATA_CUDA.
bool built_with_cuda();
// Number of usable GPUs (0 without a CUDA build, a driver or a device).
int cuda_device_count();
// Why cuda_device_count() is 0, for skip messages ("built without CUDA", "no CUDA device: ...").
std::string cuda_unavailable_reason();

// CPU memory is 64-byte aligned (AVX2 loads, cache lines). Zero bytes returns nullptr.
// GPU memory comes from the device's CachingAllocator (core/caching_allocator.h), as a block of
// this thread's current stream: freeing it lets later allocations on that stream reuse it at once.
constexpr size_t kCpuAlignment = 64;
void* device_alloc(Device device, size_t bytes);
void device_free(Device device, void* ptr);
// The GPU caching allocator's figures, and handing its unused blocks back to the driver. CPU
// devices report zeros (tensor_memory_stats in core/tensor.h counts tensors on every device).
CachingAllocatorStats device_memory_stats(Device device);
void device_empty_cache(Device device);

// The CUDA stream this thread queues device work on: the ops of kernels/cuda and device_alloc's
// stream ownership. A cudaStream_t; nullptr (the default) is the legacy default stream.
void set_current_cuda_stream(void* stream);
void* current_cuda_stream();

// Stream: an ordered queue of work on one device. The default-constructed stream of a device is
// its default (legacy) stream.
struct Stream {
  Device device;
  void* handle = nullptr;  // cudaStream_t on cuda; unused on cpu
};
Stream stream_create(Device device);
void stream_destroy(Stream& stream);
void stream_synchronize(const Stream& stream);

struct Event {
  Device device;
  void* handle = nullptr;  // cudaEvent_t on cuda
};
Event event_create(Device device);
void event_destroy(Event& event);
void event_record(Event& event, const Stream& stream);
// Makes later work on `stream` wait for `event` (no host wait).
void stream_wait_event(const Stream& stream, const Event& event);
void event_synchronize(const Event& event);

// Copies bytes between any two devices: on `stream`, or this thread's current CUDA stream when
// the stream has no handle (Stream{}). A copy between GPUs is asynchronous; one from or to host
// memory has completed when the call returns (host memory here is pageable).
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes,
                 const Stream& stream = Stream{});
void device_memset_zero(void* dst, Device device, size_t bytes, const Stream& stream = Stream{});

}  // namespace strata
