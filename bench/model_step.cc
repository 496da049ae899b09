// End-to-end throughput of one training step's forward + backward (no optimizer) for a dense and
// a MoE model shaped like TOOLCHAIN.md's PyTorch peers (6 layers, d 256, batch 8 x seq 128; the
// same models in transformers: scripts/bench_torch_peer.py):
// tokens/s, achieved GFLOP/s and MFU = model FLOPs (REFERENCE.md section 4) / the sgemm peak
// measured in the same process. Prints a table; not a test.
//
//   build/bench/model_step [--threads N] [--steps N]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/timer.h"
#include "kernels/ops.h"
#include "model/flops.h"
#include "model/transformer.h"

namespace strata {
namespace {

struct Result {
  double tokens_per_s, gflops, mfu;
};

Result run(const ModelConfig& c, int64_t B, int64_t T, int steps, double peak) {
  Transformer model(c, PrecisionConfig{});
  model.init(1);
  std::mt19937 rng(3);
  Batch batch;
  batch.B = B;
  batch.T = T;
  for (int64_t i = 0; i < B * T; ++i) batch.tokens.push_back(static_cast<int32_t>(rng() % c.vocab_size));
  for (int64_t i = 0; i < B * T; ++i) batch.targets.push_back(i % T == T - 1 ? -1 : batch.tokens[i + 1]);
  batch.finalize(c.vocab_size);
  const double denom = batch.n_targets();
  {  // warm-up
    Activations acts;
    model.forward(batch, acts, denom);
    model.backward(acts);
  }
  Timer t;
  for (int s = 0; s < steps; ++s) {
    Activations acts;
    model.forward(batch, acts, denom);
    model.backward(acts);
  }
  const double sec = t.seconds() / steps;
  const double flops_per_token = train_flops_per_token(c, T);
  Result r;
  r.tokens_per_s = B * T / sec;
  r.gflops = flops_per_token * r.tokens_per_s / 1e9;
  r.mfu = r.gflops * 1e9 / peak;
  return r;
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  using namespace strata;
  int threads = 2, steps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
  }
  set_blas_threads(threads);
  const double peak = measure_sgemm_peak_flops();

  ModelConfig dense;
  dense.arch = ModelArch::kLlama;
  dense.vocab_size = 256;
  dense.d_model = 256;
  dense.n_layers = 6;
  dense.n_heads = 4;
  dense.n_kv_heads = 4;
  dense.ffn_hidden = 683;  // SwiGLU with the parameters of a 4x GELU MLP
  dense.max_seq_len = 128;
  ModelConfig moe = dense;
  moe.arch = ModelArch::kQwen3Moe;
  moe.moe.n_experts = 8;
  moe.moe.top_k = 2;
  moe.moe.expert_ffn_hidden = 512;

  std::printf("forward+backward, batch 8 x seq 128, fp32, %d BLAS thread(s); sgemm peak %.1f GFLOP/s\n", threads,
              peak / 1e9);
  std::printf("%-34s %10s %10s %8s\n", "model", "tokens/s", "GFLOP/s", "MFU");
  for (auto [name, cfg] : {std::pair<const char*, ModelConfig*>{"dense 6L d256", &dense},
                           {"MoE 6L d256 8x top-2", &moe}}) {
    Result r = run(*cfg, 8, 128, steps, peak);
    std::printf("%-34s %10.0f %10.1f %7.1f%%\n", name, r.tokens_per_s, r.gflops, 100.0 * r.mfu);
  }
  return 0;
}
