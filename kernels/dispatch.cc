#include "kernels/dispatch.h"

#include "core/check.h"
#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace strata {
namespace {
thread_local Device t_compute_device = Device::cpu();
}  // namespace

Device compute_device() { return t_compute_device; }

ComputeDeviceScope::ComputeDeviceScope(Device device) : previous_(t_compute_device) {
  if (device.is_cuda()) {
    CHECK(built_with_cuda()) << "computing on " << device.to_string() << " needs a CUDA build (-DSTRATA_CUDA=ON)";
#ifdef STRATA_WITH_CUDA
    CHECK_CUDA(cudaSetDevice(device.index));
#endif
  }
  t_compute_device = device;
}

ComputeDeviceScope::~ComputeDeviceScope() {
#ifdef STRATA_WITH_CUDA
  if (previous_.is_cuda()) cudaSetDevice(previous_.index);
#endif
  t_compute_device = previous_;
}

}  // namespace strata
