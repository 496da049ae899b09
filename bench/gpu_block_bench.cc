// Training-step throughput of one whole transformer block on a GPU: forward and backward of a
// pre-norm block composed from the CUDA ops and LinearGemm the way model/block.cc, attention.cc,
// mlp.cc and moe.cc compose the CPU ones (RMSNorm, q/k/v, RoPE, causal GQA attention, o, residual,
// RMSNorm, then a SwiGLU MLP or routed SwiGLU experts: router, top-k, gather, one LinearGemm per
// expert, weighted combine, and their backward), under bf16 and fp8 blockwise. One row per
// (config, precision):
//
//   block   dense-8b      bf16  N=8192    312.0 TFLOP/s  MFU 31.5%    45.0k tok/s per block  (182 ms)
//
// tok/s is per block: a model of L such blocks runs about tok/s / L tokens a second (plus its
// embedding, head and optimizer). FLOP = 6 x rows x K x N per linear, plus causal attention at
// 4 B Hq D T(T+1)/2 forward and twice that backward; MFU against the dense bf16 peak
// (989 TFLOP/s on H100/H200 SXM; --peak-tflops to change). Timing: cudaEvents around the step,
// 2 warm-ups, median of the timed runs; new weights every step (their quantisation is counted).
//
// What this is not yet: the model itself on a GPU (train.device: cuda is #11's open part). The
// router's top-k renormalisation backward has no GPU kernel yet, so the router backward here
// runs on a zero gradient of the probabilities (the same launches and FLOP); qk-norm is left out.
// MoE routing goes through the host (the expert row counts set the GEMM shapes), as in the model.
//
// Without CUDA in the build or without a GPU it says why and exits 0.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "bench/gpu_common.h"
#include "core/device.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/precision/linear.h"

#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace strata {
namespace {

#ifdef STRATA_WITH_CUDA

void check(cudaError_t e, const char* what) { gpubench::check_cuda(e, "gpu_block_bench", what); }

struct BlockShape {
  const char* name;
  int64_t B, T;           // sequences x tokens per sequence
  int64_t C, Hq, Hkv, D;  // width, query / kv heads, head dimension
  int64_t F;              // dense SwiGLU hidden width (E = 0)
  int64_t E, K, Fe;       // routed experts, top-k, expert hidden width (E > 0: a MoE block)
};

// Device buffers of one benchmark run, freed together.
class Arena {
 public:
  ~Arena() {
    for (void* p : ptrs_) device_free(Device::cuda(), p);
  }
  float* f32(int64_t n, float scale = 0.0f) {
    float* p = gpubench::random_device_f32(n, scale, seed_++);
    ptrs_.push_back(p);
    return p;
  }
  int32_t* i32(int64_t n) {
    void* p = device_alloc(Device::cuda(), static_cast<size_t>(n) * sizeof(int32_t));
    ptrs_.push_back(p);
    return static_cast<int32_t*>(p);
  }

 private:
  std::vector<void*> ptrs_;
  uint64_t seed_ = 1;
};

void upload_i32(int32_t* dst, const std::vector<int32_t>& h) {
  device_copy(dst, Device::cuda(), h.data(), Device::cpu(), h.size() * sizeof(int32_t),
              Stream{Device::cuda(), cuda::current_stream()});
}

// One linear layer's weight, its gradient and its GEMMs.
struct Linear {
  LinearGemm gemm;
  float *W, *dW;
  int64_t K, N;  // x (rows, K) -> y (rows, N)
};

class BlockStep {
 public:
  BlockStep(const BlockShape& s, PrecisionMode mode) : s_(s) {
    PrecisionConfig p;
    p.mode = mode;
    p.fp8.recipe = Fp8Recipe::kBlockwise;
    const int64_t N = s.B * s.T, C = s.C, qd = s.Hq * s.D, kd = s.Hkv * s.D;
    auto linear = [&](const char* kind, const char* name, int64_t K, int64_t Nout, int64_t rows) {
      auto l = std::make_unique<Linear>();
      l->gemm = LinearGemm(p, kind, name, &epoch_, Device::cuda());
      l->W = a_.f32(Nout * K, 1.0f / std::sqrt(static_cast<float>(K)));
      l->dW = a_.f32(Nout * K);
      l->K = K;
      l->N = Nout;
      flop_ += 6.0 * static_cast<double>(rows) * K * Nout;
      return l;
    };
    q_ = linear("attention_proj", "q", C, qd, N);
    k_ = linear("attention_proj", "k", C, kd, N);
    v_ = linear("attention_proj", "v", C, kd, N);
    o_ = linear("attention_proj", "o", qd, C, N);
    if (s.E == 0) {
      gate_.push_back(linear("mlp", "gate", C, s.F, N));
      up_.push_back(linear("mlp", "up", C, s.F, N));
      down_.push_back(linear("mlp", "down", s.F, C, N));
    } else {
      router_ = linear("router", "router", C, s.E, N);
      const int64_t rows = N * s.K / s.E;  // balanced routing, for the FLOP count only
      for (int64_t e = 0; e < s.E; ++e) {
        gate_.push_back(linear("experts", "gate", C, s.Fe, rows));
        up_.push_back(linear("experts", "up", C, s.Fe, rows));
        down_.push_back(linear("experts", "down", s.Fe, C, rows));
      }
    }
    const double pairs = static_cast<double>(s.B) * s.T * (s.T + 1) / 2;  // causal (query, key) pairs
    flop_ += 3.0 * 4.0 * pairs * s.Hq * s.D;

    const int64_t Fw = s.E == 0 ? s.F : s.Fe, M = s.E == 0 ? N : N * s.K;  // FFN rows
    x_ = a_.f32(N * C, 1.0f);
    dy_ = a_.f32(N * C, 0.01f);
    for (float** b : {&xn_, &h_, &hn_, &y_, &dx_, &dxn_, &dh_, &dhn_, &tmp_}) *b = a_.f32(N * C);
    w1_ = a_.f32(C, 1.0f);
    w2_ = a_.f32(C, 1.0f);
    dw1_ = a_.f32(C);
    dw2_ = a_.f32(C);
    rstd1_ = a_.f32(N);
    rstd2_ = a_.f32(N);
    for (float** b : {&q_out_, &att_, &dq_, &datt_}) *b = a_.f32(N * qd);
    for (float** b : {&k_out_, &v_out_, &dk_, &dv_}) *b = a_.f32(N * kd);
    lse_ = a_.f32(s.B * s.Hq * s.T);
    for (float** b : {&gate_out_, &up_out_, &act_, &dact_, &dgate_, &dup_}) *b = a_.f32(M * Fw);
    xe_ = a_.f32(M * C);
    ye_ = a_.f32(M * C);
    dye_ = a_.f32(M * C);
    dxe_ = a_.f32(M * C);
    ffn_tmp_ = a_.f32(M * C);
    if (s.E > 0) {
      logits_ = a_.f32(N * s.E);
      probs_ = a_.f32(N * s.E);
      dprobs_ = a_.f32(N * s.E);
      dlogits_ = a_.f32(N * s.E);
      topk_w_ = a_.f32(N * s.K);
      dtopk_w_ = a_.f32(N * s.K);
      topk_idx_ = a_.i32(N * s.K);
      slot_of_ = a_.i32(N * s.K);
      slot_token_ = a_.i32(N * s.K);
    }
    // Positions 0..T-1 in every sequence, and Llama-3's RoPE tables (theta 500000).
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) pos[i] = static_cast<int32_t>(i % s.T);
    pos_ = a_.i32(N);
    upload_i32(pos_, pos);
    std::vector<float> inv_freq(static_cast<size_t>(s.D / 2));
    for (int64_t i = 0; i < s.D / 2; ++i)
      inv_freq[i] = static_cast<float>(1.0 / std::pow(500000.0, 2.0 * i / s.D));
    float* inv = a_.f32(s.D / 2);
    device_copy(inv, Device::cuda(), inv_freq.data(), Device::cpu(), inv_freq.size() * sizeof(float),
                Stream{Device::cuda(), cuda::current_stream()});
    cos_ = a_.f32(s.T * s.D / 2);
    sin_ = a_.f32(s.T * s.D / 2);
    cuda::rope_tables_f32(cos_, sin_, inv, s.T, s.D);
  }

  double flop() const { return flop_; }

  // One training step of the block: forward, then backward from dy_.
  void step() {
    ++epoch_;  // new weights every step, as after an optimizer update
    const int64_t N = s_.B * s_.T, C = s_.C, qd = s_.Hq * s_.D, kd = s_.Hkv * s_.D;
    const float eps = 1e-5f, scale = 1.0f / std::sqrt(static_cast<float>(s_.D));
    // ---- forward: h = x + attn(norm1(x)), y = h + ffn(norm2(h)) ----
    cuda::rmsnorm_forward_f32(xn_, rstd1_, x_, w1_, N, C, eps);
    SavedInput s_xn, s_att;
    q_->gemm.forward(q_out_, xn_, q_->W, N, C, qd, &s_xn);
    k_->gemm.forward(k_out_, xn_, k_->W, N, C, kd);
    v_->gemm.forward(v_out_, xn_, v_->W, N, C, kd);
    cuda::rope_apply_f32(q_out_, pos_, cos_, sin_, N, s_.Hq, s_.D, false);
    cuda::rope_apply_f32(k_out_, pos_, cos_, sin_, N, s_.Hkv, s_.D, false);
    cuda::attention_forward_f32(att_, lse_, q_out_, k_out_, v_out_, nullptr, s_.B, s_.T, s_.T, s_.T, s_.Hq, s_.Hkv,
                                s_.D, scale);
    o_->gemm.forward(h_, att_, o_->W, N, qd, C, &s_att);
    cuda::add_inplace_f32(h_, x_, N * C);
    cuda::rmsnorm_forward_f32(hn_, rstd2_, h_, w2_, N, C, eps);
    if (s_.E == 0) {
      dense_ffn(N);
    } else {
      moe_ffn(N);
    }
    cuda::add_inplace_f32(y_, h_, N * C);

    // ---- backward ----
    if (s_.E == 0) {
      dense_ffn_backward(N);
    } else {
      moe_ffn_backward(N);
    }
    cuda::rmsnorm_backward_f32(dh_, dw2_, dhn_, h_, w2_, rstd2_, N, C);
    cuda::add_inplace_f32(dh_, dy_, N * C);
    o_->gemm.backward_input(datt_, dh_, o_->W, N, qd, C);
    o_->gemm.backward_weight(o_->dW, dh_, s_att, N, qd, C);
    cuda::attention_backward_f32(dq_, dk_, dv_, datt_, att_, lse_, q_out_, k_out_, v_out_, nullptr, s_.B, s_.T, s_.T,
                                 s_.T, s_.Hq, s_.Hkv, s_.D, scale);
    cuda::rope_apply_f32(dq_, pos_, cos_, sin_, N, s_.Hq, s_.D, true);
    cuda::rope_apply_f32(dk_, pos_, cos_, sin_, N, s_.Hkv, s_.D, true);
    q_->gemm.backward_input(dxn_, dq_, q_->W, N, C, qd);
    k_->gemm.backward_input(tmp_, dk_, k_->W, N, C, kd);
    cuda::add_inplace_f32(dxn_, tmp_, N * C);
    v_->gemm.backward_input(tmp_, dv_, v_->W, N, C, kd);
    cuda::add_inplace_f32(dxn_, tmp_, N * C);
    q_->gemm.backward_weight(q_->dW, dq_, s_xn, N, C, qd);
    k_->gemm.backward_weight(k_->dW, dk_, s_xn, N, C, kd);
    v_->gemm.backward_weight(v_->dW, dv_, s_xn, N, C, kd);
    cuda::rmsnorm_backward_f32(dx_, dw1_, dxn_, x_, w1_, rstd1_, N, C);
    cuda::add_inplace_f32(dx_, dh_, N * C);
  }

 private:
  // One SwiGLU MLP over `rows` rows of `in` into `out`, saving what its backward needs.
  void swiglu_forward(Linear& g, Linear& u, Linear& d, float* out, const float* in, int64_t rows, int64_t off_in,
                      int64_t off_h, SavedInput* s_in, SavedInput* s_act) {
    const int64_t C = g.K, Fw = g.N;
    g.gemm.forward(gate_out_ + off_h * Fw, in + off_in * C, g.W, rows, C, Fw, s_in);
    u.gemm.forward(up_out_ + off_h * Fw, in + off_in * C, u.W, rows, C, Fw);
    cuda::swiglu_forward_f32(act_ + off_h * Fw, gate_out_ + off_h * Fw, up_out_ + off_h * Fw, rows * Fw);
    d.gemm.forward(out + off_in * C, act_ + off_h * Fw, d.W, rows, Fw, C, s_act);
  }

  // Its backward: din (rows, C) from dout (rows, C); weight gradients accumulated.
  void swiglu_backward(Linear& g, Linear& u, Linear& d, float* din, const float* dout, int64_t rows, int64_t off,
                       const SavedInput& s_in, const SavedInput& s_act) {
    const int64_t C = g.K, Fw = g.N;
    d.gemm.backward_input(dact_ + off * Fw, dout + off * C, d.W, rows, Fw, C);
    cuda::swiglu_backward_f32(dgate_ + off * Fw, dup_ + off * Fw, dact_ + off * Fw, gate_out_ + off * Fw,
                              up_out_ + off * Fw, rows * Fw);
    g.gemm.backward_input(din + off * C, dgate_ + off * Fw, g.W, rows, C, Fw);
    u.gemm.backward_input(ffn_tmp_ + off * C, dup_ + off * Fw, u.W, rows, C, Fw);
    cuda::add_inplace_f32(din + off * C, ffn_tmp_ + off * C, rows * C);
    d.gemm.backward_weight(d.dW, dout + off * C, s_act, rows, Fw, C);
    g.gemm.backward_weight(g.dW, dgate_ + off * Fw, s_in, rows, C, Fw);
    u.gemm.backward_weight(u.dW, dup_ + off * Fw, s_in, rows, C, Fw);
  }

  void dense_ffn(int64_t N) {
    saved_in_.assign(1, SavedInput());
    saved_act_.assign(1, SavedInput());
    swiglu_forward(*gate_[0], *up_[0], *down_[0], y_, hn_, N, 0, 0, &saved_in_[0], &saved_act_[0]);
  }

  void dense_ffn_backward(int64_t N) {
    swiglu_backward(*gate_[0], *up_[0], *down_[0], dhn_, dy_, N, 0, saved_in_[0], saved_act_[0]);
  }

  // Router, top-k, the slots grouped by expert (on the host, as model/moe.cc), gather, experts,
  // weighted combine.
  void moe_ffn(int64_t N) {
    const int64_t C = s_.C, E = s_.E, K = s_.K;
    router_->gemm.forward(logits_, hn_, router_->W, N, C, E, &saved_router_);
    MoeRouting r;
    r.E = E;
    r.K = K;
    cuda::moe_route_f32(probs_, topk_idx_, topk_w_, logits_, nullptr, N, r);
    std::vector<int32_t> idx(static_cast<size_t>(N * K));
    device_copy(idx.data(), Device::cpu(), topk_idx_, Device::cuda(), idx.size() * sizeof(int32_t),
                Stream{Device::cuda(), cuda::current_stream()});
    offsets_.assign(static_cast<size_t>(E + 1), 0);
    for (int32_t e : idx) offsets_[e + 1]++;
    for (int64_t e = 0; e < E; ++e) offsets_[e + 1] += offsets_[e];
    std::vector<int64_t> fill(offsets_.begin(), offsets_.end() - 1);
    std::vector<int32_t> slot_of(idx.size()), slot_token(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      const int64_t slot = fill[idx[i]]++;
      slot_of[i] = static_cast<int32_t>(slot);
      slot_token[slot] = static_cast<int32_t>(i / K);
    }
    upload_i32(slot_of_, slot_of);
    upload_i32(slot_token_, slot_token);
    cuda::gather_rows_f32(xe_, hn_, slot_token_, N * K, C);
    saved_in_.assign(static_cast<size_t>(E), SavedInput());
    saved_act_.assign(static_cast<size_t>(E), SavedInput());
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = offsets_[e], n = offsets_[e + 1] - r0;
      if (n == 0) continue;
      swiglu_forward(*gate_[e], *up_[e], *down_[e], ye_, xe_, n, r0, r0, &saved_in_[e], &saved_act_[e]);
    }
    cuda::moe_combine_f32(y_, ye_, slot_of_, topk_w_, N, K, C);
  }

  void moe_ffn_backward(int64_t N) {
    const int64_t C = s_.C, E = s_.E, K = s_.K;
    cuda::moe_combine_backward_f32(dye_, dtopk_w_, dy_, ye_, slot_of_, topk_w_, N, K, C);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = offsets_[e], n = offsets_[e + 1] - r0;
      if (n == 0) continue;
      swiglu_backward(*gate_[e], *up_[e], *down_[e], dxe_, dye_, n, r0, saved_in_[e], saved_act_[e]);
    }
    cuda::moe_combine_f32(dhn_, dxe_, slot_of_, nullptr, N, K, C);  // each token's slots, summed
    cuda::softmax_backward_f32(dlogits_, dprobs_, probs_, N, E);
    router_->gemm.backward_input(tmp_, dlogits_, router_->W, N, C, E);
    cuda::add_inplace_f32(dhn_, tmp_, N * C);
    router_->gemm.backward_weight(router_->dW, dlogits_, saved_router_, N, C, E);
  }

  BlockShape s_;
  Arena a_;
  int64_t epoch_ = 0;
  double flop_ = 0;
  std::unique_ptr<Linear> q_, k_, v_, o_, router_;
  std::vector<std::unique_ptr<Linear>> gate_, up_, down_;
  std::vector<SavedInput> saved_in_, saved_act_;
  SavedInput saved_router_;
  std::vector<int64_t> offsets_;
  float *x_, *dy_, *xn_, *h_, *hn_, *y_, *dx_, *dxn_, *dh_, *dhn_, *tmp_;
  float *w1_, *w2_, *dw1_, *dw2_, *rstd1_, *rstd2_;
  float *q_out_, *k_out_, *v_out_, *att_, *lse_, *dq_, *dk_, *dv_, *datt_;
  float *gate_out_, *up_out_, *act_, *dact_, *dgate_, *dup_;
  float *xe_, *ye_, *dye_, *dxe_, *ffn_tmp_;  // (FFN rows, C): N dense, N K routed
  float *logits_ = nullptr, *probs_ = nullptr, *dprobs_ = nullptr, *dlogits_ = nullptr;
  float *topk_w_ = nullptr, *dtopk_w_ = nullptr;
  int32_t *topk_idx_ = nullptr, *slot_of_ = nullptr, *slot_token_ = nullptr, *pos_;
  float *cos_, *sin_;
};

// Median milliseconds of one block step, and its FLOP.
std::pair<double, double> time_step(const BlockShape& s, PrecisionMode mode, int runs) {
  BlockStep b(s, mode);
  const double ms = gpubench::median_ms([&] { b.step(); }, 2, runs, "gpu_block_bench");
  return {ms, b.flop()};
}

int run(bool quick, double peak_tflops) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("gpu_block_bench: %s, one block forward + backward, MFU against %.0f TFLOP/s dense bf16\n", prop.name,
              peak_tflops);
  // Llama-3-8B's block, and Qwen3-30B-A3B's MoE block (128 experts of width 768, top-8).
  const int64_t B = quick ? 1 : 4;
  const std::vector<BlockShape> shapes = {
      {"dense-8b", B, 2048, 4096, 32, 8, 128, 14336, 0, 0, 0},
      {"moe-30b-a3b", B, 2048, 2048, 32, 4, 128, 0, 128, 8, 768},
  };
  const int runs = quick ? 3 : 10;
  for (const BlockShape& s : shapes) {
    for (PrecisionMode mode : {PrecisionMode::kBf16, PrecisionMode::kFp8}) {
      const auto [ms, flop] = time_step(s, mode, runs);
      device_empty_cache(Device::cuda());
      const double tflops = flop / (ms * 1e-3) / 1e12;
      const int64_t tokens = s.B * s.T;
      std::printf("block   %-12s %-5s N=%-6lld %7.1f TFLOP/s  MFU %5.1f%%  %8.1fk tok/s per block  (%.1f ms)\n",
                  s.name, mode == PrecisionMode::kBf16 ? "bf16" : "fp8", static_cast<long long>(tokens), tflops,
                  100.0 * tflops / peak_tflops, tokens / (ms * 1e-3) / 1e3, ms);
      std::fflush(stdout);
    }
  }
  return 0;
}

#endif  // STRATA_WITH_CUDA

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
#ifdef STRATA_WITH_CUDA
  return strata::gpubench::bench_main(argc, argv, "gpu_block_bench", strata::run);
#else
  return strata::gpubench::bench_main(argc, argv, "gpu_block_bench", nullptr);
#endif
}
