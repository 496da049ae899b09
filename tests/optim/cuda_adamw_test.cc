// The AdamW optimizer, the global-norm clip and the non-finite check on GPU tensors against the
// same calls on CPU tensors: bit for bit (the kernels repeat the CPU's operations and summation
// order), over several steps with fp32 and bf16 moments. Skips without a GPU.
#include <vector>

#include "optim/adamw.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

std::vector<float> host(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  return std::vector<float>(h.f32(), h.f32() + h.numel());
}

void check(MomentDType moments, double max_norm) {
  const uint32_t seed = gputest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed << " bf16 moments " << (moments == MomentDType::kBF16)
                                  << " max_norm " << max_norm);
  std::mt19937 rng(seed);
  const std::vector<Shape> shapes = {Shape({300, 77}), Shape({1}), Shape({16385})};
  std::vector<Tensor> cv, cg, gv, gg;
  for (const Shape& s : shapes) {
    cv.push_back(Tensor::from_f32(s, gputest::randn(s.numel(), rng)));
    cg.push_back(Tensor::zeros(s, DType::kF32));
    gv.push_back(cv.back().to(Device::cuda()));
    gg.push_back(Tensor::zeros(s, DType::kF32, Device::cuda()));
  }
  std::vector<OptimTensor> cpu_list, gpu_list;
  for (size_t i = 0; i < shapes.size(); ++i) {
    cpu_list.push_back({"p" + std::to_string(i), &cv[i], &cg[i], i != 1});
    gpu_list.push_back({"p" + std::to_string(i), &gv[i], &gg[i], i != 1});
  }
  OptimConfig cfg;
  cfg.moments_dtype = moments;
  cfg.weight_decay = 0.1;
  AdamW cpu(cfg, cpu_list), gpu(cfg, gpu_list);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::vector<float> g = gputest::randn(shapes[i].numel(), rng, 0.5f);
      cg[i] = Tensor::from_f32(shapes[i], g);
      gg[i] = cg[i].to(Device::cuda());
    }
    EXPECT_EQ(clip_grad_norm(gpu_list, max_norm), clip_grad_norm(cpu_list, max_norm)) << "step " << step;
    EXPECT_FALSE(grads_have_nonfinite(gpu_list));
    cpu.step(1e-3);
    gpu.step(1e-3);
    for (size_t i = 0; i < shapes.size(); ++i) {
      EXPECT_EQ(host(gg[i]), host(cg[i])) << "clipped grad " << i << ", step " << step;
      EXPECT_EQ(host(gv[i]), host(cv[i])) << "parameter " << i << ", step " << step;
    }
  }
  // A NaN or an Inf in any grad is seen.
  std::vector<float> g = host(gg[2]);
  g[12345] = INFINITY;
  gg[2] = Tensor::from_f32(shapes[2], g).to(Device::cuda());
  EXPECT_TRUE(grads_have_nonfinite(gpu_list));
}

GPU_TEST(CudaAdamwTest, StepsClipAndNanCheckAreBitwiseTheCpus) {
  check(MomentDType::kF32, 1.0);
  check(MomentDType::kBF16, 1.0);
  check(MomentDType::kF32, 0.0);  // no clipping
}

}  // namespace
}  // namespace strata
