// The MoE ops (routing, gather, combine and its backward) and the optimizer ops (AdamW with fp32
// and bf16 moments, the gradient sum of squares) on the GPU against their CPU references, plus
// the caching allocator on a real device. AdamW and the sum of squares are bit for bit the CPU's;
// routing must choose the same experts (a differing choice is allowed only between two experts
// whose CPU scores tie to 1e-6), with probabilities and weights within the fp32 bound.
#include <cmath>
#include <memory>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "kernels/moe_ops.h"
#include "kernels/optim_ops.h"
#include "tests/kernels/gpu_harness.h"

namespace strata {
namespace {

using gputest::DeviceArray;

void check_route(int64_t N, MoeRouting r, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " N " << N << " E " << r.E << " K " << r.K
                                  << " groups " << r.n_group);
  std::mt19937 rng(seed);
  const std::vector<float> logits = gputest::randn(static_cast<size_t>(N * r.E), rng, 2.0f);
  const std::vector<float> bias = gputest::randn(static_cast<size_t>(r.E), rng, 0.1f);
  std::vector<float> probs(N * r.E), w(N * r.K);
  std::vector<int32_t> idx(N * r.K);
  moe_route_f32(probs.data(), idx.data(), w.data(), logits.data(), bias.data(), N, r);

  DeviceArray<float> d_logits(logits), d_bias(bias), d_probs(N * r.E), d_w(N * r.K);
  DeviceArray<int32_t> d_idx(N * r.K);
  d_probs.poison();
  d_w.poison();
  d_idx.poison();
  cuda::moe_route_f32(d_probs.data(), d_idx.data(), d_w.data(), d_logits.data(), d_bias.data(), N, r);
  EXPECT_CLOSE(d_probs.download(), probs, gputest::kFp32Bound, "router probabilities");
  const std::vector<int32_t> gidx = d_idx.download();
  int64_t mismatches = 0;
  for (int64_t i = 0; i < N * r.K; ++i) {
    if (gidx[i] == idx[i]) continue;
    const int64_t t = i / r.K;
    ASSERT_GE(gidx[i], 0);
    ASSERT_LT(gidx[i], r.E);
    const float a = probs[t * r.E + idx[i]], b = probs[t * r.E + gidx[i]];
    const float ba = r.scoring == RouteScoring::kSigmoid ? bias[idx[i]] : 0.0f;
    const float bb = r.scoring == RouteScoring::kSigmoid ? bias[gidx[i]] : 0.0f;
    EXPECT_NEAR(a + ba, b + bb, 1e-6f) << "token " << t << " choice " << i % r.K << ": cpu expert "
                                       << idx[i] << ", gpu expert " << gidx[i];
    ++mismatches;
  }
  if (mismatches == 0) EXPECT_CLOSE(d_w.download(), w, gputest::kFp32Bound, "combine weights");
}

GPU_TEST(CudaMoeTest, RouteSoftmaxAndSigmoidWithGroups) {
  MoeRouting soft;
  soft.E = 64;
  soft.K = 6;
  for (bool norm : {true, false}) {
    soft.norm_topk_prob = norm;
    check_route(333, soft, gputest::fresh_seed());
  }
  soft.E = 8;
  soft.K = 2;
  check_route(1, soft, gputest::fresh_seed());
  check_route(0, soft, gputest::fresh_seed());
  MoeRouting sig;
  sig.E = 256;
  sig.K = 8;
  sig.scoring = RouteScoring::kSigmoid;
  sig.routed_scaling_factor = 2.5f;
  sig.n_group = 8;
  sig.topk_group = 4;
  check_route(257, sig, gputest::fresh_seed());
  sig.n_group = 1;
  sig.topk_group = 1;
  check_route(100, sig, gputest::fresh_seed());
}

// Slots of N tokens x K choices over E experts, expert-major, with every 7th choice dropped.
struct Slots {
  std::vector<int32_t> slot_of, slot_token;
  int64_t M = 0;
};
Slots make_slots(int64_t N, int64_t K, int64_t E, std::mt19937& rng) {
  std::vector<std::vector<int64_t>> per(E);
  for (int64_t i = 0; i < N * K; ++i)
    if (i % 7 != 3) per[rng() % E].push_back(i);
  Slots s;
  s.slot_of.assign(N * K, -1);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i : per[e]) {
      s.slot_of[i] = static_cast<int32_t>(s.M++);
      s.slot_token.push_back(static_cast<int32_t>(i / K));
    }
  return s;
}

GPU_TEST(CudaMoeTest, GatherCombineAndCombineBackward) {
  for (auto [N, K, C] : {std::tuple<int64_t, int64_t, int64_t>{97, 4, 130}, {1, 1, 1}, {512, 8, 256}}) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " N " << N << " K " << K << " C " << C);
    std::mt19937 rng(seed);
    const Slots s = make_slots(N, K, 16, rng);
    const int64_t M = s.M;
    const std::vector<float> x = gputest::randn(N * C, rng), rows = gputest::randn(M * C, rng);
    const std::vector<float> w = gputest::uniform(N * K, rng, 0.0f, 1.0f);
    const std::vector<float> dout = gputest::randn(N * C, rng);

    std::vector<float> gathered(M * C), combined(N * C), unit(N * C), drows(M * C, 0.0f), dw(N * K);
    gather_rows_f32(gathered.data(), x.data(), s.slot_token.data(), M, C);
    moe_combine_f32(combined.data(), rows.data(), s.slot_of.data(), w.data(), N, K, C);
    moe_combine_f32(unit.data(), rows.data(), s.slot_of.data(), nullptr, N, K, C);
    moe_combine_backward_f32(drows.data(), dw.data(), dout.data(), rows.data(), s.slot_of.data(),
                             w.data(), N, K, C);

    DeviceArray<float> d_x(x), d_rows(rows), d_w(w), d_dout(dout);
    DeviceArray<int32_t> d_slot_of(s.slot_of), d_slot_token(s.slot_token);
    DeviceArray<float> d_gathered(M * C), d_combined(N * C), d_unit(N * C), d_drows(M * C), d_dw(N * K);
    for (auto* a : {&d_gathered, &d_combined, &d_unit, &d_dw}) a->poison();
    d_drows.upload(std::vector<float>(M * C, 0.0f));
    cuda::gather_rows_f32(d_gathered.data(), d_x.data(), d_slot_token.data(), M, C);
    cuda::moe_combine_f32(d_combined.data(), d_rows.data(), d_slot_of.data(), d_w.data(), N, K, C);
    cuda::moe_combine_f32(d_unit.data(), d_rows.data(), d_slot_of.data(), nullptr, N, K, C);
    cuda::moe_combine_backward_f32(d_drows.data(), d_dw.data(), d_dout.data(), d_rows.data(),
                                   d_slot_of.data(), d_w.data(), N, K, C);
    EXPECT_EQ(d_gathered.download(), gathered) << "gather is a copy";
    EXPECT_CLOSE(d_combined.download(), combined, gputest::kFp32Bound, "combine");
    EXPECT_CLOSE(d_unit.download(), unit, gputest::kFp32Bound, "combine with unit weights");
    EXPECT_EQ(d_drows.download(), drows) << "combine backward rows are single products";
    EXPECT_CLOSE(d_dw.download(), dw, gputest::kFp32Bound, "combine backward weights");
  }
}

GPU_TEST(CudaMoeTest, ScatterAddRowsAndRouteBackwardAreBitwiseTheCpus) {
  for (auto [N, K, C] : {std::tuple<int64_t, int64_t, int64_t>{97, 4, 130}, {1, 1, 1}, {512, 8, 256}}) {
    const uint32_t seed = gputest::fresh_seed();
    SCOPED_TRACE(testing::Message() << "seed " << seed << " N " << N << " K " << K << " C " << C);
    std::mt19937 rng(seed);
    // Scatter the expert slots back to their tokens (each token named up to K times), and an
    // embedding-like scatter into a small table (rows named many times, in no order).
    const Slots s = make_slots(N, K, 16, rng);
    const std::vector<float> rows = gputest::randn(s.M * C, rng), out0 = gputest::randn(N * C, rng);
    std::vector<int32_t> ids(static_cast<size_t>(N * K));
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % 11);
    const std::vector<float> rows2 = gputest::randn(N * K * C, rng), table0 = gputest::randn(11 * C, rng);
    std::vector<float> out = out0, table = table0;
    scatter_add_rows_f32(out.data(), rows.data(), s.slot_token.data(), s.M, C);
    scatter_add_rows_f32(table.data(), rows2.data(), ids.data(), N * K, C);
    DeviceArray<float> d_out(out0), d_rows(rows), d_table(table0), d_rows2(rows2);
    DeviceArray<int32_t> d_slot_token(s.slot_token), d_ids(ids);
    cuda::scatter_add_rows_f32(d_out.data(), d_rows.data(), d_slot_token.data(), s.M, C);
    cuda::scatter_add_rows_f32(d_table.data(), d_rows2.data(), d_ids.data(), N * K, C);
    EXPECT_EQ(d_out.download(), out) << "slots back to tokens, summed in slot order";
    EXPECT_EQ(d_table.download(), table) << "repeated rows, summed in index order";

    // The routing weights' backward, softmax and sigmoid, with and without renormalisation.
    for (bool norm : {true, false}) {
      MoeRouting r;
      r.E = 16;
      r.K = K;
      r.norm_topk_prob = norm;
      r.scoring = norm ? RouteScoring::kSigmoid : RouteScoring::kSoftmax;
      r.routed_scaling_factor = 2.5f;
      const std::vector<float> probs = gputest::uniform(N * r.E, rng, 0.01f, 1.0f);
      const std::vector<float> dw = gputest::randn(N * K, rng), dp0 = gputest::randn(N * r.E, rng);
      std::vector<int32_t> idx(static_cast<size_t>(N * K));
      for (int64_t t = 0; t < N; ++t)
        for (int64_t k = 0; k < K; ++k) idx[t * K + k] = static_cast<int32_t>((t + 3 * k) % r.E);
      std::vector<float> dp = dp0;
      moe_route_backward_f32(dp.data(), dw.data(), probs.data(), idx.data(), N, r);
      DeviceArray<float> d_dp(dp0), d_dw(dw), d_probs(probs);
      DeviceArray<int32_t> d_idx(idx);
      cuda::moe_route_backward_f32(d_dp.data(), d_dw.data(), d_probs.data(), d_idx.data(), N, r);
      EXPECT_EQ(d_dp.download(), dp) << "route backward, norm " << norm;
    }
  }
}

void check_adamw(bool bf16_moments, double beta1, bool decay, int64_t n, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "seed " << seed << " n " << n << " bf16 " << bf16_moments
                                  << " beta1 " << beta1 << " decay " << decay);
  std::mt19937 rng(seed);
  std::vector<float> p = gputest::randn(n, rng), g = gputest::randn(n, rng, 0.01f);
  std::vector<float> m = gputest::randn(n, rng, 0.01f), v = gputest::uniform(n, rng, 0.0f, 1e-4f);
  std::vector<uint16_t> mb(n), vb(n);
  for (int64_t i = 0; i < n; ++i) {
    mb[i] = f32_to_bf16(m[i]);
    vb[i] = f32_to_bf16(v[i]);
  }
  DeviceArray<float> d_p(p), d_g(g), d_m(m), d_v(v);
  DeviceArray<uint16_t> d_mb(mb), d_vb(vb);
  for (int64_t t = 1; t <= 3; ++t) {  // three steps: moments feed back
    const AdamwScalars s = adamw_scalars(beta1, 0.95, 1e-8, 0.1, 3e-4, t, decay);
    if (bf16_moments) {
      adamw_update_bf16(p.data(), g.data(), mb.data(), vb.data(), n, s);
      cuda::adamw_update_bf16(d_p.data(), d_g.data(), d_mb.data(), d_vb.data(), n, s);
    } else {
      adamw_update_f32(p.data(), g.data(), m.data(), v.data(), n, s);
      cuda::adamw_update_f32(d_p.data(), d_g.data(), d_m.data(), d_v.data(), n, s);
    }
  }
  EXPECT_EQ(d_p.download(), p) << "AdamW parameters must be bitwise the CPU's";
  if (bf16_moments) {
    EXPECT_EQ(d_mb.download(), mb);
    EXPECT_EQ(d_vb.download(), vb);
  } else {
    EXPECT_EQ(d_m.download(), m);
    EXPECT_EQ(d_v.download(), v);
  }
}

GPU_TEST(CudaOptimTest, AdamwIsBitwiseTheCpus) {
  for (bool bf16 : {false, true})
    for (double beta1 : {0.9, 0.3})  // both of torch's lerp branches
      for (bool decay : {true, false}) check_adamw(bf16, beta1, decay, 100003, gputest::fresh_seed());
  check_adamw(false, 0.9, true, 1, gputest::fresh_seed());
}

GPU_TEST(CudaOptimTest, GradSumOfSquaresIsBitwiseTheCpus) {
  const uint32_t seed = gputest::fresh_seed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const std::vector<int64_t> sizes = {1, 0, 16384, 16385, 1000003, 77};
  std::vector<std::vector<float>> host;
  std::vector<std::unique_ptr<DeviceArray<float>>> dev;
  std::vector<const float*> hp, dp;
  for (int64_t n : sizes) {
    host.push_back(gputest::randn(n, rng, 3.0f));
    dev.push_back(std::make_unique<DeviceArray<float>>(host.back()));
    hp.push_back(host.back().data());
    dp.push_back(dev.back()->data());
  }
  const double cpu = grad_sum_squares_f32(hp.data(), sizes.data(), static_cast<int64_t>(sizes.size()));
  const double gpu = cuda::grad_sum_squares_f32(dp.data(), sizes.data(), static_cast<int64_t>(sizes.size()));
  EXPECT_EQ(gpu, cpu);
  EXPECT_EQ(cuda::grad_sum_squares_f32(dp.data(), sizes.data(), 0), 0.0);
}

GPU_TEST(CudaDeviceTest, CachingAllocatorReusesFreedBlocks) {
  const Device gpu = Device::cuda();
  device_empty_cache(gpu);
  const CachingAllocatorStats before = device_memory_stats(gpu);
  void* p = device_alloc(gpu, 3 << 20);
  device_free(gpu, p);
  void* q = device_alloc(gpu, (3 << 20) - 100);
  EXPECT_EQ(q, p) << "the freed block was not reused";
  const CachingAllocatorStats after = device_memory_stats(gpu);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_EQ(after.backend_allocs, before.backend_allocs + 1);
  device_free(gpu, q);
  device_empty_cache(gpu);
  EXPECT_EQ(device_memory_stats(gpu).reserved_bytes, device_memory_stats(gpu).allocated_bytes);
}

}  // namespace
}  // namespace strata
