// The model on a GPU against the model on the CPU: the same dense Transformer (GQA, QKV bias,
// q/k norm, tied and untied heads) built twice from one seed, one moved to cuda:0 with
// to_device, both run forward and backward on one batch (cross-entropy, and a loss on the
// token log-probs as GRPO sets it); loss, logits, log-probs and every parameter gradient of the
// GPU model are held to the CPU's (relative L2: fp32 1e-4 over a whole model, bf16 2e-3, where
// a rounding that lands on the other side of a bf16 tie moves one element by 2^-8). Skipped
// without a GPU; the refusals (MoE blocks, decoding) are checked without one where they can be.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/transformer.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

ModelConfig dense(ModelArch arch, bool tied) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 37;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 48;
  c.max_seq_len = 64;
  c.init_std = 0.3;
  c.tie_embeddings = tied;
  c.qkv_bias = arch == ModelArch::kQwen2;
  c.qk_norm = arch == ModelArch::kQwen3;
  return c;
}

Batch make_batch(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * T; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % V));
  for (int64_t i = 0; i < B * T; ++i) b.targets.push_back(i % 5 == 2 ? -1 : static_cast<int32_t>(rng() % V));
  b.key_start = {0, 3};  // the second row left-padded
  b.finalize(V);
  return b;
}

// One model on `device`, initialised from `seed` with norms and biases moved off 1 and 0.
void build(Transformer& model, uint64_t seed, Device device) {
  model.init(seed);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (const ParamRef& p : model.params())
    if (p.kind == ParamKind::kNorm || p.kind == ParamKind::kBias)
      for (int64_t i = 0; i < p.param->value.numel(); ++i) p.param->v()[i] += u(rng);
  model.mark_weights_changed();
  model.to_device(device);
}

std::vector<float> host(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  return std::vector<float>(h.f32(), h.f32() + h.numel());
}

void check_against_cpu(const ModelConfig& config, PrecisionMode mode, bool logp_loss) {
  SCOPED_TRACE(testing::Message() << "arch " << static_cast<int>(config.arch) << " tied " << config.tie_embeddings
                                  << " mode " << static_cast<int>(mode) << " logp_loss " << logp_loss);
  const double bound = mode == PrecisionMode::kFp32 ? 1e-4 : 2e-3;
  PrecisionConfig precision;
  precision.mode = mode;
  Transformer cpu(config, precision), gpu(config, precision);
  build(cpu, 7, Device::cpu());
  build(gpu, 7, Device::cuda());
  ASSERT_TRUE(gpu.device().is_cuda());

  const Batch batch = make_batch(2, 9, config.vocab_size, 3);
  const double denom = static_cast<double>(batch.n_targets());
  Activations a_cpu, a_gpu;
  zero_grads(cpu.params());
  zero_grads(gpu.params());
  const double l_cpu = cpu.forward(batch, a_cpu, denom);
  const double l_gpu = gpu.forward(batch, a_gpu, denom);
  EXPECT_NEAR(l_gpu, l_cpu, bound * std::fabs(l_cpu)) << "loss";
  EXPECT_TRUE(a_gpu.logits.device().is_cuda()) << "logits stay on the model's device";
  EXPECT_CLOSE(host(a_gpu.logits), host(a_cpu.logits), bound, "logits");
  EXPECT_CLOSE(a_gpu.token_logp, a_cpu.token_logp, bound, "token log-probs");
  if (logp_loss) {  // a loss on the log-probs, as GRPO sets it: d loss / d logp per token
    std::mt19937 rng(5);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (size_t i = 0; i < a_cpu.token_logp.size(); ++i) a_cpu.token_logp_grad.push_back(n(rng));
    a_gpu.token_logp_grad = a_cpu.token_logp_grad;
  }
  cpu.backward(a_cpu);
  gpu.backward(a_gpu);
  for (size_t i = 0; i < cpu.params().size(); ++i) {
    const ParamRef& pc = cpu.params()[i];
    const ParamRef& pg = gpu.params()[i];
    ASSERT_EQ(pc.name, pg.name);
    EXPECT_TRUE(pg.param->grad.device().is_cuda()) << pg.name;
    EXPECT_CLOSE(host(pg.param->grad), host(pc.param->grad), bound, "gradient of " + pc.name);
  }
}

GPU_TEST(CudaModelTest, DenseForwardBackwardMatchTheCpu) {
  for (ModelArch arch : {ModelArch::kLlama, ModelArch::kQwen2, ModelArch::kQwen3}) {
    for (bool tied : {false, true}) check_against_cpu(dense(arch, tied), PrecisionMode::kFp32, false);
  }
  check_against_cpu(dense(ModelArch::kLlama, false), PrecisionMode::kFp32, true);
  check_against_cpu(dense(ModelArch::kQwen3, true), PrecisionMode::kBf16, false);
}

GPU_TEST(CudaModelTest, ParametersComeBackUnchanged) {
  PrecisionConfig precision;
  Transformer a(dense(ModelArch::kQwen2, false), precision), b(dense(ModelArch::kQwen2, false), precision);
  build(a, 9, Device::cpu());
  build(b, 9, Device::cuda());
  b.to_device(Device::cpu());
  for (size_t i = 0; i < a.params().size(); ++i)
    EXPECT_EQ(host(b.params()[i].param->value), host(a.params()[i].param->value)) << a.params()[i].name;
}

GPU_TEST(CudaModelTest, DecodingOnTheGpuIsRefusedSayingSo) {
  PrecisionConfig precision;
  Transformer model(dense(ModelArch::kLlama, false), precision);
  build(model, 1, Device::cuda());
  std::vector<KVCache> caches = model.make_kv_caches(1, 8);
  EXPECT_DEATH(model.decode(caches, {1}, {0}, {0}, 1, 1, true), "decoding on cuda:0 is not wired yet");
}

// No GPU needed: the refusal comes before any device memory is touched.
TEST(CudaModelDeathTest, MoeBlocksAreRefusedNamingTheLayer) {
  ModelConfig c = dense(ModelArch::kLlama, false);
  c.moe.n_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden = 12;
  c.moe.first_k_dense = 1;
  PrecisionConfig precision;
  Transformer model(c, precision);
  model.init(1);
  EXPECT_DEATH(model.to_device(Device::cuda()), "layers.1 is a MoE block: MoE blocks run on the CPU only so far");
}

TEST(CudaModelDeathTest, InitAfterTheMoveIsRefused) {
  if (!gputest::gpu_skip_reason().empty()) GTEST_SKIP() << "GPU test skipped: " << gputest::gpu_skip_reason();
  PrecisionConfig precision;
  Transformer model(dense(ModelArch::kLlama, false), precision);
  model.init(1);
  model.to_device(Device::cuda());
  EXPECT_DEATH(model.init(2), "call it before to_device");
}

}  // namespace
}  // namespace strata
