// AdamW, gradient clipping and the non-finite check over OptimTensors; the per-tensor update and
// the sum of squares are kernels/optim_ops.h (formulas in adamw.h).
#include "optim/adamw.h"

#include <cmath>
#include <set>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/cpu/vec.h"  // parallel_for, map_f32
#include "kernels/optim_ops.h"
#ifdef STRATA_WITH_CUDA
#include "kernels/cuda/ops_cuda.h"
#endif

namespace strata {
namespace {

void check_tensor(const OptimTensor& t) {
  CHECK(t.value != nullptr && t.grad != nullptr)
      << "optimizer tensor " << t.name << ": null value or grad";
  CHECK(t.value->dtype() == DType::kF32 && t.grad->dtype() == DType::kF32)
      << "optimizer tensor " << t.name << ": value " << t.value->to_string() << " and grad "
      << t.grad->to_string() << " must be f32";
  CHECK(t.value->shape() == t.grad->shape())
      << "optimizer tensor " << t.name << ": value " << t.value->to_string() << " but grad "
      << t.grad->to_string();
  CHECK(t.value->device() == t.grad->device())
      << "optimizer tensor " << t.name << ": value " << t.value->to_string() << " and grad "
      << t.grad->to_string() << " live on different devices";
}

// The tensors' device, which every tensor of the list shares (checked).
Device list_device(const std::vector<OptimTensor>& tensors) {
  const Device d = tensors.empty() ? Device::cpu() : tensors.front().value->device();
  for (const OptimTensor& t : tensors)
    CHECK(t.value->device() == d) << "optimizer tensor " << t.name << " is on " << t.value->device().to_string()
                                  << ", the first on " << d.to_string() << ": one optimizer, one device";
  return d;
}

}  // namespace

AdamW::AdamW(const OptimConfig& cfg, std::vector<OptimTensor> tensors)
    : cfg_(cfg), tensors_(std::move(tensors)) {
  const DType moment_dtype = cfg_.moments_dtype == MomentDType::kBF16 ? DType::kBF16 : DType::kF32;
  std::set<std::string> names;
  for (const OptimTensor& t : tensors_) {
    check_tensor(t);
    CHECK(names.insert(t.name).second) << "optimizer tensor " << t.name << " listed twice";
    m_.push_back(Tensor::zeros(t.value->shape(), moment_dtype, t.value->device()));
    v_.push_back(Tensor::zeros(t.value->shape(), moment_dtype, t.value->device()));
  }
  device_ = list_device(tensors_);
}

int64_t AdamW::step_count() const { return step_; }

void AdamW::to_device(Device device) {
  CHECK(list_device(tensors_) == device) << "AdamW::to_device(" << device.to_string()
                                         << "): move the parameters there first";
  for (Tensor& m : m_) m = m.to(device);
  for (Tensor& v : v_) v = v.to(device);
  device_ = device;
}

void AdamW::set_step_count(int64_t t) {
  CHECK_GE(t, 0) << "AdamW step count";
  step_ = t;
}

std::vector<std::pair<std::string, Tensor*>> AdamW::state_tensors() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    out.emplace_back("optim.m." + tensors_[i].name, &m_[i]);
    out.emplace_back("optim.v." + tensors_[i].name, &v_[i]);
  }
  return out;
}

void AdamW::step(double lr) {
  const int64_t t = step_count() + 1;
  set_step_count(t);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimTensor& ot = tensors_[i];
    check_tensor(ot);
    const AdamwScalars s = adamw_scalars(cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, lr, t, ot.decay);
    const int64_t n = ot.value->numel();
#ifdef STRATA_WITH_CUDA
    if (device_.is_cuda()) {
      if (m_[i].dtype() == DType::kBF16) {
        cuda::adamw_update_bf16(ot.value->f32(), ot.grad->f32(), m_[i].data<uint16_t>(), v_[i].data<uint16_t>(), n, s);
      } else {
        cuda::adamw_update_f32(ot.value->f32(), ot.grad->f32(), m_[i].f32(), v_[i].f32(), n, s);
      }
      continue;
    }
#endif
    if (m_[i].dtype() == DType::kBF16) {
      adamw_update_bf16(ot.value->f32(), ot.grad->f32(), m_[i].data<uint16_t>(),
                        v_[i].data<uint16_t>(), n, s);
    } else {
      adamw_update_f32(ot.value->f32(), ot.grad->f32(), m_[i].f32(), v_[i].f32(), n, s);
    }
  }
}

double grad_sum_of_squares(const std::vector<OptimTensor>& tensors) {
#ifdef STRATA_WITH_CUDA
  if (list_device(tensors).is_cuda()) {  // one launch over every tensor, the CPU's order
    std::vector<const float*> xs;
    std::vector<int64_t> ns;
    for (const OptimTensor& t : tensors) {
      check_tensor(t);
      xs.push_back(t.grad->f32());
      ns.push_back(t.grad->numel());
    }
    return cuda::grad_sum_squares_f32(xs.data(), ns.data(), static_cast<int64_t>(xs.size()));
  }
#endif
  double total = 0.0;
  for (const OptimTensor& t : tensors) {
    check_tensor(t);
    const float* x = t.grad->f32();
    const int64_t n = t.grad->numel();
    total += grad_sum_squares_f32(&x, &n, 1);
  }
  return total;
}

void scale_grads(const std::vector<OptimTensor>& tensors, double coef) {
  const float c = static_cast<float>(coef);
  for (const OptimTensor& t : tensors) {
    check_tensor(t);
    float* g = t.grad->f32();
    const int64_t n = t.grad->numel();
#ifdef STRATA_WITH_CUDA
    if (t.grad->device().is_cuda()) {
      cuda::scale_f32(g, c, n);
      continue;
    }
#endif
    cpu::parallel_for(n, n, [&](int64_t begin, int64_t end) {
      cpu::map_f32(g + begin, end - begin, [&](int64_t i) { return g[begin + i] * c; });
    });
  }
}

double clip_grad_norm(const std::vector<OptimTensor>& tensors, double max_norm) {
  const double norm = std::sqrt(grad_sum_of_squares(tensors));
  if (max_norm > 0.0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) scale_grads(tensors, coef);
  }
  return norm;
}

bool grads_have_nonfinite(const std::vector<OptimTensor>& tensors) {
  for (const OptimTensor& t : tensors) {
    check_tensor(t);
#ifdef STRATA_WITH_CUDA
    if (t.grad->device().is_cuda()) {  // max |g| is NaN or Inf exactly when some g is
      if (!std::isfinite(cuda::reduce_amax_f32(t.grad->f32(), t.grad->numel()))) return true;
      continue;
    }
#endif
    const uint32_t* bits = reinterpret_cast<const uint32_t*>(t.grad->raw());
    const int64_t n = t.grad->numel();
    // Exponent all ones: Inf or NaN. Blocks of 64 elements OR their flags, then test.
    constexpr int64_t kBlock = 64;
    int64_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
      uint32_t any = 0;
      for (int64_t j = 0; j < kBlock; ++j) any |= (bits[i + j] & 0x7f800000u) == 0x7f800000u;
      if (any) return true;
    }
    for (; i < n; ++i)
      if ((bits[i] & 0x7f800000u) == 0x7f800000u) return true;
  }
  return false;
}

}  // namespace strata
