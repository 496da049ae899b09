// Transformer: the decoder-only (MoE) model assembled from ModelConfig, as a pipeline stage: a
// contiguous range of blocks, plus the embedding when it is the first stage and the final norm,
// LM head and loss when it is the last. A single process holds one stage covering everything.
//
//   forward   tokens (B, T) [first stage] or hidden (N, C)  ->  loss [last] or hidden (N, C)
//   backward  1/denominator [last] or d hidden (N, C)       ->  d hidden (N, C) [not first]
//
// The backward is split as a zero-bubble schedule needs: backward_input computes activation
// gradients and queues every weight-gradient GEMM on the micro-batch's WeightGrads;
// backward_weight runs them. backward() does both.
//
// The loss is the sum of token cross-entropies divided by a denominator the caller passes: the
// number of target tokens in the whole global batch (all ranks, all micro-batches), so that
// gradient accumulation and the layout never change the loss (REFERENCE.md section 1).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/param.h"
#include "model/rope.h"

namespace strata {

// One micro-batch of B rows of T tokens.
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;     // (B*T) input ids
  std::vector<int32_t> targets;    // (B*T) id to predict at each position, or -1 for no loss
  std::vector<int32_t> positions;  // (B*T) RoPE positions; empty = 0..T-1 in every row
  std::vector<int32_t> key_start;  // (B) first non-padding token of each row; empty = 0
  float logit_scale = 1.0f;        // logits are multiplied by this before the loss: 1 / temperature

  // Fills positions/key_start defaults; CHECKs sizes and token ranges.
  void finalize(int64_t vocab_size);
  int64_t n_targets() const;
};

// Which part of the model this process holds: blocks [first_block, last_block), or with an
// interleaved pipeline several such chunks (virtual stages), each run by its own forward and
// backward calls. The embedding belongs to chunk 0, the final norm and head to the last chunk.
struct BlockRange {
  int64_t first = 0, last = 0;
};
struct StageSpec {
  int64_t first_block = 0, last_block = -1;  // [first, last); -1 = n_layers
  bool has_embedding = true, has_head = true;
  std::vector<BlockRange> chunks;  // when set, replaces [first_block, last_block): ascending, disjoint
};

// What one micro-batch's forward keeps for its backward.
struct Activations {
  const Batch* batch = nullptr;
  int chunk = 0;                   // which of the stage's chunks ran the forward
  std::vector<BlockSaved> blocks;
  Tensor final_in;                 // (N, C) input of the final norm
  Tensor final_rstd;               // (N,)
  Tensor final_out;                // (N, C) normalised hidden, input of the head
  Tensor logits;                   // (N, V); overwritten by dlogits in backward
  Tensor lse;                      // (N,)
  double loss_sum = 0.0;           // sum of token cross-entropies of this micro-batch
  double aux_loss = 0.0;           // auxiliary balance losses of this micro-batch, weighted
  double loss_denominator = 1.0;
  // log p(target) of every token under softmax(logits * logit_scale), 0 where there is no target:
  // (N,), filled by the last stage's forward (the policy's log-probs for RL losses).
  std::vector<float> token_logp;
  // Optional, (N,): d(loss)/d(token_logp), set by the caller between forward and backward for a
  // loss defined on log-probs (GRPO). Empty: the loss is the mean cross-entropy forward returned.
  std::vector<float> token_logp_grad;
  WeightGrads weight_grads;
  // The batch's ids on the model's device (copied by forward): (N,) tokens, targets, positions;
  // (B,) key_start.
  Tensor tokens, targets, positions, key_start;
};

// Bytes one micro-batch's forward keeps for its backward (the activation memory of a step is
// this times the micro-batches alive at once); fp8.cache_activations shrinks it.
int64_t activation_bytes(const Activations& acts);

// Router statistics of one MoE block in one forward, for logging and balancing.
struct MoeStats {
  int64_t block = 0;
  std::vector<int64_t> load;  // (E,) tokens per expert
  int64_t dropped = 0;
};

class Transformer {
 public:
  // experts: which routed experts of every MoE block this rank holds (expert parallelism); the
  // expert group must then be set with set_expert_group before the first forward.
  Transformer(const ModelConfig& config, const PrecisionConfig& precision, StageSpec stage = {},
              ExpertShard experts = {});
  void set_expert_group(Communicator* ep);
  // parallel.dispatch_fp8 for every MoE block (model/moe.h), whatever the layout.
  void set_dispatch_fp8(bool on);
  // The MoE all-to-all traffic of every block since the last call (summed), then zeroed.
  MoeCommStats take_moe_comm_stats();
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return config_; }
  const StageSpec& stage() const { return stage_; }
  int n_chunks() const { return static_cast<int>(stage_.chunks.size()); }
  // The whole model in one chunk (decoding, logits(), Hugging Face export).
  bool whole() const;
  // Every parameter this stage holds, in a fixed order, with global names.
  const ParamList& params() const { return params_; }
  Param* find_param(const std::string& name) const;
  void init(uint64_t seed);

  // Moves the parameters (values and gradients), the RoPE tables and every LinearGemm to
  // `device`: forward and backward then run there, activations included, with each batch's ids
  // copied over per call; logits and parameters stay there (read them with Tensor::to). Call it
  // after init() or loading, which write parameters through host pointers. On a GPU so far: dense
  // blocks (MoE blocks are refused: their routing bookkeeping is host code), no decoding (#11).
  void to_device(Device device);
  Device device() const { return device_; }

  // Forward of chunk `chunk` of this stage. The first (chunk 0 with the embedding) reads
  // batch.tokens; others read `input` (N, C). The last (last chunk with the head) computes the loss
  // (returned: loss_sum / loss_denominator + aux); others write `output` (N, C) and return aux.
  // aux_weight scales the auxiliary losses (e.g. 1 / micro-batches per step).
  double forward(const Batch& batch, Activations& acts, double loss_denominator, const float* input = nullptr,
                 float* output = nullptr, double aux_weight = 1.0, int chunk = 0);
  // Last stage: d_output ignored (the loss seeds the gradient). Others: d_output (N, C).
  // Not first stage: d_input (N, C) receives the gradient of the stage input.
  // `ready` (optional): called with each group of parameters whose gradient contribution from this
  // micro-batch is complete, in backward order (data parallelism starts their reductions; the
  // weight-gradient GEMMs then run part by part instead of all at the end: same sums).
  using GradsReadyFn = std::function<void(const std::vector<Param*>&)>;
  void backward_input(Activations& acts, const float* d_output = nullptr, float* d_input = nullptr,
                      const GradsReadyFn* ready = nullptr);
  void backward_weight(Activations& acts);
  // Between backward_input and a deferred backward_weight (ZB-H1): frees every saved tensor but
  // the weight-gradient GEMMs' inputs, so a micro-batch waiting for its W holds only those.
  void release_after_backward_input(Activations& acts) const;
  void backward(Activations& acts, const float* d_output = nullptr, float* d_input = nullptr,
                const GradsReadyFn* ready = nullptr) {
    backward_input(acts, d_output, d_input, ready);
    backward_weight(acts);
  }

  // The parameters of chunk `chunk`, in the order its backward finishes their gradients.
  const std::vector<std::vector<Param*>>& grad_segments(int chunk) const {
    return grad_segments_[static_cast<size_t>(chunk)];
  }

  // Called between blocks of every forward, backward and decode (null: nothing). Open MPI moves a
  // large message only while its sender or receiver is inside MPI: a pipeline stage polls its
  // messages in flight here, so they move while it computes.
  void set_progress(std::function<void()> fn) { progress_ = std::move(fn); }

  // Every LinearGemm of this stage, in a fixed order (FP8 scaling state, checkpoints).
  std::vector<LinearGemm*> linear_gemms();
  // Whoever changes parameter values (optimizer step, loading, tests poking weights) calls this:
  // LinearGemms reuse their low-precision weight copies only while the epoch is unchanged.
  void mark_weights_changed() { ++weights_epoch_; }

  // Logits (B*T, V) of a full forward without keeping activations (evaluation, tests), as the
  // loss sees them: multiplied by batch.logit_scale.
  Tensor logits(const Batch& batch);

  // Per-MoE-block statistics of the last forward into `acts`.
  std::vector<MoeStats> moe_stats(const Activations& acts) const;
  // Zero loads for every MoE block of this stage: what a rank that ran no micro-batch contributes
  // to the step's global expert loads (the same layout moe_stats() returns).
  std::vector<MoeStats> empty_moe_stats() const;
  // Aux-loss-free balancing step for every sigmoid-scored MoE block, from global loads (blocks
  // this stage does not hold are skipped).
  void update_router_biases(const std::vector<MoeStats>& global_stats, float gamma);

  // ---- decoding with a KV cache ----
  // One cache per block this stage holds (every chunk's), in block order.
  std::vector<KVCache> make_kv_caches(int64_t B, int64_t capacity) const;
  // The whole model: tokens/positions (B*T_new); key_start (B). Returns logits (B*T_new, V), or
  // only the last position of each row (B, V) when last_only.
  Tensor decode(std::vector<KVCache>& caches, const std::vector<int32_t>& tokens,
                const std::vector<int32_t>& positions, const std::vector<int32_t>& key_start, int64_t B,
                int64_t T_new, bool last_only);
  // One chunk of a pipeline stage: chunk 0 of the first stage embeds `tokens`, others read
  // `input` (B*T_new, C); the last chunk of the last stage returns the logits as decode() does,
  // others write `output` (B*T_new, C) and return an undefined Tensor.
  Tensor decode_chunk(std::vector<KVCache>& caches, int chunk, const std::vector<int32_t>& tokens,
                      const std::vector<int32_t>& positions, const std::vector<int32_t>& key_start, int64_t B,
                      int64_t T_new, bool last_only, const float* input, float* output);

  std::vector<Block>& blocks() { return blocks_; }

 private:
  void embed(const int32_t* tokens, int64_t N, float* out) const;
  // hidden (N, C) -> final norm -> logits (N, V), into acts when given.
  void head_forward(const float* hidden, int64_t N, float* logits, Activations* acts);

  ModelConfig config_;
  StageSpec stage_;
  RopeTables rope_;
  Param embed_;       // (V, C)
  std::vector<Block> blocks_;
  Param final_norm_;  // (C,)
  Param head_;        // (V, C); unused when tied
  LinearGemm gemm_head_;
  bool tied_ = false;
  int64_t weights_epoch_ = 0;  // see mark_weights_changed(); LinearGemms hold a pointer to it
  Device device_ = Device::cpu();  // where parameters live and forward/backward compute (to_device)
  std::function<void()> progress_;
  ParamList params_;
  std::vector<std::pair<size_t, size_t>> chunk_blocks_;  // (n_chunks,) [begin, end) into blocks_
  // Per chunk, its parameters in the order its backward finishes them.
  std::vector<std::vector<std::vector<Param*>>> grad_segments_;
};

}  // namespace strata
