// Tensor: shared storage + shape + dtype + device, row-major and contiguous. Copies of a Tensor
// share storage (like torch.Tensor); clone() copies the data. Views select a contiguous run of
// rows (rows(b, e)) or reinterpret the shape (view(shape)); strided views are deliberately absent:
// every kernel takes contiguous operands and states their shapes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace strata {

// An owned, aligned allocation on one device; freed when the last Tensor using it goes away.
class Storage {
 public:
  Storage(Device device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Device device_;
  size_t bytes_;
  void* data_;
};

// What the tensor allocator holds on one device kind (every Storage counts; std::vector scratch
// inside kernels does not): the bytes alive now, the most alive at once since the last reset,
// and the number of allocations so far. `strata plan` predicts the peak; training logs it.
struct TensorMemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t allocations = 0;
};
TensorMemoryStats tensor_memory_stats(Device device = Device::cpu());
// Starts a new peak window at the current bytes.
void reset_tensor_memory_peak(Device device = Device::cpu());

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised memory (CPU memory is 64-byte aligned).
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  // An f32 CPU tensor holding `values` (values.size() must equal shape.numel()).
  static Tensor from_f32(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return storage_ != nullptr || shape_.rank() > 0; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : device_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  int64_t dim(int i) const { return shape_.dim(i); }

  void* raw() const {
    return storage_ ? static_cast<char*>(storage_->data()) + offset_bytes_ : nullptr;
  }
  // Typed access; T's size must match the dtype's (uint16_t for bf16, uint8_t for fp8).
  template <typename T>
  T* data() const {
    CHECK_EQ(sizeof(T), dtype_size(dtype_)) << "tensor of dtype " << dtype_name(dtype_);
    return static_cast<T*>(raw());
  }
  float* f32() const {
    CHECK(dtype_ == DType::kF32) << "expected an f32 tensor, got " << dtype_name(dtype_);
    return static_cast<float*>(raw());
  }

  // Rows [begin, end) of the leading dimension, sharing storage.
  Tensor rows(int64_t begin, int64_t end) const;
  // Same storage, another shape with the same number of elements.
  Tensor view(const Shape& shape) const;
  // Deep copy on `device` (default: the same device).
  Tensor clone() const;
  Tensor to(Device device) const;
  // Element-type conversion on the CPU with the exact codecs of core/dtype.h.
  Tensor cast(DType to) const;
  void zero_();

  std::string to_string() const;  // "f32(2, 3)@cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_;
};

}  // namespace strata
