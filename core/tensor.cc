#include "core/tensor.h"

#include <atomic>
#include <cstring>

namespace strata {
namespace {

// Live and peak tensor bytes per device kind (cpu, cuda).
struct MemoryCounters {
  std::atomic<int64_t> current{0}, peak{0}, allocations{0};
};
MemoryCounters& counters(Device device) {
  static MemoryCounters c[2];
  return c[device.is_cuda() ? 1 : 0];
}

}  // namespace

Storage::Storage(Device device, size_t bytes)
    : device_(device), bytes_(bytes), data_(device_alloc(device, bytes)) {
  MemoryCounters& c = counters(device_);
  const int64_t now = c.current.fetch_add(static_cast<int64_t>(bytes_)) + static_cast<int64_t>(bytes_);
  int64_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
  c.allocations.fetch_add(1);
}

Storage::~Storage() {
  device_free(device_, data_);
  counters(device_).current.fetch_sub(static_cast<int64_t>(bytes_));
}

TensorMemoryStats tensor_memory_stats(Device device) {
  const MemoryCounters& c = counters(device);
  return {c.current.load(), c.peak.load(), c.allocations.load()};
}

void reset_tensor_memory_peak(Device device) {
  MemoryCounters& c = counters(device);
  c.peak.store(c.current.load());
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(device, static_cast<size_t>(shape.numel()) * dtype_size(dtype));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::from_f32(const Shape& shape, const std::vector<float>& values) {
  CHECK_EQ(static_cast<int64_t>(values.size()), shape.numel()) << "values for shape " << shape;
  Tensor t = empty(shape, DType::kF32);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  CHECK_GE(shape_.rank(), 1) << "rows() of a scalar";
  CHECK(0 <= begin && begin <= end && end <= shape_[0])
      << "rows [" << begin << ", " << end << ") of shape " << shape_;
  Tensor t = *this;
  int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.offset_bytes_ += static_cast<size_t>(begin * row_elems) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::view(const Shape& shape) const {
  CHECK_EQ(shape.numel(), numel()) << "view " << shape << " of " << shape_;
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::clone() const { return to(device()); }

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  device_copy(t.raw(), device, raw(), this->device(), nbytes());
  return t;
}

Tensor Tensor::cast(DType to) const {
  CHECK(device().is_cpu()) << "Tensor::cast runs on the CPU; use the kernels/ cast ops on " << device().to_string();
  if (to == dtype_) return clone();
  const size_t n = static_cast<size_t>(numel());
  Tensor out = empty(shape_, to);
  if (dtype_ == DType::kF32) {
    const float* s = f32();
    switch (to) {
      case DType::kBF16: f32_to_bf16_n(s, out.data<uint16_t>(), n); return out;
      case DType::kF8E4M3: f32_to_e4m3_n(s, out.data<uint8_t>(), n); return out;
      case DType::kF8E5M2: f32_to_e5m2_n(s, out.data<uint8_t>(), n); return out;
      default: break;
    }
  } else if (to == DType::kF32) {
    float* d = out.f32();
    switch (dtype_) {
      case DType::kBF16: bf16_to_f32_n(data<uint16_t>(), d, n); return out;
      case DType::kF8E4M3: e4m3_to_f32_n(data<uint8_t>(), d, n); return out;
      case DType::kF8E5M2: e5m2_to_f32_n(data<uint8_t>(), d, n); return out;
      default: break;
    }
  }
  FATAL() << "no cast from " << dtype_name(dtype_) << " to " << dtype_name(to);
  return out;
}

void Tensor::zero_() { device_memset_zero(raw(), device(), nbytes()); }

std::string Tensor::to_string() const {
  return std::string(dtype_name(dtype_)) + shape_.to_string() + "@" + device().to_string();
}

}  // namespace strata
