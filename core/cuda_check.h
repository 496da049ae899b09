// CHECK_CUDA(expr): aborts with rank, file:line, the call and CUDA's error string when a CUDA
// runtime call fails. Include only from code compiled with STRATA_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>

#include "core/check.h"

#define CHECK_CUDA(expr)                                                  \
  do {                                                                    \
    cudaError_t _strata_cuda_err = (expr);                                \
    CHECK(_strata_cuda_err == cudaSuccess)                                \
        << #expr << ": " << cudaGetErrorString(_strata_cuda_err);         \
  } while (0)
