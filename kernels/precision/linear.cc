#include "kernels/precision/linear.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "kernels/ops.h"

namespace strata {

namespace {

// Rounded or quantised copies of activation operands live only for the GEMM that reads them, so
// every LinearGemm of a thread shares two buffers (a model has hundreds of LinearGemms: one
// buffer each would hold a copy of every activation). The weight's copy is per LinearGemm.
std::vector<float>& operand_scratch(int which) {
  thread_local std::vector<float> buffers[2];
  return buffers[which];
}

}  // namespace

const char* gemm_operand_name(GemmOperand op) {
  switch (op) {
    case GemmOperand::kInput: return "input";
    case GemmOperand::kWeight: return "weight";
    case GemmOperand::kGradOutput: return "grad_output";
  }
  return "?";
}

float AmaxHistory::max() const {
  float m = 0.0f;
  for (float v : values) m = std::max(m, v);
  return m;
}

void AmaxHistory::record(float amax) {
  pending = has_pending ? std::max(pending, amax) : amax;
  has_pending = true;
}

void AmaxHistory::push(float amax, int64_t capacity) {
  values.insert(values.begin(), amax);
  if (static_cast<int64_t>(values.size()) > capacity) values.resize(static_cast<size_t>(capacity));
  pending = 0.0f;
  has_pending = false;
}

int64_t SavedInput::bytes() const {
  return (f32.defined() ? static_cast<int64_t>(f32.nbytes()) : 0) + static_cast<int64_t>(codes.size() + scales.size() * sizeof(float));
}

LinearGemm::LinearGemm(const PrecisionConfig& config, const std::string& module_kind, std::string name,
                       const int64_t* weights_epoch, Device device)
    : mode_(config.mode), fp8_(config.fp8), name_(std::move(name)), weights_epoch_(weights_epoch), device_(device) {
  if (mode_ == PrecisionMode::kFp8) {
    const auto& keep = config.fp8.high_precision_modules;
    if (std::find(keep.begin(), keep.end(), module_kind) != keep.end()) mode_ = PrecisionMode::kBf16;
  }
  // The router decides which experts run: outside fp8 it stays fp32 whatever the mode.
  if (module_kind == "router" && mode_ == PrecisionMode::kBf16) mode_ = PrecisionMode::kFp32;
  check_device();
}

void LinearGemm::check_device() const {
  if (!device_.is_cuda()) return;
  CHECK(built_with_cuda()) << name_ << ": a linear layer on " << device_.to_string() << " needs a CUDA build";
  CHECK(!(mode_ == PrecisionMode::kFp8 && fp8_.recipe == Fp8Recipe::kTensorwiseDelayed))
      << name_ << ": fp8 recipe tensorwise_delayed runs on the CPU only so far; use precision.fp8.recipe: blockwise on "
      << device_.to_string();
  CHECK(!(mode_ == PrecisionMode::kFp8 && fp8_.cache_activations))
      << name_ << ": precision.fp8.cache_activations runs on the CPU only so far";
}

void LinearGemm::set_device(Device device) {
  device_ = device;
  check_device();
  cuda_.reset();        // the GPU's cached weight operands
  w_cache_epoch_ = -1;  // and the CPU's
}

DType LinearGemm::operand_format(GemmOperand op) const {
  if (fp8_.recipe == Fp8Recipe::kTensorwiseDelayed && fp8_.format == Fp8Format::kHybrid &&
      op == GemmOperand::kGradOutput) {
    return DType::kF8E5M2;
  }
  return DType::kF8E4M3;
}

float LinearGemm::delayed_scale(GemmOperand op, float amax) const {
  const float hist = history(op).max();
  const float base = hist > 0.0f ? hist : amax;
  return fp8_scale(std::ldexp(base, static_cast<int>(fp8_.margin)), operand_format(op),
                   fp8_.scale_format == Fp8ScaleFormat::kPow2);
}

void LinearGemm::note(const QuantStats& st, GemmOperand op, const char* use) {
  if (delayed()) history_[static_cast<int>(op)].record(st.amax);
  events_.saturated += st.saturated;
  if (st.nonfinite > 0) {
    if (events_.nonfinite == 0) {
      static std::atomic<int64_t> sequence{0};
      events_.first_seq = ++sequence;
      events_.first = absl::StrCat(name_.empty() ? "linear" : name_, ": ", gemm_operand_name(op), " of ", use);
    }
    events_.nonfinite += st.nonfinite;
  }
}

const float* LinearGemm::prepare(const float* p, int64_t R, int64_t C, GemmOperand op, QuantTile tile,
                                 const char* use, std::vector<float>& out, float* amax) {
  if (mode_ == PrecisionMode::kFp32) return p;
  const int64_t n = R * C;
  if (static_cast<int64_t>(out.size()) < n) out.resize(static_cast<size_t>(n));
  if (mode_ == PrecisionMode::kBf16) {
    std::copy(p, p + n, out.data());
    round_to_dtype_n(out.data(), static_cast<size_t>(n), DType::kBF16);
    return out.data();
  }
  QuantStats st;
  if (delayed()) {
    st = fake_quant_tensor(p, out.data(), n, [&](float amax) { return delayed_scale(op, amax); },
                           operand_format(op));
  } else {
    st = fake_quant_tiles(p, out.data(), R, C, tile, DType::kF8E4M3, fp8_.scale_format == Fp8ScaleFormat::kPow2);
  }
  note(st, op, use);
  if (amax) *amax = st.amax;
  return out.data();
}

const float* LinearGemm::weight_operand(const float* W, int64_t N, int64_t K, const char* use) {
  if (mode_ == PrecisionMode::kFp32) return W;
  const float hist_max = delayed() ? history(GemmOperand::kWeight).max() : 0.0f;
  if (weights_epoch_ && W == w_cache_ptr_ && N == w_cache_n_ && K == w_cache_k_ && *weights_epoch_ == w_cache_epoch_ &&
      hist_max == w_cache_hist_max_) {
    // The same quantisation as before; a delayed recipe still sees this step's weight amax.
    if (delayed()) history_[static_cast<int>(GemmOperand::kWeight)].record(w_cache_amax_);
    return w_cache_.data();
  }
  w_cache_.resize(static_cast<size_t>(N * K));
  const float* out = prepare(W, N, K, GemmOperand::kWeight, kTile128x128, use, w_cache_, &w_cache_amax_);
  w_cache_ptr_ = weights_epoch_ ? W : nullptr;
  w_cache_n_ = N;
  w_cache_k_ = K;
  w_cache_hist_max_ = hist_max;
  w_cache_epoch_ = weights_epoch_ ? *weights_epoch_ : -1;
  return out;
}

void LinearGemm::forward(float* y, const float* x, const float* W, int64_t T, int64_t K, int64_t N,
                         SavedInput* save) {
  forward_rows_ += T;
  if (device_.is_cuda()) return forward_cuda(y, x, W, T, K, N, save);
  const float* b = weight_operand(W, N, K, "forward");
  const bool cache = save && mode_ == PrecisionMode::kFp8 && fp8_.cache_activations;
  const float* a = nullptr;
  if (cache) {
    // Quantise x once: the codes are kept for the weight gradient, their dequantisation feeds
    // this GEMM.
    save->clear();
    save->rows = T;
    save->cols = K;
    save->fmt = operand_format(GemmOperand::kInput);
    save->codes.resize(static_cast<size_t>(T * K));
    if (static_cast<int64_t>(operand_scratch(0).size()) < T * K) operand_scratch(0).resize(static_cast<size_t>(T * K));
    QuantStats st;
    if (delayed()) {
      save->scales.resize(1);
      st = quantize_tensor(x, save->codes.data(), T * K,
                           [&](float amax) { return delayed_scale(GemmOperand::kInput, amax); }, save->fmt,
                           save->scales.data());
      dequantize_tensor(save->codes.data(), save->scales[0], operand_scratch(0).data(), T * K, save->fmt);
    } else {
      save->scales.resize(static_cast<size_t>(quant_tile_count(T, K, kTile1x128)));
      st = quantize_tiles(x, save->codes.data(), save->scales.data(), T, K, kTile1x128, save->fmt,
                          fp8_.scale_format == Fp8ScaleFormat::kPow2);
      dequantize_tiles(save->codes.data(), save->scales.data(), operand_scratch(0).data(), T, K, kTile1x128, save->fmt);
    }
    note(st, GemmOperand::kInput, "forward");
    a = operand_scratch(0).data();
  } else {
    a = prepare(x, T, K, GemmOperand::kInput, kTile1x128, "forward", operand_scratch(0));
    if (save) {
      save->clear();
      save->rows = T;
      save->cols = K;
      save->f32 = Tensor::empty({T, K}, DType::kF32);
      copy_f32(save->f32.f32(), x, T * K);
    }
  }
  gemm_f32(false, true, T, N, K, 1.0f, a, K, b, K, 0.0f, y, N);
}

void LinearGemm::backward_input(float* dx, const float* dy, const float* W, int64_t T, int64_t K, int64_t N) {
  if (device_.is_cuda()) return backward_input_cuda(dx, dy, W, T, K, N);
  const float* a = prepare(dy, T, N, GemmOperand::kGradOutput, kTile1x128, "backward_input", operand_scratch(0));
  const float* b = weight_operand(W, N, K, "backward_input");
  gemm_f32(false, false, T, K, N, 1.0f, a, N, b, K, 0.0f, dx, K);
}

void LinearGemm::backward_weight(float* dW, const float* dy, const float* x, int64_t T, int64_t K, int64_t N) {
  if (device_.is_cuda()) return backward_weight_cuda(dW, dy, x, T, K, N);
  const float* a = prepare(dy, T, N, GemmOperand::kGradOutput, kTile128x1, "backward_weight", operand_scratch(0));
  const float* b = prepare(x, T, K, GemmOperand::kInput, kTile128x1, "backward_weight", operand_scratch(1));
  gemm_f32(true, false, N, K, T, 1.0f, a, N, b, K, 1.0f, dW, K);
}

void LinearGemm::backward_weight(float* dW, const float* dy, const SavedInput& x, int64_t T, int64_t K,
                                 int64_t N) {
  CHECK(x.rows == T && x.cols == K) << name_ << ": saved input is " << x.rows << "x" << x.cols << ", GEMM needs "
                                    << T << "x" << K;
  if (!x.cached()) {
    backward_weight(dW, dy, x.f32.f32(), T, K, N);
    return;
  }
  // Re-tile the cached operand: dequantise the forward's fp8 codes, then (blockwise) quantise
  // again in 128x1 tiles, as DeepSeek-V3 does; a per-tensor recipe uses the dequantised values.
  std::vector<float> xd(static_cast<size_t>(T * K));
  if (x.scales.size() == 1 && delayed()) {
    dequantize_tensor(x.codes.data(), x.scales[0], xd.data(), T * K, x.fmt);
  } else {
    dequantize_tiles(x.codes.data(), x.scales.data(), xd.data(), T, K, kTile1x128, x.fmt);
  }
  const float* a = prepare(dy, T, N, GemmOperand::kGradOutput, kTile128x1, "backward_weight", operand_scratch(0));
  const float* b = xd.data();
  if (!delayed()) {
    note(fake_quant_tiles(xd.data(), xd.data(), T, K, kTile128x1, DType::kF8E4M3,
                          fp8_.scale_format == Fp8ScaleFormat::kPow2),
         GemmOperand::kInput, "backward_weight");
  }
  gemm_f32(true, false, N, K, T, 1.0f, a, N, b, K, 1.0f, dW, K);
}

void LinearGemm::commit(const std::array<float, 3>& reduced_amax) {
  for (int i = 0; i < 3; ++i) history_[i].push(reduced_amax[i], fp8_.amax_history_len);
  invalidate_weight_cache();
}

void LinearGemm::reset_step() {
  for (AmaxHistory& h : history_) {
    h.pending = 0.0f;
    h.has_pending = false;
  }
  events_ = Fp8Events();
}

}  // namespace strata
