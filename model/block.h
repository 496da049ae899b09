// One pre-norm transformer block: h = x + attn(norm1(x)); y = h + ffn(norm2(h)), where ffn is
// the dense SwiGLU MLP or the MoE block. Forward above backward; with recompute on, the forward
// keeps only its input and the backward re-runs it first (activation recomputation).
//
// Glossary: B rows, T tokens, N = B*T, C d_model.
#pragma once

#include <cstdint>
#include <string>

#include "model/attention.h"
#include "model/mlp.h"
#include "model/moe.h"

namespace strata {

struct Block {
  int64_t index = 0;
  bool is_moe = false;
  bool recompute = false;
  float norm_eps = 1e-6f;
  Param attn_norm;  // (C,)
  Param mlp_norm;   // (C,)
  Attention attn;
  Mlp mlp;  // dense blocks
  Moe moe;  // MoE blocks

  void build(const ModelConfig& config, const LinearPolicy& policy, int64_t block_index, ExpertShard experts = {});
  void linear_gemms(std::vector<LinearGemm*>& out);
  void collect(ParamList& out, const std::string& prefix);
};

struct BlockSaved {
  Tensor x;                 // (N, C) block input
  Tensor rstd1;             // (N,) attention-norm statistics (its output is saved by attn)
  AttentionSaved attn;
  Tensor h;                 // (N, C) after the attention residual
  Tensor rstd2;             // (N,) MLP-norm statistics (its output is saved by mlp / moe)
  MlpSaved mlp;
  MoeSaved moe;
  const int32_t* pos = nullptr;        // (N,) the batch's positions (owned by the Batch)
  const int32_t* key_start = nullptr;  // (B,)
  const RopeTables* rope = nullptr;
  int64_t B = 0, T = 0;
  bool complete = false;    // false when recompute dropped the inner activations
};

// y: (N, C) overwritten; x: (N, C); pos: (N,); key_start: (B,) or nullptr.
void block_forward(Block& blk, BlockSaved& s, float* y, const float* x, const int32_t* pos,
                   const int32_t* key_start, int64_t B, int64_t T, const RopeTables& rope);
// dx: (N, C) overwritten; dy: (N, C). Weight-gradient GEMMs are queued on `wg`.
void block_backward(Block& blk, BlockSaved& s, float* dx, const float* dy, WeightGrads& wg);

// Decoding: the same block over T_new new tokens per row with a KV cache; keeps nothing else.
void block_decode(Block& blk, KVCache& cache, float* y, const float* x, const int32_t* pos,
                  const int32_t* key_start, int64_t B, int64_t T_new, const RopeTables& rope);

}  // namespace strata
