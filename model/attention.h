// Causal grouped-query self-attention with Hugging Face-layout RoPE, optional QKV bias (Qwen2)
// and per-head q/k RMSNorm (Qwen3), forward directly above backward, plus the KV-cache decode
// step that generation uses. The attention core (softmax(QK^T) V) is the kernel
// attention_forward_f32; the four projections go through LinearGemm (precision policy).
//
// Glossary: B batch rows, T tokens per row, N = B*T, C d_model, Hq query heads, Hkv key/value
// heads, D head size, S_cap the KV cache's capacity.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "kernels/precision/linear.h"
#include "model/config.h"
#include "model/param.h"
#include "model/rope.h"
#include "model/weight_grads.h"

namespace strata {

struct Attention {
  int64_t C = 0, Hq = 0, Hkv = 0, D = 0;
  bool qkv_bias = false, qk_norm = false;
  float norm_eps = 1e-6f;

  Param wq;      // (Hq*D, C)
  Param wk, wv;  // (Hkv*D, C)
  Param wo;      // (C, Hq*D)
  Param bq;      // (Hq*D,)   when qkv_bias
  Param bk, bv;  // (Hkv*D,)  when qkv_bias
  Param q_norm;  // (D,)      when qk_norm
  Param k_norm;  // (D,)      when qk_norm
  LinearGemm gemm_q, gemm_k, gemm_v, gemm_o;

  // prefix: the global name of this module's parameters, e.g. "layers.3.attn.".
  void build(const ModelConfig& config, const LinearPolicy& policy, const std::string& prefix);
  void linear_gemms(std::vector<LinearGemm*>& out);
  void collect(ParamList& out, const std::string& prefix);
};

// Activations one forward keeps for its backward.
struct AttentionSaved {
  SavedInput x;         // (N, C) the input (already normalised by the block), for the q/k/v weight gradients
  Tensor q_raw, k_raw;  // (N, Hq*D), (N, Hkv*D) projections before q/k norm (when qk_norm)
  Tensor q_rstd, k_rstd;  // (N*Hq,), (N*Hkv,)
  Tensor q, k, v;       // (N, Hq*D), (N, Hkv*D), (N, Hkv*D) after norm and RoPE: what the core saw
  Tensor att;           // (N, Hq*D) core output, input of wo
  Tensor lse;           // (B, Hq, T)
  Tensor pos;           // (N,) int32 positions
  Tensor key_start;     // (B,) int32 first valid key per row
  const RopeTables* rope = nullptr;
  int64_t B = 0, T = 0;
};

// out: (N, C); x: (N, C); pos: (N,) positions; key_start: (B,) first non-padding key of each row
// (nullptr = 0). Overwrites out.
void attention_forward(Attention& a, AttentionSaved& s, float* out, const float* x, const int32_t* pos,
                       const int32_t* key_start, int64_t B, int64_t T, const RopeTables& rope);
// dx: (N, C) overwritten; dout: (N, C). Parameter gradients of the projections are queued on
// `wg` (run it for the full backward); bias and norm gradients accumulate at once.
void attention_backward(Attention& a, AttentionSaved& s, float* dx, const float* dout, WeightGrads& wg);

// One layer's KV cache: k, v (B, S_cap, Hkv, D); `length` valid positions per row (all rows
// advance together; left padding is masked with key_start).
struct KVCache {
  Tensor k, v;
  int64_t B = 0, S_cap = 0, length = 0;
  void allocate(int64_t batch, int64_t capacity, int64_t Hkv, int64_t D);
};

// Decoding step over T_new new tokens per row (T_new = prompt length for prefill, 1 per step):
// appends their keys/values to the cache and attends over everything cached so far.
// out: (B*T_new, C); x: (B*T_new, C); pos: (B*T_new,); key_start: (B,).
void attention_decode(Attention& a, KVCache& cache, float* out, const float* x, const int32_t* pos,
                      const int32_t* key_start, int64_t B, int64_t T_new, const RopeTables& rope);

}  // namespace strata
