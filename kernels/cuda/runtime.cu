// The stream and error plumbing every op of kernels/cuda/ops_cuda.h shares: the calling thread's
// current stream, waiting for it, and the launch check that follows every kernel launch.
//
// The current stream is core/device.h's thread-local current_cuda_stream(), not a second copy:
// device_alloc hands out blocks owned by that same stream, so a scratch buffer an op allocates,
// uses and frees is reused only by work queued after it on the stream that used it (the caching
// allocator's rule, core/caching_allocator.h). Two thread-locals that could disagree would break
// that silently.
#include <cuda_runtime.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"  // set_current_cuda_stream, current_cuda_stream
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {

void set_current_stream(void* stream) { set_current_cuda_stream(stream); }

void* current_stream() { return current_cuda_stream(); }

void synchronize() {
  CHECK_CUDA(cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream())));
}

void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  CHECK(err == cudaSuccess) << "launching CUDA kernel " << kernel << ": "
                            << cudaGetErrorString(err);
}

}  // namespace strata::cuda
