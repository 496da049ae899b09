// optim/schedule.h: lr_at against transformers' schedule functions (curves written by
// scripts/make_golden_optim.py into tests/golden/optim/adamw.safetensors metadata), and the shape
// of each schedule at its edges.
#include "optim/schedule.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/safetensors.h"

namespace strata {
namespace {

const char* kGolden = STRATA_SOURCE_DIR "/tests/golden/optim/adamw.safetensors";

OptimConfig config_from_json(const nlohmann::json& j) {
  OptimConfig c;
  c.lr = j.at("lr");
  c.min_lr = j.at("min_lr");
  c.warmup_steps = j.at("warmup_steps");
  c.decay_fraction = j.at("decay_fraction");
  const std::string s = j.at("schedule");
  c.schedule = s == "constant" ? LrSchedule::kConstant
               : s == "wsd"    ? LrSchedule::kWsd
                               : LrSchedule::kCosine;
  return c;
}

// Same numbers as transformers to within a few ulp of the peak lr (HF scales lr by a factor, we
// interpolate between lr and min_lr). first_step: where the comparison starts.
void expect_matches_hf(const std::string& name, int64_t first_step) {
  auto f = SafetensorsFile::open(kGolden);
  ASSERT_TRUE(f.ok()) << f.status();
  const auto it = f->metadata().find("schedule." + name);
  ASSERT_NE(it, f->metadata().end()) << name;
  const nlohmann::json j = nlohmann::json::parse(it->second);
  const OptimConfig cfg = config_from_json(j.at("config"));
  const int64_t total = j.at("total_steps");
  const nlohmann::json& hf = j.at("lr");
  ASSERT_EQ(static_cast<int64_t>(hf.size()), total);
  for (int64_t s = first_step; s < total; ++s) {
    EXPECT_NEAR(lr_at(cfg, s, total), hf[s].get<double>(), 4e-16 * cfg.lr)
        << name << " step " << s << " (" << j.at("hf").get<std::string>() << ")";
  }
}

TEST(ScheduleGolden, CosineWithMinLrMatchesTransformers) { expect_matches_hf("cosine_min_lr", 0); }
TEST(ScheduleGolden, CosineToZeroMatchesTransformers) { expect_matches_hf("cosine", 0); }
TEST(ScheduleGolden, ConstantWithWarmupMatchesTransformers) { expect_matches_hf("constant", 0); }
TEST(ScheduleGolden, WsdMatchesTransformers) { expect_matches_hf("wsd", 0); }
TEST(ScheduleGolden, WsdWithMinLrMatchesTransformersAfterWarmup) {
  // HF's wsd warmup rises from min_lr, ours from 0 (schedule.h); from the end of warmup on they
  // agree.
  expect_matches_hf("wsd_min_lr", 5);
}

OptimConfig make(LrSchedule s, int64_t warmup, double min_lr = 0.1) {
  OptimConfig c;
  c.lr = 1.0;
  c.min_lr = min_lr;
  c.schedule = s;
  c.warmup_steps = warmup;
  c.decay_fraction = 0.2;
  return c;
}

TEST(Schedule, WarmupIsLinearFromZero) {
  for (LrSchedule s : {LrSchedule::kConstant, LrSchedule::kCosine, LrSchedule::kWsd}) {
    const OptimConfig c = make(s, 4);
    EXPECT_EQ(lr_at(c, 0, 100), 0.0);
    EXPECT_EQ(lr_at(c, 1, 100), 0.25);
    EXPECT_EQ(lr_at(c, 3, 100), 0.75);
    EXPECT_EQ(lr_at(c, 4, 100), 1.0);  // the first step after warmup has the peak lr
  }
}

TEST(Schedule, ConstantHoldsLrForever) {
  const OptimConfig c = make(LrSchedule::kConstant, 0);
  for (int64_t s : {0, 1, 99, 100, 1000}) EXPECT_EQ(lr_at(c, s, 100), 1.0);
}

TEST(Schedule, CosineFallsToMinLr) {
  const OptimConfig c = make(LrSchedule::kCosine, 10);
  EXPECT_EQ(lr_at(c, 10, 110), 1.0);
  EXPECT_NEAR(lr_at(c, 60, 110), 0.55, 1e-15);  // halfway: the mean of lr and min_lr
  double prev = 2.0;
  for (int64_t s = 10; s < 110; ++s) {
    const double lr = lr_at(c, s, 110);
    EXPECT_LT(lr, prev);
    EXPECT_GT(lr, 0.1);  // the last step is one short of min_lr, as in HF
    prev = lr;
  }
  EXPECT_EQ(lr_at(c, 110, 110), 0.1);
  EXPECT_EQ(lr_at(c, 500, 110), 0.1);  // past the end: min_lr, not HF's second cosine lobe
}

TEST(Schedule, WsdHoldsThenDecaysLinearly) {
  const OptimConfig c = make(LrSchedule::kWsd, 5);
  EXPECT_EQ(wsd_decay_steps(c, 100), 20);
  for (int64_t s = 5; s < 80; ++s) EXPECT_EQ(lr_at(c, s, 100), 1.0) << s;
  EXPECT_EQ(lr_at(c, 80, 100), 1.0);  // decay step 0 of 20
  EXPECT_NEAR(lr_at(c, 90, 100), 0.55, 1e-15);
  EXPECT_NEAR(lr_at(c, 99, 100), 0.1 + 0.9 / 20, 1e-15);
  EXPECT_EQ(lr_at(c, 100, 100), 0.1);
}

TEST(Schedule, WsdDecayStepsRoundAndFitAfterWarmup) {
  OptimConfig c = make(LrSchedule::kWsd, 0);
  c.decay_fraction = 0.1;
  EXPECT_EQ(wsd_decay_steps(c, 15), 2);  // 1.5 rounds half away from zero
  EXPECT_EQ(wsd_decay_steps(c, 14), 1);
  c.decay_fraction = 1.0;
  c.warmup_steps = 30;
  EXPECT_EQ(wsd_decay_steps(c, 100), 70);  // no more than the steps after warmup
  EXPECT_EQ(lr_at(c, 30, 100), 1.0);
  c.decay_fraction = 0.0;
  EXPECT_EQ(wsd_decay_steps(c, 100), 0);
  EXPECT_EQ(lr_at(c, 99, 100), 1.0);  // no decay: lr to the end
}

TEST(Schedule, WarmupLongerThanTheRun) {
  const OptimConfig c = make(LrSchedule::kCosine, 20);
  EXPECT_EQ(lr_at(c, 5, 10), 0.25);
}

}  // namespace
}  // namespace strata
