// OptimConfig: AdamW with decoupled weight decay (PyTorch convention), the learning-rate
// schedule and global-norm clipping (REFERENCE.md section 2). The optimizer itself lands with
// the Training issue.
#pragma once

#include <cstdint>

#include "core/config_schema.h"

namespace strata {

enum class LrSchedule { kConstant, kCosine, kWsd };
enum class MomentDType { kF32, kBF16 };

struct OptimConfig {
  double lr = 3e-4;
  double min_lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_norms_biases = false;
  bool decay_embeddings = false;
  double grad_clip = 1.0;
  LrSchedule schedule = LrSchedule::kCosine;
  int64_t warmup_steps = 0;
  double decay_fraction = 0.2;
  MomentDType moments_dtype = MomentDType::kF32;

  template <class V>
  void visit(V& v) {
    v.field("lr", lr, "peak learning rate", Range::above(0));
    v.field("min_lr", min_lr, "learning rate at the end of cosine / wsd decay", Range::at_least(0));
    v.field("beta1", beta1, "AdamW first-moment decay", Range::between(0, 0.999999));
    v.field("beta2", beta2, "AdamW second-moment decay", Range::between(0, 0.999999));
    v.field("eps", eps, "AdamW epsilon", Range::above(0));
    v.field("weight_decay", weight_decay, "decoupled weight decay (scaled by lr)", Range::at_least(0));
    v.field("decay_norms_biases", decay_norms_biases, "apply weight decay to norm weights and biases too");
    v.field("decay_embeddings", decay_embeddings, "apply weight decay to the embedding too");
    v.field("grad_clip", grad_clip, "clip the global gradient norm to this; 0 = off", Range::at_least(0));
    v.choice("schedule", schedule, "learning-rate schedule after warmup",
             Choices<LrSchedule>{{"constant", LrSchedule::kConstant},
                                 {"cosine", LrSchedule::kCosine},
                                 {"wsd", LrSchedule::kWsd}});
    v.field("warmup_steps", warmup_steps, "linear warmup steps from 0 to lr", Range::at_least(0));
    v.field("decay_fraction", decay_fraction, "wsd: fraction of steps spent decaying at the end", Range::between(0, 1));
    v.choice("moments_dtype", moments_dtype, "storage of AdamW moments",
             Choices<MomentDType>{{"fp32", MomentDType::kF32}, {"bf16", MomentDType::kBF16}});
  }
  void validate(ConfigChecker& c) const;
};

}  // namespace strata
