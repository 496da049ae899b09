#include "model/rope.h"

#include <cmath>

#include "kernels/ops.h"

namespace strata {

std::vector<float> rope_inv_freq(const ModelConfig& config) {
  const int64_t D = config.resolved_head_dim();
  std::vector<float> inv(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    // transformers: 1 / base ** (arange(0, D, 2).float() / D), all in fp32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(D);
    inv[i] = 1.0f / std::pow(static_cast<float>(config.rope_theta), exponent);
  }
  const RopeScalingConfig& rs = config.rope_scaling;
  if (rs.type == RopeScalingType::kLlama3) {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;  // high frequency: unchanged
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rs.factor);  // low frequency: scaled down
      } else {  // in between: interpolate smoothly
        const double smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

void RopeTables::build(const ModelConfig& config) {
  inv_freq = rope_inv_freq(config);
  half = static_cast<int64_t>(inv_freq.size());
  max_pos = config.max_seq_len;
  cos = Tensor::empty({max_pos, half}, DType::kF32);
  sin = Tensor::empty({max_pos, half}, DType::kF32);
  rope_tables_f32(cos.f32(), sin.f32(), inv_freq.data(), max_pos, 2 * half);
}

void RopeTables::to(Device device) {
  cos = cos.to(device);
  sin = sin.to(device);
}

}  // namespace strata
