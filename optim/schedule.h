// Learning-rate schedules (REFERENCE.md section 2): constant, linear warmup + cosine to min_lr,
// warmup-stable-decay. A schedule is a pure function of (config, step, total steps), so a resumed
// run needs only the step count. Formulas follow Hugging Face transformers' schedule functions
// (transformers/optimization.py, 5.23), which tests/golden/optim/ holds curves of.
//
// With W = warmup_steps, N = total_steps, s = step (0-based: the first update uses lr_at(0)):
//   warmup (s < W), every schedule:  lr * s / max(1, W)   (so the first update has lr 0 when W > 0,
//                                     as in HF; the warmup ends at lr for step W)
//   constant:  lr                                        = get_constant_schedule_with_warmup
//   cosine:    p = (s - W) / max(1, N - W)
//              min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * p))
//                                        = get_cosine_with_min_lr_schedule_with_warmup(min_lr=...)
//   wsd:       D = clamp(round(decay_fraction * N), 0, N - W) decay steps at the end, the
//              S = N - W - D steps before them at lr; in the decay, p = (s - W - S) / max(1, D) and
//              min_lr + (lr - min_lr) * (1 - p)      = get_wsd_schedule(decay_type="linear",
//                                                      num_decay_steps=D, min_lr_ratio=min_lr/lr)
//              except that HF's wsd warmup starts at min_lr (min_lr_ratio * lr), ours at 0 like the
//              other schedules ("linear warmup steps from 0 to lr", optim/config.h).
// As in HF the last step (s = N - 1) is one step short of min_lr. Steps at or past N give min_lr
// for cosine and wsd (HF's cosine would climb back up) and lr for constant.
// The HF formulas scale lr by a factor (lr * (f * (1 - r) + r), r = min_lr / lr); ours interpolate
// min_lr + (lr - min_lr) * f: the same number to within an ulp or two.
#pragma once

#include <cstdint>

#include "optim/config.h"

namespace strata {

// Learning rate for optimizer step `step` (0-based) of a run of `total_steps` (>= 1) steps.
double lr_at(const OptimConfig& cfg, int64_t step, int64_t total_steps);

// Number of decay steps at the end of a wsd run of `total_steps`: round(decay_fraction * total),
// at most total - warmup_steps (and at least 0).
int64_t wsd_decay_steps(const OptimConfig& cfg, int64_t total_steps);

}  // namespace strata
