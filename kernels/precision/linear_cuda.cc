// LinearGemm on a GPU (linear.h explains the formats). Every pointer is device memory; each GEMM
// queues on the thread's current stream (kernels/cuda/ops_cuda.h).
//
// fp8 blockwise, with the shapes of linear.h (x: (T, K), W: (N, K), dy: (T, N)):
//   forward          x 1x128 tiles, W 128x128 blocks            -> gemm_fp8_block
//   backward_input   dy 1x128 tiles along N; W^T (K, N): the W codes and block scales
//                    transposed (a 128x128 block scales the same elements either way)
//   backward_weight  dy^T (N, T) and x^T (K, T), each in 1x128 tiles along T (the CPU's 128x1
//                    tiles of dy and x: 128 tokens of one channel); both VEC128; the product is
//                    added to dW
// The quantised weight and its transpose are cached while the weights epoch holds, as on the
// CPU. Each quantisation returns its statistics to the host (non-finite inputs name the GEMM
// through events(), as on the CPU), which costs one stream synchronisation per operand.
#include "kernels/precision/linear.h"

#include <functional>

#include "core/check.h"
#include "core/device.h"

#ifdef STRATA_WITH_CUDA
#include "kernels/cuda/cast.h"
#include "kernels/cuda/ops_cuda.h"
#endif

namespace strata {

#ifdef STRATA_WITH_CUDA

namespace {

// Device memory that grows on demand. Freeing a block to the caching allocator is safe without a
// wait: later work on the same stream runs after the work that used it.
struct DeviceBuffer {
  Device device;
  void* ptr = nullptr;
  size_t bytes = 0;
  template <typename T>
  T* get(int64_t n) {
    const size_t need = static_cast<size_t>(n) * sizeof(T);
    if (need > bytes) {
      device_free(device, ptr);
      ptr = device_alloc(device, need);
      bytes = need;
    }
    return static_cast<T*>(ptr);
  }
  ~DeviceBuffer() { device_free(device, ptr); }
};

// Per-thread scratch of the activation operands (codes, scales, casts, transposes), shared by
// every LinearGemm of the thread as on the CPU.
struct Scratch {
  DeviceBuffer a_codes, a_scales, b_codes, b_scales, a_f32, b_f32, out;
};
Scratch& scratch(Device device) {
  thread_local Scratch s;
  for (DeviceBuffer* b : {&s.a_codes, &s.a_scales, &s.b_codes, &s.b_scales, &s.a_f32, &s.b_f32, &s.out}) {
    CHECK(b->ptr == nullptr || b->device == device) << "one thread drives one GPU";
    b->device = device;
  }
  return s;
}

bool aligned128(int64_t n) { return n % 128 == 0; }

}  // namespace

struct LinearGemmCuda {
  explicit LinearGemmCuda(Device d) : w_codes{d}, w_scales{d}, wt_codes{d}, wt_scales{d}, w_bf16{d}, w_f32{d} {}
  DeviceBuffer w_codes, w_scales;    // W (N, K) in 128x128 blocks
  DeviceBuffer wt_codes, wt_scales;  // W^T (K, N), transposed codes and block scales
  DeviceBuffer w_bf16;               // W rounded to bf16
  DeviceBuffer w_f32;                // W fake-quantised (dimensions not multiples of 128)
  unsigned valid = 0;                // bit per WeightForm: prepared for the current weights
};

namespace {

// Which form of the weight a GEMM wants.
enum class WeightForm { kBf16, kFp8, kFp8Transposed, kFakeQuant };

}  // namespace

// The weight in `form`, prepared once per weights epoch (the CPU's weight_operand rule).
static const void* cuda_weight(LinearGemmCuda& c, const float* W, int64_t N, int64_t K, WeightForm form, bool pow2,
                               const std::function<void(const QuantStats&)>& note, bool fresh) {
  if (fresh) c.valid = 0;
  auto need = [&c](WeightForm f) {
    const unsigned bit = 1u << static_cast<int>(f);
    const bool missing = (c.valid & bit) == 0;
    c.valid |= bit;
    return missing;
  };
  switch (form) {
    case WeightForm::kBf16: {
      uint16_t* wb = c.w_bf16.get<uint16_t>(N * K);
      if (need(form)) cuda_f32_to_bf16(W, wb, N * K, cuda::current_stream());
      return wb;
    }
    case WeightForm::kFakeQuant: {
      float* wf = c.w_f32.get<float>(N * K);
      if (need(form)) note(cuda::fake_quant_tiles(W, wf, N, K, kTile128x128, DType::kF8E4M3, pow2));
      return wf;
    }
    case WeightForm::kFp8:
    case WeightForm::kFp8Transposed: {
      const int64_t nb = quant_tile_count(N, 128, kTile128x128), kb = quant_tile_count(128, K, kTile128x128);
      uint8_t* codes = c.w_codes.get<uint8_t>(N * K);
      float* scales = c.w_scales.get<float>(nb * kb);
      if (need(WeightForm::kFp8)) note(cuda::quantize_tiles(W, codes, scales, N, K, kTile128x128, DType::kF8E4M3, pow2));
      if (form == WeightForm::kFp8) return codes;
      uint8_t* tcodes = c.wt_codes.get<uint8_t>(N * K);
      float* tscales = c.wt_scales.get<float>(nb * kb);
      if (need(WeightForm::kFp8Transposed)) {
        cuda::transpose_u8(tcodes, codes, N, K);
        cuda::transpose_f32(tscales, scales, nb, kb);
      }
      return tcodes;
    }
  }
  return nullptr;
}

void LinearGemm::forward_cuda(float* y, const float* x, const float* W, int64_t T, int64_t K, int64_t N,
                              SavedInput* save) {
  if (!cuda_) cuda_.reset(new LinearGemmCuda(device_));
  if (save) {
    save->clear();
    save->rows = T;
    save->cols = K;
    save->f32 = Tensor::empty({T, K}, DType::kF32, device_);
    cuda::copy_f32(save->f32.f32(), x, T * K);
  }
  if (T == 0 || N == 0) return;
  // The weight cache key is the CPU path's (linear.h): pointer, shape and weights epoch.
  const bool fresh = !(weights_epoch_ && W == w_cache_ptr_ && N == w_cache_n_ && K == w_cache_k_ &&
                       *weights_epoch_ == w_cache_epoch_);
  w_cache_ptr_ = weights_epoch_ ? W : nullptr;
  w_cache_n_ = N;
  w_cache_k_ = K;
  w_cache_epoch_ = weights_epoch_ ? *weights_epoch_ : -1;
  Scratch& s = scratch(device_);
  auto note_w = [&](const QuantStats& st) { note(st, GemmOperand::kWeight, "forward"); };
  switch (mode_) {
    case PrecisionMode::kFp32:
      cuda::gemm_f32(false, true, T, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
      return;
    case PrecisionMode::kBf16: {
      uint16_t* xb = s.a_codes.get<uint16_t>(T * K);
      cuda_f32_to_bf16(x, xb, T * K, cuda::current_stream());
      const auto* wb = static_cast<const uint16_t*>(cuda_weight(*cuda_, W, N, K, WeightForm::kBf16, false, note_w, fresh));
      cuda::gemm_bf16(false, true, T, N, K, 1.0f, xb, K, wb, K, 0.0f, y, N);
      return;
    }
    case PrecisionMode::kFp8: {
      const bool pow2 = fp8_.scale_format == Fp8ScaleFormat::kPow2;
      if (!aligned128(K)) {
        float* xf = s.a_f32.get<float>(T * K);
        note(cuda::fake_quant_tiles(x, xf, T, K, kTile1x128, DType::kF8E4M3, pow2), GemmOperand::kInput, "forward");
        const auto* wf = static_cast<const float*>(cuda_weight(*cuda_, W, N, K, WeightForm::kFakeQuant, pow2, note_w, fresh));
        cuda::gemm_f32(false, true, T, N, K, 1.0f, xf, K, wf, K, 0.0f, y, N);
        return;
      }
      uint8_t* xc = s.a_codes.get<uint8_t>(T * K);
      float* xs = s.a_scales.get<float>(quant_tile_count(T, K, kTile1x128));
      note(cuda::quantize_tiles(x, xc, xs, T, K, kTile1x128, DType::kF8E4M3, pow2), GemmOperand::kInput, "forward");
      const auto* wc = static_cast<const uint8_t*>(cuda_weight(*cuda_, W, N, K, WeightForm::kFp8, pow2, note_w, fresh));
      cuda::gemm_fp8_block(y, xc, xs, wc, cuda_->w_scales.get<float>(0), T, K, N);
      return;
    }
  }
}

void LinearGemm::backward_input_cuda(float* dx, const float* dy, const float* W, int64_t T, int64_t K, int64_t N) {
  CHECK(cuda_) << name_ << ": backward_input before forward";
  if (T == 0 || K == 0) return;
  Scratch& s = scratch(device_);
  auto note_w = [&](const QuantStats& st) { note(st, GemmOperand::kWeight, "backward_input"); };
  const bool fresh = !(weights_epoch_ && W == w_cache_ptr_ && N == w_cache_n_ && K == w_cache_k_ &&
                       *weights_epoch_ == w_cache_epoch_);
  switch (mode_) {
    case PrecisionMode::kFp32:
      cuda::gemm_f32(false, false, T, K, N, 1.0f, dy, N, W, K, 0.0f, dx, K);
      return;
    case PrecisionMode::kBf16: {
      uint16_t* db = s.a_codes.get<uint16_t>(T * N);
      cuda_f32_to_bf16(dy, db, T * N, cuda::current_stream());
      const auto* wb = static_cast<const uint16_t*>(cuda_weight(*cuda_, W, N, K, WeightForm::kBf16, false, note_w, fresh));
      cuda::gemm_bf16(false, false, T, K, N, 1.0f, db, N, wb, K, 0.0f, dx, K);
      return;
    }
    case PrecisionMode::kFp8: {
      const bool pow2 = fp8_.scale_format == Fp8ScaleFormat::kPow2;
      if (!aligned128(K) || !aligned128(N)) {
        float* df = s.a_f32.get<float>(T * N);
        note(cuda::fake_quant_tiles(dy, df, T, N, kTile1x128, DType::kF8E4M3, pow2), GemmOperand::kGradOutput,
             "backward_input");
        const auto* wf = static_cast<const float*>(cuda_weight(*cuda_, W, N, K, WeightForm::kFakeQuant, pow2, note_w, fresh));
        cuda::gemm_f32(false, false, T, K, N, 1.0f, df, N, wf, K, 0.0f, dx, K);
        return;
      }
      uint8_t* dc = s.a_codes.get<uint8_t>(T * N);
      float* ds = s.a_scales.get<float>(quant_tile_count(T, N, kTile1x128));
      note(cuda::quantize_tiles(dy, dc, ds, T, N, kTile1x128, DType::kF8E4M3, pow2), GemmOperand::kGradOutput,
           "backward_input");
      const auto* wt = static_cast<const uint8_t*>(
          cuda_weight(*cuda_, W, N, K, WeightForm::kFp8Transposed, pow2, note_w, fresh));
      cuda::gemm_fp8_block(dx, dc, ds, wt, cuda_->wt_scales.get<float>(0), T, N, K);
      return;
    }
  }
}

void LinearGemm::backward_weight_cuda(float* dW, const float* dy, const float* x, int64_t T, int64_t K, int64_t N) {
  if (T == 0 || N == 0 || K == 0) return;
  Scratch& s = scratch(device_);
  switch (mode_) {
    case PrecisionMode::kFp32:
      cuda::gemm_f32(true, false, N, K, T, 1.0f, dy, N, x, K, 1.0f, dW, K);
      return;
    case PrecisionMode::kBf16: {
      uint16_t* db = s.a_codes.get<uint16_t>(T * N);
      uint16_t* xb = s.b_codes.get<uint16_t>(T * K);
      cuda_f32_to_bf16(dy, db, T * N, cuda::current_stream());
      cuda_f32_to_bf16(x, xb, T * K, cuda::current_stream());
      cuda::gemm_bf16(true, false, N, K, T, 1.0f, db, N, xb, K, 1.0f, dW, K);
      return;
    }
    case PrecisionMode::kFp8: {
      const bool pow2 = fp8_.scale_format == Fp8ScaleFormat::kPow2;
      if (!aligned128(T)) {
        float* df = s.a_f32.get<float>(T * N);
        float* xf = s.b_f32.get<float>(T * K);
        note(cuda::fake_quant_tiles(dy, df, T, N, kTile128x1, DType::kF8E4M3, pow2), GemmOperand::kGradOutput,
             "backward_weight");
        note(cuda::fake_quant_tiles(x, xf, T, K, kTile128x1, DType::kF8E4M3, pow2), GemmOperand::kInput,
             "backward_weight");
        cuda::gemm_f32(true, false, N, K, T, 1.0f, df, N, xf, K, 1.0f, dW, K);
        return;
      }
      // dy^T (N, T) and x^T (K, T), quantised in 1x128 tiles along T.
      float* dyt = s.a_f32.get<float>(T * N);
      float* xt = s.b_f32.get<float>(T * K);
      cuda::transpose_f32(dyt, dy, T, N);
      cuda::transpose_f32(xt, x, T, K);
      uint8_t* dc = s.a_codes.get<uint8_t>(T * N);
      float* ds = s.a_scales.get<float>(quant_tile_count(N, T, kTile1x128));
      uint8_t* xc = s.b_codes.get<uint8_t>(T * K);
      float* xs = s.b_scales.get<float>(quant_tile_count(K, T, kTile1x128));
      note(cuda::quantize_tiles(dyt, dc, ds, N, T, kTile1x128, DType::kF8E4M3, pow2), GemmOperand::kGradOutput,
           "backward_weight");
      note(cuda::quantize_tiles(xt, xc, xs, K, T, kTile1x128, DType::kF8E4M3, pow2), GemmOperand::kInput,
           "backward_weight");
      float* prod = s.out.get<float>(N * K);
      cuda::gemm_fp8_block(prod, dc, ds, xc, xs, N, T, K, /*w_row_tiles=*/true);
      cuda::add_inplace_f32(dW, prod, N * K);
      return;
    }
  }
}

#else  // no CUDA: the constructor already refused a cuda device

struct LinearGemmCuda {};

void LinearGemm::forward_cuda(float*, const float*, const float*, int64_t, int64_t, int64_t, SavedInput*) {
  FATAL() << name_ << ": built without CUDA";
}
void LinearGemm::backward_input_cuda(float*, const float*, const float*, int64_t, int64_t, int64_t) {
  FATAL() << name_ << ": built without CUDA";
}
void LinearGemm::backward_weight_cuda(float*, const float*, const float*, int64_t, int64_t, int64_t) {
  FATAL() << name_ << ": built without CUDA";
}

#endif

// Defined here, where LinearGemmCuda is complete.
void LinearGemmCudaDeleter::operator()(LinearGemmCuda* p) const { delete p; }
LinearGemm::LinearGemm() = default;
LinearGemm::~LinearGemm() = default;
LinearGemm::LinearGemm(LinearGemm&&) noexcept = default;
LinearGemm& LinearGemm::operator=(LinearGemm&&) noexcept = default;

}  // namespace strata
