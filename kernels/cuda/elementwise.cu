// CUDA twins of the elementwise ops of kernels/ops.h: arithmetic on flat arrays, bias rows and
// their column sums, the sigmoid's backward, SiLU and SwiGLU forward and backward.
//
// Each element is computed with the CPU's (kernels/cpu/elementwise.cc) operations in the CPU's
// order, every product and sum written as __fmul_rn / __fadd_rn (nvcc contracts none of them);
// axpy is an explicit fmaf as the CPU's std::fma. Differences from the CPU, within the tests'
// fp32 bound: exp is CUDA's expf (2 ulp, no fast-math) where the CPU has its own exp_f32 (2 ulp),
// and the CPU build (-mfma, GCC's default -ffp-contract=fast) may fuse a product and a sum (SiLU's
// gradient) that round twice here. The ops held bitwise (bias rows, their column sums, the
// sigmoid's backward) have no such pair. A thread reads its element's inputs before writing its
// output, so exact in-place aliasing (out == an input) is safe.
#include <cuda_runtime.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "kernels/cuda/ops_cuda.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // grid-stride beyond 16M elements

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks);
}

__device__ inline float sigmoid(float x) { return __fdiv_rn(1.0f, 1.0f + expf(-x)); }

// silu'(x) = s * (1 + x * (1 - s)), s = sigmoid(x), unfused as on the CPU.
__device__ inline float silu_grad(float x, float s) {
  return __fmul_rn(s, __fadd_rn(1.0f, __fmul_rn(x, __fsub_rn(1.0f, s))));
}

// out[i] = op(i) over [0, n), grid-stride.
template <typename Op>
__global__ void map_kernel(float* out, int64_t n, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = op(i);
  }
}

template <typename Op>
void launch_map(const char* name, float* out, int64_t n, Op op) {
  CHECK_GE(n, 0) << name;
  if (n == 0) return;
  map_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(out, n, op);
  check_launch(name);
}

struct Fill {
  float value;
  __device__ float operator()(int64_t) const { return value; }
};
struct Add {
  const float* a;
  const float* b;
  __device__ float operator()(int64_t i) const { return __fadd_rn(a[i], b[i]); }
};
struct Mul {
  const float* a;
  const float* b;
  __device__ float operator()(int64_t i) const { return __fmul_rn(a[i], b[i]); }
};
struct Scale {
  const float* y;
  float s;
  __device__ float operator()(int64_t i) const { return __fmul_rn(y[i], s); }
};
struct Axpy {
  const float* y;
  const float* x;
  float a;
  __device__ float operator()(int64_t i) const { return fmaf(a, x[i], y[i]); }
};
struct BiasAdd {
  const float* y;
  const float* b;
  int64_t cols;
  __device__ float operator()(int64_t i) const { return __fadd_rn(y[i], b[i % cols]); }
};
struct SigmoidBackward {
  const float* dy;
  const float* y;
  __device__ float operator()(int64_t i) const {
    return __fmul_rn(__fmul_rn(dy[i], y[i]), __fsub_rn(1.0f, y[i]));
  }
};

// db[c] += dy[0][c], then dy[1][c], ... in row order, as the CPU: one thread per column.
__global__ void bias_backward_kernel(float* db, const float* dy, int64_t rows, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
       c += stride) {
    float acc = db[c];
    for (int64_t r = 0; r < rows; ++r) acc = __fadd_rn(acc, dy[r * cols + c]);
    db[c] = acc;
  }
}

struct SiluForward {
  const float* x;
  __device__ float operator()(int64_t i) const {
    const float v = x[i];
    return __fmul_rn(v, sigmoid(v));
  }
};
struct SiluBackward {
  const float* dout;
  const float* x;
  __device__ float operator()(int64_t i) const {
    const float v = x[i];
    return __fmul_rn(dout[i], silu_grad(v, sigmoid(v)));
  }
};
struct SwigluForward {
  const float* gate;
  const float* up;
  __device__ float operator()(int64_t i) const {
    const float g = gate[i];
    return __fmul_rn(__fmul_rn(g, sigmoid(g)), up[i]);  // (g * s) * up, the CPU's order
  }
};

// dgate = (dout * up) * silu'(gate), dup = (dout * gate) * s; both read before either is stored,
// so either output may alias gate, up or dout exactly.
__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dout,
                                       const float* gate, const float* up, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float g = gate[i];
    const float s = sigmoid(g);
    const float d = dout[i];
    const float dg = __fmul_rn(__fmul_rn(d, up[i]), silu_grad(g, s));
    const float du = __fmul_rn(__fmul_rn(d, g), s);
    dgate[i] = dg;
    dup[i] = du;
  }
}

}  // namespace

void fill_f32(float* out, float value, int64_t n) { launch_map("fill_f32", out, n, Fill{value}); }

void copy_f32(float* out, const float* x, int64_t n) {
  CHECK_GE(n, 0) << "copy_f32";
  if (out == x || n == 0) return;
  CHECK_CUDA(cudaMemcpyAsync(out, x, static_cast<size_t>(n) * sizeof(float),
                             cudaMemcpyDeviceToDevice, stream()));
}

void add_f32(float* out, const float* a, const float* b, int64_t n) {
  launch_map("add_f32", out, n, Add{a, b});
}

void add_inplace_f32(float* y, const float* x, int64_t n) {
  launch_map("add_inplace_f32", y, n, Add{y, x});
}

void mul_f32(float* out, const float* a, const float* b, int64_t n) {
  launch_map("mul_f32", out, n, Mul{a, b});
}

void scale_f32(float* y, float s, int64_t n) { launch_map("scale_f32", y, n, Scale{y, s}); }

void axpy_f32(float* y, float a, const float* x, int64_t n) {
  launch_map("axpy_f32", y, n, Axpy{y, x, a});
}

void bias_add_f32(float* y, const float* b, int64_t rows, int64_t cols) {
  CHECK(rows >= 0 && cols >= 0) << "bias_add_f32: rows=" << rows << " cols=" << cols;
  if (cols == 0) return;
  launch_map("bias_add_f32", y, rows * cols, BiasAdd{y, b, cols});
}

void bias_backward_f32(float* db, const float* dy, int64_t rows, int64_t cols) {
  CHECK(rows >= 0 && cols >= 0) << "bias_backward_f32: rows=" << rows << " cols=" << cols;
  if (rows == 0 || cols == 0) return;
  bias_backward_kernel<<<blocks_for(cols), kThreads, 0, stream()>>>(db, dy, rows, cols);
  check_launch("bias_backward_f32");
}

void sigmoid_backward_f32(float* dx, const float* dy, const float* y, int64_t n) {
  launch_map("sigmoid_backward_f32", dx, n, SigmoidBackward{dy, y});
}

void silu_forward_f32(float* out, const float* x, int64_t n) {
  launch_map("silu_forward_f32", out, n, SiluForward{x});
}

void silu_backward_f32(float* dx, const float* dout, const float* x, int64_t n) {
  launch_map("silu_backward_f32", dx, n, SiluBackward{dout, x});
}

void swiglu_forward_f32(float* out, const float* gate, const float* up, int64_t n) {
  launch_map("swiglu_forward_f32", out, n, SwigluForward{gate, up});
}

void swiglu_backward_f32(float* dgate, float* dup, const float* dout, const float* gate,
                         const float* up, int64_t n) {
  CHECK_GE(n, 0) << "swiglu_backward_f32";
  CHECK(n == 0 || dgate != dup) << "swiglu_backward: dgate and dup must be different arrays";
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(dgate, dup, dout, gate, up, n);
  check_launch("swiglu_backward_f32");
}

}  // namespace strata::cuda
