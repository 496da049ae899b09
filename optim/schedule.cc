// Learning-rate schedules; the formulas and their Hugging Face counterparts are in schedule.h.
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/check.h"

namespace strata {

int64_t wsd_decay_steps(const OptimConfig& cfg, int64_t total_steps) {
  // llround, not a cast: 0.2 * 50 must be 10 even if the product lands a hair below it.
  const int64_t decay = std::llround(cfg.decay_fraction * static_cast<double>(total_steps));
  const int64_t room = std::max<int64_t>(0, total_steps - cfg.warmup_steps);
  return std::clamp<int64_t>(decay, 0, room);
}

double lr_at(const OptimConfig& cfg, int64_t step, int64_t total_steps) {
  CHECK_GE(step, 0) << "lr_at: negative step";
  CHECK_GE(total_steps, 1) << "lr_at: a run needs at least one step";
  const int64_t warmup = cfg.warmup_steps;
  if (step < warmup) {
    return cfg.lr * (static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup)));
  }
  switch (cfg.schedule) {
    case LrSchedule::kConstant:
      return cfg.lr;
    case LrSchedule::kCosine: {
      if (step >= total_steps) return cfg.min_lr;
      const double progress = static_cast<double>(step - warmup) /
                              static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
      const double factor = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      return cfg.min_lr + (cfg.lr - cfg.min_lr) * factor;
    }
    case LrSchedule::kWsd: {
      if (step >= total_steps) return cfg.min_lr;
      const int64_t decay = wsd_decay_steps(cfg, total_steps);
      const int64_t decay_start = total_steps - decay;  // = warmup + stable steps
      if (step < decay_start) return cfg.lr;
      const double progress = static_cast<double>(step - decay_start) /
                              static_cast<double>(std::max<int64_t>(1, decay));
      return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - progress);
    }
  }
  CHECK(false) << "lr_at: unknown schedule";
  return 0.0;
}

}  // namespace strata
