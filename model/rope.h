// Rotary position embedding tables in Hugging Face's layout (REFERENCE.md section 1):
// inv_freq_i = theta^(-2i/D), optionally rescaled by Llama-3's rope_scaling, then
// cos/sin (max_pos, D/2) of position * inv_freq in fp32. The rotation itself is the kernel
// rope_apply_f32 (kernels/ops.h).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace strata {

struct RopeTables {
  int64_t max_pos = 0, half = 0;  // half = D / 2
  std::vector<float> inv_freq;    // (D/2,)
  Tensor cos, sin;                // (max_pos, D/2) fp32, on the model's device

  void build(const ModelConfig& config);  // on the CPU
  void to(Device device);
};

// inv_freq as transformers computes it for `config` (default or llama3 scaling).
std::vector<float> rope_inv_freq(const ModelConfig& config);

}  // namespace strata
