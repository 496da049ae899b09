// End-to-end throughput of one training step's forward + backward (no optimizer) for a dense and
// a MoE model shaped like TOOLCHAIN.md's PyTorch peers (6 layers, d 256, batch 8 x seq 128; the
// same models in transformers: scripts/bench_torch_peer.py):
// tokens/s, achieved GFLOP/s and MFU = model FLOPs (REFERENCE.md section 4) / the sgemm peak
// measured in the same process, in each precision (fp32, bf16 and the two fp8 recipes, emulated
// on the CPU: the "vs fp32" column is the emulation's cost). Weights count as changed every step,
// as after an optimizer step, so low-precision weight copies are rebuilt each time. Prints a
// table; not a test.
//
//   build/bench/model_step [--threads N] [--steps N] [--fp32-only 1]
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

Result run(const ModelConfig& c, const PrecisionConfig& precision, int64_t B, int64_t T, int steps, double peak) {
  Transformer model(c, precision);
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
    model.mark_weights_changed();
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
  int threads = 2, steps = 5, fp32_only = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--fp32-only")) fp32_only = std::atoi(argv[i + 1]);
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

  std::vector<std::pair<std::string, PrecisionConfig>> precisions;
  precisions.push_back({"fp32", PrecisionConfig{}});
  if (!fp32_only) {
    PrecisionConfig p;
    p.mode = PrecisionMode::kBf16;
    precisions.push_back({"bf16", p});
    p.mode = PrecisionMode::kFp8;
    precisions.push_back({"fp8 blockwise", p});
    p.fp8.recipe = Fp8Recipe::kTensorwiseDelayed;
    precisions.push_back({"fp8 tensorwise_delayed", p});
  }

  std::printf("forward+backward, batch 8 x seq 128, %d BLAS thread(s); sgemm peak %.1f GFLOP/s\n", threads,
              peak / 1e9);
  std::printf("%-22s %-24s %10s %10s %8s %8s\n", "model", "precision", "tokens/s", "GFLOP/s", "MFU", "vs fp32");
  for (auto [name, cfg] : {std::pair<const char*, ModelConfig*>{"dense 6L d256", &dense},
                           {"MoE 6L d256 8x top-2", &moe}}) {
    double base = 0;
    for (const auto& [pname, precision] : precisions) {
      Result r = run(*cfg, precision, 8, 128, steps, peak);
      if (base == 0) base = r.tokens_per_s;
      std::printf("%-22s %-24s %10.0f %10.1f %7.1f%% %7.2fx\n", name, pname.c_str(), r.tokens_per_s, r.gflops,
                  100.0 * r.mfu, base / r.tokens_per_s);
    }
  }
  return 0;
}
