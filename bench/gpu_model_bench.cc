// Training-step throughput of a whole dense model on a GPU: Transformer moved to cuda:0
// (to_device), one step = forward, backward, gradient clipping and an AdamW update of every
// parameter, in bf16 and fp8 blockwise, for a model shaped like Llama-3.2-1B (d 2048, 16 layers,
// 32 heads of 64 with 8 kv heads, MLP 8192, vocabulary 128256). One row per precision:
//
//   model   llama-1b     bf16  N=8192   8.1 steps/s ...  MFU 31.2%   66.4k tok/s  (123.4 ms)
//
// MFU = train_flops_per_token (model/flops.h: 6 x active matmul parameters + causal attention,
// REFERENCE.md section 4) x tokens/s / the dense bf16 peak (989 TFLOP/s on H100/H200 SXM;
// --peak-tflops to change). Timing: cudaEvents around the step, 1 warm-up, median of the timed
// steps. MoE models do not run on a GPU yet (gpu_block_bench times a MoE block from the ops).
//
// Without CUDA in the build or without a GPU it says why and exits 0.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench/gpu_common.h"
#include "core/device.h"
#include "model/flops.h"
#include "model/transformer.h"
#include "optim/adamw.h"

#ifdef STRATA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace strata {
namespace {

#ifdef STRATA_WITH_CUDA

void check(cudaError_t e, const char* what) { gpubench::check_cuda(e, "gpu_model_bench", what); }

ModelConfig llama_1b() {
  ModelConfig c;
  c.arch = ModelArch::kLlama;
  c.vocab_size = 128256;
  c.d_model = 2048;
  c.n_layers = 16;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.ffn_hidden = 8192;
  c.max_seq_len = 2048;
  c.tie_embeddings = true;
  c.init_std = 0.02;
  return c;
}

// Median milliseconds of one training step.
double time_steps(const ModelConfig& c, PrecisionMode mode, int64_t B, int64_t T, int runs) {
  PrecisionConfig p;
  p.mode = mode;
  p.fp8.recipe = Fp8Recipe::kBlockwise;
  Transformer model(c, p);
  model.init(1);
  model.to_device(Device::cuda());
  std::vector<OptimTensor> tensors;
  for (const ParamRef& r : model.params())
    tensors.push_back({r.name, &r.param->value, &r.param->grad, r.kind == ParamKind::kMatrix});
  OptimConfig oc;
  AdamW adamw(oc, tensors);

  std::mt19937 rng(3);
  Batch batch;
  batch.B = B;
  batch.T = T;
  for (int64_t i = 0; i < B * T; ++i) batch.tokens.push_back(static_cast<int32_t>(rng() % c.vocab_size));
  for (int64_t i = 0; i < B * T; ++i) batch.targets.push_back(i % T == T - 1 ? -1 : batch.tokens[i + 1]);
  batch.finalize(c.vocab_size);
  const double denom = static_cast<double>(batch.n_targets());
  auto step = [&] {
    zero_grads(model.params());
    Activations acts;
    model.forward(batch, acts, denom);
    model.backward(acts);
    clip_grad_norm(tensors, 1.0);
    adamw.step(1e-4);
    model.mark_weights_changed();
  };
  // One warm-up step: the caching allocator's blocks, cuBLASLt's algorithm choices.
  return gpubench::median_ms(step, 1, runs, "gpu_model_bench");
}

int run(bool quick, double peak_tflops) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("gpu_model_bench: %s, forward + backward + clip + AdamW, MFU against %.0f TFLOP/s dense bf16\n",
              prop.name, peak_tflops);
  const ModelConfig c = llama_1b();
  const int64_t B = quick ? 2 : 8, T = 1024;
  const int runs = quick ? 2 : 4;
  const double flop_per_token = train_flops_per_token(c, T);
  for (PrecisionMode mode : {PrecisionMode::kBf16, PrecisionMode::kFp8}) {
    const double ms = time_steps(c, mode, B, T, runs);
    device_empty_cache(Device::cuda());
    const double tok_s = B * T / (ms * 1e-3);
    const double tflops = flop_per_token * tok_s / 1e12;
    std::printf("model   %-12s %-5s N=%-6lld %7.1f TFLOP/s  MFU %5.1f%%  %8.1fk tok/s           (%.1f ms)\n",
                "llama-1b", mode == PrecisionMode::kBf16 ? "bf16" : "fp8", static_cast<long long>(B * T), tflops,
                100.0 * tflops / peak_tflops, tok_s / 1e3, ms);
    std::fflush(stdout);
  }
  return 0;
}

#endif  // STRATA_WITH_CUDA

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
#ifdef STRATA_WITH_CUDA
  return strata::gpubench::bench_main(argc, argv, "gpu_model_bench", strata::run);
#else
  return strata::gpubench::bench_main(argc, argv, "gpu_model_bench", nullptr);
#endif
}
