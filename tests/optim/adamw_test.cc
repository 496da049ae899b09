// optim/adamw.h: AdamW against torch.optim.AdamW on the golden runs of
// scripts/make_golden_optim.py (tests/golden/optim/adamw.safetensors), the vectorised and threaded
// update against a plain scalar reference, and the behaviours the trainer relies on (decay only
// where asked, bf16 moments, state for checkpoints).
//
// Tolerance against torch: our update repeats torch's fp32 operations bit for bit except sqrt,
// where torch's vectorised CPU fp32 sqrt is off by one ulp on ~17% of inputs (adamw.h). Measured
// on the golden runs (the GoldenRun tests print them): given torch's clipped grads, every
// parameter within 2 ulp of torch's after each of the 10 steps (max |diff| / tensor scale 3.1e-8;
// run_b 1.2e-8); through our own clip (norm in double, torch's in fp32: relative 7.5e-8 apart,
// clipped grads within 2 ulp) 6.2e-8 of the tensor's scale, which is up to 40 ulp of a parameter
// near zero. Asserted: 4 ulp per element given torch's grads, and 2.4e-7 (2 ulp at the tensor's
// largest magnitude) of the scale everywhere.
#include "optim/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/safetensors.h"
#include "kernels/ops.h"  // blas_threads, set_blas_threads
#include "optim/schedule.h"

namespace strata {
namespace {

const char* kGolden = STRATA_SOURCE_DIR "/tests/golden/optim/adamw.safetensors";
const std::vector<std::string> kNames = {"w_a", "w_b", "norm", "bias"};

// Distance in units in the last place between two finite floats of the same sign (0 if equal).
int64_t ulps(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = std::numeric_limits<int32_t>::min() - ia;
  if (ib < 0) ib = std::numeric_limits<int32_t>::min() - ib;
  return std::llabs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

// Differences between our tensors and torch's, element by element.
struct Diff {
  int64_t max_ulps = 0;   // in ulps of each element's own value
  double max_scaled = 0;  // max |ours - ref| / max |ref| of the tensor: error relative to its scale
  void add(const Tensor& ours, const Tensor& ref) {
    ASSERT_EQ(ours.numel(), ref.numel());
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < ours.numel(); ++i) {
      const float a = ours.f32()[i], b = ref.f32()[i];
      max_ulps = std::max(max_ulps, ulps(a, b));
      scale = std::max(scale, std::fabs(static_cast<double>(b)));
      worst = std::max(worst, std::fabs(static_cast<double>(a) - b));
    }
    if (scale > 0) max_scaled = std::max(max_scaled, worst / scale);
  }
};

OptimConfig config_from_json(const nlohmann::json& j) {
  OptimConfig c;
  c.lr = j.at("lr");
  c.min_lr = j.at("min_lr");
  c.beta1 = j.at("beta1");
  c.beta2 = j.at("beta2");
  c.eps = j.at("eps");
  c.weight_decay = j.at("weight_decay");
  c.grad_clip = j.at("grad_clip");
  c.warmup_steps = j.at("warmup_steps");
  c.decay_fraction = j.at("decay_fraction");
  const std::string s = j.at("schedule");
  c.schedule = s == "constant" ? LrSchedule::kConstant
               : s == "wsd"    ? LrSchedule::kWsd
                               : LrSchedule::kCosine;
  return c;
}

// One golden run: its config, and parameters/grads as the optimizer's tensor list.
class GoldenRun {
 public:
  explicit GoldenRun(const std::string& run) : run_(run) {
    auto f = SafetensorsFile::open(kGolden);
    CHECK(f.ok()) << f.status();
    file_ = std::make_unique<SafetensorsFile>(*f);
    const auto it = file_->metadata().find(run + ".config");
    CHECK(it != file_->metadata().end()) << run << ".config missing";
    meta_ = nlohmann::json::parse(it->second);
    cfg_ = config_from_json(meta_);
    for (const std::string& n : kNames) {
      values_[n] = read(run + ".init." + n);
      grads_[n] = Tensor::zeros(values_[n].shape(), DType::kF32);
    }
    for (const std::string& n : kNames)
      tensors_.push_back({n, &values_[n], &grads_[n], meta_.at("decay").at(n).get<bool>()});
  }

  Tensor read(const std::string& name) const {
    auto t = file_->read_f32(name);
    CHECK(t.ok()) << t.status();
    return *t;
  }
  // Copies the golden tensor `<run>.step<k>.<what>.<n>` into the grads.
  void load_grads(int k, const std::string& what) {
    for (const std::string& n : kNames) {
      const Tensor g = read(run_ + ".step" + std::to_string(k) + "." + what + "." + n);
      std::memcpy(grads_[n].f32(), g.f32(), g.nbytes());
    }
  }
  Tensor param_after(int k, const std::string& n) const {
    return read(run_ + ".step" + std::to_string(k) + ".param." + n);
  }

  const OptimConfig& cfg() const { return cfg_; }
  int steps() const { return meta_.at("steps"); }
  double max_norm() const { return meta_.at("max_norm"); }
  double lr(int k) const { return meta_.at("lrs").at(k - 1); }  // lr of step k (1-based)
  std::vector<OptimTensor>& tensors() { return tensors_; }
  Tensor& value(const std::string& n) { return values_[n]; }

 private:
  std::string run_;
  std::unique_ptr<SafetensorsFile> file_;
  nlohmann::json meta_;
  OptimConfig cfg_;
  std::map<std::string, Tensor> values_, grads_;
  std::vector<OptimTensor> tensors_;
};

// Replays a golden run. clip: our clip_grad_norm on the raw grads (the trainer's path); otherwise
// torch's clipped grads go straight to the optimizer (AdamW alone).
Diff replay(const std::string& run, bool clip, Diff* grad_diff, double* norm_rel) {
  GoldenRun g(run);
  AdamW opt(g.cfg(), g.tensors());
  Diff diff;
  const bool has_clip = g.max_norm() > 0;
  const Tensor norms = has_clip ? g.read(run + ".norm") : Tensor();
  for (int k = 1; k <= g.steps(); ++k) {
    if (has_clip && clip) {
      g.load_grads(k, "grad");
      const double norm = clip_grad_norm(g.tensors(), g.max_norm());
      const double ref = norms.f32()[k - 1];
      *norm_rel = std::max(*norm_rel, std::fabs(norm - ref) / ref);
      for (const OptimTensor& t : g.tensors()) {
        const Tensor ref_grad = g.read(run + ".step" + std::to_string(k) + ".clipped." + t.name);
        grad_diff->add(*t.grad, ref_grad);
      }
    } else {
      g.load_grads(k, has_clip ? "clipped" : "grad");
    }
    const double lr = lr_at(g.cfg(), k - 1, g.steps());
    // The same formula as the script's; GCC may fuse its final multiply-add (1 ulp).
    EXPECT_NEAR(lr, g.lr(k), 4e-16 * g.cfg().lr) << run << " step " << k;
    opt.step(lr);
    EXPECT_EQ(opt.step_count(), k);
    for (const std::string& n : kNames) diff.add(g.value(n), g.param_after(k, n));
  }
  return diff;
}

constexpr int64_t kMaxUlps = 4;        // per element, torch's grads given
constexpr double kMaxScaled = 2.4e-7;  // |ours - torch| / max |torch| per tensor

TEST(AdamWGolden, RunAAdamWAloneMatchesTorch) {
  Diff grads;
  double norm_rel = 0;
  const Diff d = replay("run_a", /*clip=*/false, &grads, &norm_rel);
  std::printf("run_a, torch's clipped grads: params max %lld ulp, max |diff| / scale %.3g\n",
              static_cast<long long>(d.max_ulps), d.max_scaled);
  EXPECT_LE(d.max_ulps, kMaxUlps);
  EXPECT_LE(d.max_scaled, kMaxScaled);
}

TEST(AdamWGolden, RunAClipAndAdamWMatchTorch) {
  Diff grads;
  double norm_rel = 0;
  const Diff d = replay("run_a", /*clip=*/true, &grads, &norm_rel);
  std::printf(
      "run_a, our clip: norm max rel %.3g; clipped grads max %lld ulp; params max %lld ulp, "
      "max |diff| / scale %.3g\n",
      norm_rel, static_cast<long long>(grads.max_ulps), static_cast<long long>(d.max_ulps),
      d.max_scaled);
  // torch accumulates the norm in fp32 (per tensor, then over tensors), we in double: the clip
  // coefficients differ in the last bits, and so do the clipped grads and everything after. Where
  // AdamW's m nearly cancels, a grad's last-bit difference becomes tens of ulps of a parameter
  // close to zero, so here the bound is on the error relative to the tensor's scale.
  EXPECT_LT(norm_rel, 1e-6);
  EXPECT_LE(grads.max_ulps, 2);
  EXPECT_LE(d.max_scaled, kMaxScaled);
}

TEST(AdamWGolden, RunBOtherLerpBranchMatchesTorch) {
  // beta1 0.4: lerp weight 0.6 takes torch's second formula; constant lr, decay on every tensor.
  Diff grads;
  double norm_rel = 0;
  const Diff d = replay("run_b", /*clip=*/false, &grads, &norm_rel);
  std::printf("run_b: params max %lld ulp, max |diff| / scale %.3g\n",
              static_cast<long long>(d.max_ulps), d.max_scaled);
  EXPECT_LE(d.max_ulps, kMaxUlps);
  EXPECT_LE(d.max_scaled, kMaxScaled);
}

// ---- the fast path against a plain reference ---------------------------------------------------

// torch's single-tensor AdamW step, element by element (adamw.h has the formulas). The decay is a
// separate pass, as in torch, so that the compiler cannot fuse it into the final add.
void reference_step(const OptimConfig& cfg, int64_t t, double lr, bool decay, std::vector<float>& p,
                    const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v,
                    bool bf16) {
  const float w = static_cast<float>(1.0 - cfg.beta1);
  const float b2 = static_cast<float>(cfg.beta2);
  const float c2 = static_cast<float>(1.0 - cfg.beta2);
  const float bc2_sqrt =
      static_cast<float>(std::pow(1.0 - std::pow(cfg.beta2, static_cast<double>(t)), 0.5));
  const float eps = static_cast<float>(cfg.eps);
  const float neg_step =
      static_cast<float>(-(lr / (1.0 - std::pow(cfg.beta1, static_cast<double>(t)))));
  if (decay && cfg.weight_decay != 0) {
    const float mul = static_cast<float>(1.0 - lr * cfg.weight_decay);
    for (float& x : p) x = x * mul;
  }
  auto store = [&](float x) { return bf16 ? bf16_to_f32(f32_to_bf16(x)) : x; };
  for (size_t i = 0; i < p.size(); ++i) {
    const float d = g[i] - m[i];
    m[i] = store(w < 0.5f ? std::fma(w, d, m[i]) : std::fma(-d, 1.0f - w, g[i]));
    v[i] = store(std::fma(c2 * g[i], g[i], v[i] * b2));
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] = p[i] + (neg_step * m[i]) / denom;
  }
}

std::vector<float> randn(std::mt19937& rng, int64_t n, float scale) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& e : x) e = scale * d(rng);
  return x;
}

Tensor tensor_of(const std::vector<float>& x) {
  return Tensor::from_f32(Shape{static_cast<int64_t>(x.size())}, x);
}

std::vector<float> moment_values(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kBF16) {
    for (int64_t i = 0; i < t.numel(); ++i) out[i] = bf16_to_f32(t.data<uint16_t>()[i]);
  } else {
    std::memcpy(out.data(), t.f32(), t.nbytes());
  }
  return out;
}

class AdamWFastPath : public testing::Test {
 protected:
  void SetUp() override { saved_threads_ = blas_threads(); }
  void TearDown() override { set_blas_threads(saved_threads_); }
  int saved_threads_ = 1;
};

TEST_F(AdamWFastPath, EqualsScalarReferenceBitForBit) {
  std::mt19937 rng(7);
  // Sizes around the 8-lane blocks, the 1024-element decay pieces and (300000) the threading
  // threshold; both lerp branches; fp32 and bf16 moments; one and two threads.
  for (int threads : {1, 2}) {
    set_blas_threads(threads);
    for (int64_t n :
         {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{1031}, int64_t{300000}}) {
      for (double beta1 : {0.9, 0.3}) {
        for (MomentDType md : {MomentDType::kF32, MomentDType::kBF16}) {
          for (bool decay : {true, false}) {
            OptimConfig cfg;
            cfg.beta1 = beta1;
            cfg.beta2 = 0.95;
            cfg.weight_decay = 0.1;
            cfg.moments_dtype = md;
            std::vector<float> p = randn(rng, n, 1.0f), m(n, 0.0f), v(n, 0.0f);
            Tensor value = tensor_of(p), grad = Tensor::zeros(Shape{n}, DType::kF32);
            AdamW opt(cfg, {{"x", &value, &grad, decay}});
            for (int t = 1; t <= 3; ++t) {
              const std::vector<float> g = randn(rng, n, t == 2 ? 1e-4f : 1.0f);
              std::memcpy(grad.f32(), g.data(), g.size() * 4);
              const double lr = 1e-2 * t;
              reference_step(cfg, t, lr, decay, p, g, m, v, md == MomentDType::kBF16);
              opt.step(lr);
            }
            const auto state = opt.state_tensors();
            const std::vector<float> om = moment_values(*state[0].second);
            const std::vector<float> ov = moment_values(*state[1].second);
            int64_t bad = 0;
            for (int64_t i = 0; i < n; ++i) {
              bad += f32_bits(value.f32()[i]) != f32_bits(p[i]) ||
                     f32_bits(om[i]) != f32_bits(m[i]) || f32_bits(ov[i]) != f32_bits(v[i]);
            }
            EXPECT_EQ(bad, 0) << "n " << n << " beta1 " << beta1 << " bf16 "
                              << (md == MomentDType::kBF16) << " decay " << decay << " threads "
                              << threads;
          }
        }
      }
    }
  }
}

// ---- behaviours --------------------------------------------------------------------------------

TEST(AdamW, NoDecayTensorIsUntouchedByWeightDecay) {
  std::mt19937 rng(1);
  const std::vector<float> p0 = randn(rng, 37, 1.0f);
  OptimConfig with, without;
  with.weight_decay = 0.1;
  without.weight_decay = 0.0;
  Tensor a = tensor_of(p0), b = tensor_of(p0), c = tensor_of(p0);
  Tensor ga = Tensor::zeros({37}, DType::kF32), gb = ga.clone(), gc = ga.clone();
  AdamW opt_with(with, {{"decays", &a, &ga, true}, {"exempt", &b, &gb, false}});
  AdamW opt_without(without, {{"x", &c, &gc, true}});
  for (int t = 0; t < 4; ++t) {
    const std::vector<float> g = randn(rng, 37, 1.0f);
    for (Tensor* gr : {&ga, &gb, &gc}) std::memcpy(gr->f32(), g.data(), g.size() * 4);
    opt_with.step(1e-2);
    opt_without.step(1e-2);
  }
  EXPECT_EQ(std::memcmp(b.f32(), c.f32(), b.nbytes()), 0)
      << "decay=false must equal weight_decay=0";
  EXPECT_NE(std::memcmp(a.f32(), c.f32(), a.nbytes()), 0) << "decay=true must differ";
}

TEST(AdamW, ZeroGradientStepIsPureDecay) {
  // With g = 0 the moments stay 0 and the Adam update is 0 / (0 + eps) = 0: only p * (1 - lr wd).
  OptimConfig cfg;
  cfg.weight_decay = 0.1;
  const std::vector<float> p0 = {1.0f, -3.5f, 0.25f, 1e-20f, 7.0f};
  Tensor p = tensor_of(p0), g = Tensor::zeros({5}, DType::kF32);
  AdamW opt(cfg, {{"x", &p, &g, true}});
  const double lr = 0.3;
  opt.step(lr);
  const float mul = static_cast<float>(1.0 - lr * 0.1);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p.f32()[i], p0[i] * mul) << i;
}

TEST(AdamW, FirstStepMovesEachParameterByAboutLr) {
  // t = 1: m / bc1 = g and sqrt(v / bc2) = |g|, so the update is -lr * g / (|g| + eps).
  OptimConfig cfg;
  cfg.weight_decay = 0.0;
  const std::vector<float> p0 = {0.0f, 1.0f, -2.0f, 0.5f};
  const std::vector<float> g0 = {0.3f, -1e-3f, 5.0f, -0.02f};
  Tensor p = tensor_of(p0), g = tensor_of(g0);
  AdamW opt(cfg, {{"x", &p, &g, true}});
  opt.step(1e-3);
  for (int i = 0; i < 4; ++i) {  // up to an ulp of p (2.4e-7 at |p| = 2) off lr
    EXPECT_NEAR(p.f32()[i] - p0[i], -1e-3 * (g0[i] > 0 ? 1 : -1), 3e-7) << i;
  }
}

TEST(AdamW, Bf16MomentsAreBf16AndTrackFp32) {
  std::mt19937 rng(3);
  const int64_t n = 1000;
  const std::vector<float> p0 = randn(rng, n, 1.0f);
  OptimConfig f32_cfg, bf16_cfg;
  bf16_cfg.moments_dtype = MomentDType::kBF16;
  Tensor a = tensor_of(p0), b = tensor_of(p0), ga = Tensor::zeros({n}, DType::kF32),
         gb = ga.clone();
  AdamW fp32(f32_cfg, {{"x", &a, &ga, true}});
  AdamW bf16(bf16_cfg, {{"x", &b, &gb, true}});
  for (int t = 0; t < 5; ++t) {
    const std::vector<float> g = randn(rng, n, 1.0f);
    std::memcpy(ga.f32(), g.data(), n * 4);
    std::memcpy(gb.f32(), g.data(), n * 4);
    fp32.step(1e-3);
    bf16.step(1e-3);
  }
  const auto state = bf16.state_tensors();
  for (int k = 0; k < 2; ++k) {
    const Tensor& mom = *state[k].second;
    ASSERT_EQ(mom.dtype(), DType::kBF16) << state[k].first;
    ASSERT_EQ(mom.shape(), a.shape());
    // Every stored code decodes to a float that re-encodes to itself.
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t code = mom.data<uint16_t>()[i];
      ASSERT_EQ(f32_to_bf16(bf16_to_f32(code)), code);
    }
  }
  // bf16 moments (8 bits of mantissa) move the parameters by nearly the same amounts.
  double worst = 0, largest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double da = a.f32()[i] - p0[i], db = b.f32()[i] - p0[i];
    worst = std::max(worst, std::fabs(da - db));
    largest = std::max(largest, std::fabs(da));
  }
  std::printf("bf16 vs fp32 moments after 5 steps: max |update difference| / max |update| = %.3g\n",
              worst / largest);
  EXPECT_LT(worst, 0.02 * largest);
}

TEST(AdamW, StateTensorsNameEverythingAndResumeExactly) {
  std::mt19937 rng(5);
  OptimConfig cfg;
  cfg.moments_dtype = MomentDType::kBF16;
  const std::vector<float> p0 = randn(rng, 20, 1.0f), q0 = randn(rng, 6, 1.0f);
  Tensor p = tensor_of(p0), q = tensor_of(q0), gp = Tensor::zeros({20}, DType::kF32),
         gq = Tensor::zeros({6}, DType::kF32);
  AdamW first(cfg, {{"layers.0.w", &p, &gp, true}, {"norm", &q, &gq, false}});
  auto set_grads = [&](int t) {
    std::mt19937 r(100 + t);
    const std::vector<float> a = randn(r, 20, 1.0f), b = randn(r, 6, 1.0f);
    std::memcpy(gp.f32(), a.data(), 80);
    std::memcpy(gq.f32(), b.data(), 24);
  };
  for (int t = 0; t < 3; ++t) {
    set_grads(t);
    first.step(1e-2);
  }
  auto state = first.state_tensors();
  std::vector<std::string> names;
  for (const auto& [name, tensor] : state) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"optim.m.layers.0.w", "optim.v.layers.0.w",
                                             "optim.m.norm", "optim.v.norm"}));
  EXPECT_EQ(first.step_count(), 3);

  // A second optimizer loaded from the first's state (as a checkpoint would: the moments through
  // state_tensors, the step count beside them) continues identically.
  Tensor p2 = p.clone(), q2 = q.clone();
  AdamW second(cfg, {{"layers.0.w", &p2, &gp, true}, {"norm", &q2, &gq, false}});
  auto state2 = second.state_tensors();
  for (size_t i = 0; i < state.size(); ++i)
    std::memcpy(state2[i].second->raw(), state[i].second->raw(), state[i].second->nbytes());
  second.set_step_count(first.step_count());
  for (int t = 3; t < 5; ++t) {
    set_grads(t);
    first.step(1e-2);
    second.step(1e-2);
  }
  EXPECT_EQ(std::memcmp(p.f32(), p2.f32(), p.nbytes()), 0);
  EXPECT_EQ(std::memcmp(q.f32(), q2.f32(), q.nbytes()), 0);
  second.set_step_count(0);
  EXPECT_EQ(second.step_count(), 0);
}

TEST(AdamWDeathTest, RejectsMismatchedAndDuplicateTensors) {
  OptimConfig cfg;
  Tensor p = Tensor::zeros({4}, DType::kF32), g = Tensor::zeros({5}, DType::kF32);
  EXPECT_DEATH(AdamW(cfg, {{"x", &p, &g, true}}), "optimizer tensor x");
  Tensor g4 = Tensor::zeros({4}, DType::kF32);
  EXPECT_DEATH(AdamW(cfg, {{"x", &p, &g4, true}, {"x", &p, &g4, true}}), "listed twice");
}

}  // namespace
}  // namespace strata
