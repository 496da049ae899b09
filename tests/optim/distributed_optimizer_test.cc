// optim/distributed_optimizer.h in one process (no dp group): it must be plain AdamW with
// clip_grad_norm, skip an update that is locally bad or has a non-finite gradient without
// touching anything, and name its state for checkpoints so that load_state restores it. The
// multi-rank behaviour (buckets, ZeRO-1 shards, collective skip) is held to one process by the
// mpirun tests (tests/cli/dp_parity_test.sh) and tests/parallel/communicator_probe.cc.
#include "optim/distributed_optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <vector>

namespace strata {
namespace {

// Two parameters with gradients, filled from a seed.
struct Params {
  Tensor w = Tensor::zeros({6, 5}, DType::kF32), gw = Tensor::zeros({6, 5}, DType::kF32);
  Tensor b = Tensor::zeros({7}, DType::kF32), gb = Tensor::zeros({7}, DType::kF32);
  explicit Params(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (Tensor* t : {&w, &gw, &b, &gb})
      for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] = n(rng);
  }
  std::vector<OptimTensor> tensors() { return {{"w", &w, &gw, true}, {"b", &b, &gb, false}}; }
};

OptimConfig config() {
  OptimConfig c;
  c.grad_clip = 0.5;  // below the gradients' norm: clipping is exercised
  c.weight_decay = 0.1;
  return c;
}

bool same(const Tensor& a, const Tensor& b) { return std::memcmp(a.f32(), b.f32(), a.nbytes()) == 0; }

TEST(DistributedOptimizer, OneProcessIsAdamWWithClipping) {
  Params ours(1), ref(1);
  DistributedOptimizer opt(config(), ParallelConfig{}, ours.tensors(), nullptr);
  AdamW adam(config(), ref.tensors());
  for (int step = 0; step < 3; ++step) {
    opt.zero_grads();
    EXPECT_EQ(ours.gw.f32()[0], 0.0f) << "zero_grads zeroes the gradients";
    Params g(10 + step);  // fresh gradients for both
    std::memcpy(ours.gw.f32(), g.gw.f32(), g.gw.nbytes());
    std::memcpy(ours.gb.f32(), g.gb.f32(), g.gb.nbytes());
    std::memcpy(ref.gw.f32(), g.gw.f32(), g.gw.nbytes());
    std::memcpy(ref.gb.f32(), g.gb.f32(), g.gb.nbytes());
    ASSERT_TRUE(opt.reduce_grads().ok());
    auto r = opt.step(1e-2, false);
    ASSERT_TRUE(r.ok());
    const double norm = clip_grad_norm(ref.tensors(), 0.5);
    adam.step(1e-2);
    EXPECT_TRUE(r->applied);
    EXPECT_EQ(r->grad_norm, norm);
    EXPECT_TRUE(same(ours.w, ref.w) && same(ours.b, ref.b)) << "step " << step;
  }
  EXPECT_EQ(opt.step_count(), 3);
  EXPECT_FALSE(opt.sharded());
  EXPECT_EQ(opt.state_bytes(), 2 * (30 + 7) * 4);
  EXPECT_EQ(opt.grad_shard_bytes(), 0);
  EXPECT_EQ(opt.bucket_count(), 0);
}

TEST(DistributedOptimizer, BadStepsChangeNothing) {
  Params p(2), before(2);
  DistributedOptimizer opt(config(), ParallelConfig{}, p.tensors(), nullptr);
  auto r = opt.step(1e-2, /*local_bad=*/true);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->applied);
  EXPECT_TRUE(same(p.w, before.w) && same(p.b, before.b));
  p.gb.f32()[3] = std::numeric_limits<float>::quiet_NaN();
  r = opt.step(1e-2, false);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->applied) << "a NaN gradient skips the update";
  EXPECT_TRUE(same(p.w, before.w) && same(p.b, before.b));
  EXPECT_EQ(opt.step_count(), 0);
}

TEST(DistributedOptimizer, StateRoundTripsThroughSlices) {
  Params p(3);
  DistributedOptimizer a(config(), ParallelConfig{}, p.tensors(), nullptr);
  ASSERT_TRUE(a.step(1e-2, false).ok());
  // Every moment, whole (one process: not flat, not replicated across ranks).
  std::map<std::string, std::vector<float>> saved;
  for (const OptimStateSlice& s : a.state_slices()) {
    EXPECT_FALSE(s.flat);
    EXPECT_FALSE(s.replicated);
    EXPECT_EQ(s.global_shape, s.name.find(".w") != std::string::npos ? std::vector<int64_t>({6, 5}) : std::vector<int64_t>({7}));
    saved[s.name].assign(s.tensor->f32(), s.tensor->f32() + s.tensor->numel());
  }
  EXPECT_EQ(saved.size(), 4u);
  EXPECT_TRUE(saved.count("optim.m.w") && saved.count("optim.v.b"));
  Params q(3);
  DistributedOptimizer b(config(), ParallelConfig{}, q.tensors(), nullptr);
  ASSERT_TRUE(b.load_state([&](const std::string& name, int64_t begin, int64_t count, float* out) -> Status {
                 const std::vector<float>& v = saved.at(name);
                 std::copy(v.begin() + begin, v.begin() + begin + count, out);
                 return OkStatus();
               }).ok());
  for (const OptimStateSlice& s : b.state_slices())
    EXPECT_EQ(0, std::memcmp(s.tensor->f32(), saved[s.name].data(), s.tensor->nbytes())) << s.name;
}

}  // namespace
}  // namespace strata
