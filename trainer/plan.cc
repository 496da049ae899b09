// The memory and communication model of `strata plan`. Every figure comes from shapes; nothing
// here allocates a weight or runs a kernel. Each formula mirrors the code named beside it, so a
// change there is a change here (tests/trainer/plan_test.cc catches a drift: it trains the tiny
// configs and compares with tensor_memory_stats()).
//
// Glossary: B = data.micro_batch_size rows of T = data.seq_len tokens, N = B*T, C d_model, V vocab,
// L blocks, Hq / Hkv heads of size D, qd = Hq*D, kd = Hkv*D, F ffn_hidden, E routed experts,
// K top_k, Fe expert hidden, Fs shared-expert hidden, M dispatched expert slots: M = N*K, or
// with capacity_factor cf > 0 at most min(N*K, E * ceil(cf*N*K/E)) (the bound is used).
// Sizes below are in elements of 4 bytes (fp32; int32 positions count the same).
//
// Parameters (Transformer's constructor, model/*.cc::build), P in all, P_t of them trained:
//   embed V*C; per block: attn_norm, mlp_norm C each; wq qd*C, wk, wv kd*C each, wo C*qd;
//   qkv_bias: qd + 2*kd; qk_norm: 2*D; dense MLP 3*F*C; MoE: router E*C, sigmoid scoring a
//   balancing bias E (not trained), experts 3*E*Fe*C, shared experts 3*Fs*C, shared gate C;
//   final_norm C; head V*C unless tied.
//   parameters = 4*P;  gradients (dp 1) = 4*P_t  (Param::allocate: a grad beside each value).
// Buckets (dp > 1, parallel/grad_buckets.cc): the trained gradients in reverse parameter order;
//   each starts at a multiple of 16 elements; a bucket closes once it holds
//   cap = bucket_mb * 2^20 / 4 elements and is padded to a multiple of 16*dp: P_b.
//   gradients = 4 * sum P_b; ZeRO-1 adds grad_shards = 4 * sum P_b / dp.
//   startup_peak = 4*P + 4*P_t + gradients + grad_shards (old gradients and buckets both alive).
// Optimizer (optim/adamw.cc, optim/distributed_optimizer.cc), s = 4 (fp32) or 2 (bf16 moments):
//   zero 0 (or dp 1): 2*s*P_t.  ZeRO-1, dp rank r: 2*s * (elements of trained tensors inside
//   [r*P_b/dp, (r+1)*P_b/dp) of every bucket); the plan reports the rank that holds the most.
// GRPO with grpo.beta > 0 keeps a reference model: 4*P + 4*P_t.
//
// Activations one micro-batch's forward keeps (model/block.cc, attention.cc, mlp.cc, moe.cc,
// transformer.cc), = activation_bytes() of its Activations:
//   block: x N*C + rstd1 N + h N*C + rstd2 N
//     attention: pos N + key_start B + q N*qd + k, v 2*N*kd + input N*C (*) + att N*qd + lse N*Hq
//                [qk_norm: q_raw N*qd + k_raw N*kd + rstds N*(Hq + Hkv)]
//     dense MLP: gate, up 2*N*F + input N*C (*) + act N*F (*)
//     MoE:       x N*C + probs N*E + gate, up 2*M*Fe + ye M*C + inputs M*C (*) + act M*Fe (*)
//                [shared: y N*C + a dense MLP with Fs]; outside Tensors: topk_idx, topk_w,
//                slot_of 3*N*K + slot_token M [+ shared gate N]
//   model.recompute full: a block keeps its input x N*C only.
//   head: final_in N*C + final_rstd N + final_out N*C + logits N*V + lse N.
//   the batch's ids on the model's device: tokens, targets, positions 3*N + key_start B.
//   (*) a linear layer's saved input: fp32 rows*cols, or (fp8 with fp8.cache_activations, the
//   module not kept in high precision) rows*cols bytes of codes + 4 bytes per scale (one per
//   1x128 tile; one per tensor with tensorwise_delayed, counted for all E experts) outside
//   Tensor storage.
// Activation peak: the allocation timeline of one micro-batch, replayed (MicroBatchTimeline):
//   forward: two hidden buffers 2*N*C + the saved tensors so far + the block's temporaries
//     (normed input N*C; MLP act N*F; MoE logits N*E, gathered input M*C, act M*Fe), then the
//     per-token losses N;
//   backward: everything saved + dx, dprev 2*N*C + the block's temporaries (dxn, dh 2*N*C; MLP
//     dact N*F, tmp N*C; MoE shared dy, dxs 2*N*C, dact M*Fe, dxe, tmp 2*M*C, dprobs N*E,
//     dx_router N*C; attention datt N*qd, tmp N*C, qk-norm clones N*(qd + kd)) + the operands of
//     queued weight-gradient GEMMs (attention N*C + N*qd + 2*N*kd; MLP N*C + 2*N*F; MoE M*C +
//     2*M*Fe + N*E [+ shared N*C + 2*N*Fs]). The backward of a step's last micro-batch runs each
//     block's queue when the block is done; earlier ones queue every block until backward_weight.
//     With recompute the backward re-runs each block's forward (+ y N*C) and keeps what it saved.
//   activations_peak = the larger of the two kinds the rank runs (both when it runs > 1
//   micro-batch per step).
// allocator_peak = max(startup_peak, parameters + gradients + optimizer + grad_shards +
//   reference + activations_peak): what tensor_memory_stats().peak_bytes reaches in training
//   (the end-of-run evaluation and checkpoint allocate less).
// Outside Tensor storage: the saved host bytes above, and lowp_weights = 4 * (N_out * K_in) of
// every LinearGemm running in bf16 or fp8 (its cached rounded weight).
//
// Communication per rank per step (dp > 1), ring collectives over n bytes: all-reduce sends
// 2*(dp-1)/dp * n, reduce-scatter and all-gather (dp-1)/dp * n each:
//   zero 0: all-reduce of 4 * sum P_b;  ZeRO-1: reduce-scatter + all-gather of 4 * sum P_b;
//   pretrain / sft scalars (all-reduce): 8 * (3 + E per MoE block) (loss, aux, fp8 events,
//   expert loads), 16 (skip flag, ZeRO-1 squared norm), fp8 tensorwise_delayed: 12 per fp8 GEMM.
#include "trainer/plan.h"
#include "trainer/pipeline_stage.h"

#include <algorithm>
#include <cstdio>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "kernels/precision/linear.h"
#include "kernels/quant.h"
#include "model/hf.h"
#include "parallel/schedule.h"
#include "parallel/dims.h"
#include "trainer/run_common.h"

namespace strata {
namespace {

constexpr int64_t kF = 4;           // bytes per fp32 element (and int32)
constexpr int64_t kAlignElems = 16; // parallel/grad_buckets.cc

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The mode a LinearGemm of `kind` runs in (its constructor applies high_precision_modules and the
// router rule); building one allocates nothing.
PrecisionMode gemm_mode(const PrecisionConfig& p, const char* kind) { return LinearGemm(p, kind).mode(); }

// Bytes of a linear layer's saved input (SavedInput), over `pieces` inputs of `rows` in all.
struct SplitBytes {
  int64_t tensor = 0, host = 0;
};
SplitBytes saved_input(const PrecisionConfig& p, const char* kind, int64_t rows, int64_t cols, int64_t pieces = 1) {
  if (!(gemm_mode(p, kind) == PrecisionMode::kFp8 && p.fp8.cache_activations)) return {rows * cols * kF, 0};
  const int64_t scales = p.fp8.recipe == Fp8Recipe::kTensorwiseDelayed ? std::min(pieces, rows)
                                                                       : quant_tile_count(rows, cols, kTile1x128);
  return {0, rows * cols + scales * kF};
}

// Every LinearGemm of the model: module kind, weight (n_out, k_in), how many.
struct GemmShape {
  const char* kind;
  int64_t n, k, count;
};
std::vector<GemmShape> gemm_shapes(const ModelConfig& m) {
  const int64_t C = m.d_model, D = m.resolved_head_dim(), qd = m.n_heads * D, kd = m.n_kv_heads * D;
  std::vector<GemmShape> out;
  for (int64_t i = 0; i < m.n_layers; ++i) {
    out.insert(out.end(), {{"attention_proj", qd, C, 1}, {"attention_proj", kd, C, 2}, {"attention_proj", C, qd, 1}});
    if (!m.is_moe_block(i)) {
      out.insert(out.end(), {{"mlp", m.ffn_hidden, C, 2}, {"mlp", C, m.ffn_hidden, 1}});
      continue;
    }
    const int64_t E = m.moe.n_experts, Fe = m.moe.expert_ffn_hidden, Fs = m.resolved_shared_ffn_hidden();
    out.insert(out.end(), {{"router", E, C, 1}, {"experts", Fe, C, 2 * E}, {"experts", C, Fe, E}});
    if (m.moe.n_shared_experts > 0) out.insert(out.end(), {{"shared_experts", Fs, C, 2}, {"shared_experts", C, Fs, 1}});
  }
  out.push_back({"head", m.vocab_size, C, 1});
  return out;
}

// Replays the Tensor allocations of one micro-batch's forward and backward (the code paths named
// in the header comment, statement by statement) and records the peak.
class MicroBatchTimeline {
 public:
  MicroBatchTimeline(const ExperimentConfig& c, int64_t rows, int64_t seq_len) : m_(c.model), p_(c.precision) {
    B = rows;
    N = rows * seq_len;
    C = m_.d_model;
    V = m_.vocab_size;
    Hq = m_.n_heads;
    Hkv = m_.n_kv_heads;
    qd = Hq * m_.resolved_head_dim();
    kd = Hkv * m_.resolved_head_dim();
    E = m_.moe.n_experts;
    K = m_.moe.top_k;
    Fe = m_.moe.expert_ffn_hidden;
    Fs = m_.resolved_shared_ffn_hidden();
    M = N * K;
    if (m_.moe.capacity_factor > 0 && E > 0) {
      const int64_t cap = static_cast<int64_t>(std::ceil(m_.moe.capacity_factor * N * K / static_cast<double>(E)));
      M = std::min(M, E * cap);
    }
  }

  ActivationPlan run(bool per_segment) {
    now_ = peak_ = host_ = 0;
    const bool recompute = m_.recompute == Recompute::kFull;
    // Transformer::forward: the batch's ids on the model's device (tokens, targets, positions,
    // key_start), hidden buffers x and y, then every block, then the head.
    int64_t saved = alloc(3 * N + B);
    const int64_t x = alloc(N * C), y = alloc(N * C);
    for (int64_t i = 0; i < m_.n_layers; ++i) {
      const int64_t host_before = host_;
      const int64_t kept = block_forward(m_.is_moe_block(i), /*input_saved=*/false);
      if (recompute) {  // keeps its input only
        free(kept - N * C * kF);
        host_ = host_before;
        saved += N * C * kF;
      } else {
        saved += kept;
      }
    }
    saved += x + alloc(N * V) + alloc(N) + alloc(N * C) + alloc(N);  // final_in, logits, lse, final_out, rstd
    free(alloc(N));  // the per-token losses
    free(y);
    ActivationPlan out;
    out.saved_tensor = saved;
    out.saved_host = host_;

    // Transformer::backward_input.
    int64_t queued = 0, recomputed = 0;
    const int64_t dx = alloc(N * C);
    free(alloc(N * C));  // dnormed; the head's weight gradient reads saved tensors only
    const int64_t dprev = alloc(N * C);
    for (int64_t i = m_.n_layers; i-- > 0;) {
      const bool moe = m_.is_moe_block(i);
      if (recompute) {  // block_backward re-runs the forward into a scratch y, keeping what it saves
        const int64_t scratch = alloc(N * C);
        recomputed += block_forward(moe, /*input_saved=*/true);
        free(scratch);
      }
      const int64_t dxn = alloc(N * C), dh = alloc(N * C);
      int64_t held = moe ? moe_backward() : mlp_backward(m_.ffn_hidden);
      held += attention_backward();
      free(dxn + dh);
      if (per_segment) {
        free(held);  // finish_segment: the block's queue runs and lets go of its operands
      } else {
        queued += held;
      }
    }
    free(dx + dprev);
    free(queued);  // backward_weight
    free(saved + recomputed);  // the Activations go
    CHECK_EQ(now_, 0) << "plan: unbalanced activation timeline";
    out.peak_tensor = peak_;
    return out;
  }

 private:
  int64_t alloc(int64_t elements) {
    now_ += elements * kF;
    peak_ = std::max(peak_, now_);
    return elements * kF;
  }
  int64_t alloc_bytes(int64_t bytes) {
    now_ += bytes;
    peak_ = std::max(peak_, now_);
    return bytes;
  }
  void free(int64_t bytes) { now_ -= bytes; }
  // A SavedInput: Tensor bytes now, codes outside Tensor storage.
  int64_t save_input(const char* kind, int64_t rows, int64_t cols, int64_t pieces = 1) {
    const SplitBytes b = saved_input(p_, kind, rows, cols, pieces);
    host_ += b.host;
    return alloc_bytes(b.tensor);
  }

  // block_forward; returns the Tensor bytes the block keeps. input_saved: a recompute pass (the
  // block's input is already kept, so it is not copied again).
  int64_t block_forward(bool moe, bool input_saved) {
    int64_t kept = input_saved ? 0 : alloc(N * C);  // s.x
    const int64_t xn = alloc(N * C);
    kept += alloc(N) + alloc(N * C);                 // rstd1, h
    kept += attention_forward();
    kept += alloc(N);                                // rstd2
    kept += moe ? moe_forward() : mlp_forward("mlp", m_.ffn_hidden);
    free(xn);
    return kept;
  }

  int64_t attention_forward() {
    int64_t kept = alloc(N) + alloc(B) + alloc(N * qd) + alloc(N * kd) + alloc(N * kd);  // pos, key_start, q, k, v
    kept += save_input("attention_proj", N, C);
    if (m_.qk_norm) kept += alloc(N * qd) + alloc(N * kd) + alloc(N * Hq) + alloc(N * Hkv);
    kept += alloc(N * qd) + alloc(N * Hq);  // att, lse
    return kept;
  }

  int64_t mlp_forward(const char* kind, int64_t F) {
    int64_t kept = alloc(N * F) + alloc(N * F);  // gate, up
    const int64_t act = alloc(N * F);
    kept += save_input(kind, N, C) + save_input(kind, N, F);
    free(act);
    return kept;
  }

  int64_t moe_forward() {
    int64_t kept = alloc(N * C);  // s.x
    const int64_t logits = alloc(N * E);
    kept += alloc(N * E);  // probs
    host_ += (3 * N * K + M) * kF;  // topk_idx, topk_w, slot_of, slot_token
    const int64_t xe = alloc(M * C), act = alloc(M * Fe);
    kept += alloc(M * Fe) + alloc(M * Fe) + alloc(M * C);  // gate, up, ye
    kept += save_input("experts", M, C, E) + save_input("experts", M, Fe, E);
    if (m_.moe.n_shared_experts > 0) {
      kept += alloc(N * C);  // shared_y
      kept += mlp_forward("shared_experts", Fs);
      host_ += N * kF;  // shared_g
    }
    free(logits + xe + act);
    return kept;
  }

  // The *_backward functions return the bytes their queued weight-gradient tasks hold.
  int64_t mlp_backward(int64_t F) {
    const int64_t held = alloc(N * C) + alloc(N * F) + alloc(N * F);  // dout, dgate, dup
    const int64_t dact = alloc(N * F), tmp = alloc(N * C);
    free(dact + tmp);
    return held;
  }

  int64_t moe_backward() {
    int64_t held = 0;
    if (m_.moe.n_shared_experts > 0) {
      const int64_t dy = alloc(N * C), dxs = alloc(N * C);
      held += mlp_backward(Fs);
      free(dy + dxs);
    }
    held += alloc(M * C) + alloc(M * Fe) + alloc(M * Fe);  // dye, dgate, dup
    const int64_t temps = alloc(M * Fe) + alloc(M * C) + alloc(M * C) + alloc(N * E);  // dact, dxe, tmp, dprobs
    held += alloc(N * E);                                                             // dlogits
    free(temps + alloc(N * C));                                                       // dx_router
    return held;
  }

  int64_t attention_backward() {
    const int64_t held = alloc(N * C) + alloc(N * qd) + alloc(N * kd) + alloc(N * kd);  // dout, dq, dk, dv
    const int64_t datt = alloc(N * qd);
    if (m_.qk_norm) free(alloc(N * qd) + alloc(N * kd));  // normed-gradient clones
    free(datt + alloc(N * C));                            // tmp
    return held;
  }

  const ModelConfig& m_;
  const PrecisionConfig& p_;
  int64_t B = 0, N = 0, C = 0, V = 0, Hq = 0, Hkv = 0, qd = 0, kd = 0, E = 0, K = 0, Fe = 0, Fs = 0, M = 0;
  int64_t now_ = 0, peak_ = 0, host_ = 0;
};

// GradBuckets' plan: tensor sizes in fill order -> (offsets per tensor, padded size per bucket).
struct BucketLayout {
  std::vector<int64_t> padded;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> tensors;  // per bucket: (offset, numel)
};
BucketLayout plan_buckets(const std::vector<int64_t>& numels, double bucket_mb, int64_t dp) {
  const int64_t cap = std::max<int64_t>(static_cast<int64_t>(bucket_mb * 1024.0 * 1024.0) / kF, 1);
  BucketLayout out;
  size_t i = 0;
  while (i < numels.size()) {
    std::vector<std::pair<int64_t, int64_t>> in;
    int64_t at = 0;
    while (i < numels.size() && (in.empty() || at < cap)) {
      at = round_up(at, kAlignElems);
      in.emplace_back(at, numels[i]);
      at += numels[i++];
    }
    out.padded.push_back(round_up(std::max<int64_t>(at, 1), dp * kAlignElems));
    out.tensors.push_back(std::move(in));
  }
  return out;
}

// ZeRO-1: elements of trained tensors inside dp rank r's shard of every bucket.
int64_t shard_elements(const BucketLayout& b, int64_t dp, int64_t r) {
  int64_t n = 0;
  for (size_t k = 0; k < b.padded.size(); ++k) {
    const int64_t lo = r * (b.padded[k] / dp), hi = lo + b.padded[k] / dp;
    for (const auto& [off, numel] : b.tensors[k])
      n += std::max<int64_t>(0, std::min(off + numel, hi) - std::max(off, lo));
  }
  return n;
}

std::string mb(int64_t bytes) { return absl::StrFormat("%10.2f MB", bytes / 1e6); }

}  // namespace

std::vector<PlannedParam> plan_parameters(const ModelConfig& m, int64_t ep) {
  const int64_t V = m.vocab_size, C = m.d_model, D = m.resolved_head_dim(), qd = m.n_heads * D, kd = m.n_kv_heads * D;
  std::vector<PlannedParam> out;
  out.push_back({"embed", V * C});
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string b = absl::StrCat("layers.", i, ".");
    out.push_back({b + "attn_norm", C});
    out.insert(out.end(),
               {{b + "attn.wq", qd * C}, {b + "attn.wk", kd * C}, {b + "attn.wv", kd * C}, {b + "attn.wo", C * qd}});
    if (m.qkv_bias) out.insert(out.end(), {{b + "attn.bq", qd}, {b + "attn.bk", kd}, {b + "attn.bv", kd}});
    if (m.qk_norm) out.insert(out.end(), {{b + "attn.q_norm", D}, {b + "attn.k_norm", D}});
    out.push_back({b + "mlp_norm", C});
    if (!m.is_moe_block(i)) {
      const int64_t F = m.ffn_hidden;
      out.insert(out.end(), {{b + "mlp.w_gate", F * C}, {b + "mlp.w_up", F * C}, {b + "mlp.w_down", C * F}});
      continue;
    }
    const int64_t E = m.moe.n_experts, Fe = m.moe.expert_ffn_hidden, Fs = m.resolved_shared_ffn_hidden();
    out.push_back({b + "moe.router", E * C});
    if (m.moe.scoring == RouterScoring::kSigmoid) out.push_back({b + "moe.router_bias", E, /*trained=*/false});
    const int64_t El = E / std::max<int64_t>(ep, 1);
    out.insert(out.end(), {{b + "moe.experts.w_gate", El * Fe * C, true, true}, {b + "moe.experts.w_up", El * Fe * C, true, true},
                           {b + "moe.experts.w_down", El * C * Fe, true, true}});
    if (m.moe.n_shared_experts > 0) {
      out.insert(out.end(), {{b + "moe.shared.w_gate", Fs * C}, {b + "moe.shared.w_up", Fs * C},
                             {b + "moe.shared.w_down", C * Fs}});
    }
    if (m.moe.shared_expert_gate) out.push_back({b + "moe.shared_gate", C});
  }
  out.push_back({"final_norm", C});
  if (!m.tie_embeddings) out.push_back({"head", V * C});
  return out;
}

ActivationPlan plan_activations(const ExperimentConfig& config, int64_t rows, int64_t seq_len,
                                bool per_segment_weight_grads) {
  return MicroBatchTimeline(config, rows, seq_len).run(per_segment_weight_grads);
}

StatusOr<TrainingPlan> make_training_plan(const ExperimentConfig& config, int64_t world) {
  ASSIGN_OR_RETURN(const ParallelDims dims, ParallelDims::make(config.parallel, world));
  const ModelConfig& m = config.model;
  const bool grpo = config.train.mode == TrainMode::kGrpo;
  TrainingPlan p;
  p.layout = dims.describe();
  p.world = world;
  p.dp = dims.dp();
  p.pp = dims.pp();
  p.ep = dims.ep();
  p.zero = config.parallel.zero;
  const int64_t G = config.data.global_batch_size, mbs = config.data.micro_batch_size;
  if (G % (mbs * p.dp) != 0) {  // DataParallel::join's check (every training mode)
    return absl::InvalidArgumentError(absl::StrCat("data.global_batch_size: ", G,
                                                   " is not a multiple of micro_batch_size x dp = ", mbs, " x ", p.dp));
  }
  if (Status s = refuse_unlanded(config); !s.ok()) p.refused = std::string(s.message());

  const std::vector<PlannedParam> params = plan_parameters(m);
  for (const PlannedParam& q : params) {
    p.model_params += q.numel;
    if (q.trained) p.trained_params += q.numel;
  }
  int64_t moe_blocks = 0;
  for (int64_t i = 0; i < m.n_layers; ++i) moe_blocks += m.is_moe_block(i);
  p.model = absl::StrFormat("%s, %d blocks (%d MoE), %.2fM parameters", hf_model_type(m.arch), m.n_layers,
                            moe_blocks, p.model_params / 1e6);

  // Pipeline parallelism: each stage holds its blocks (and the embedding / head); the figures below
  // are those of the stage that holds the most. The schedule is data: printed, validated, with its
  // simulated bubble at unit costs.
  std::vector<PlannedParam> local = plan_parameters(m, p.ep);
  int64_t local_moe_blocks = moe_blocks, pipe_sends = 0;
  if (p.pp > 1) {
    ASSIGN_OR_RETURN(const PipelinePlan pipe, make_pipeline_plan(config, p.dp));
    std::string stages;
    int64_t most = -1;
    std::vector<PlannedParam> biggest;
    for (int r = 0; r < pipe.p; ++r) {
      const StageSpec spec = pipe.stage(r);
      std::vector<PlannedParam> mine;
      int64_t n = 0, stage_moe = 0;
      for (const BlockRange& c : spec.chunks)
        for (int64_t l = c.first; l < c.last; ++l) stage_moe += m.is_moe_block(l);
      for (const PlannedParam& q : local) {
        int64_t layer = -1;
        bool held = false;
        if (std::sscanf(q.name.c_str(), "layers.%ld.", &layer) == 1) {
          for (const BlockRange& c : spec.chunks) held = held || (c.first <= layer && layer < c.last);
        } else {
          held = (q.name == "embed" && (spec.has_embedding || (spec.has_head && m.tie_embeddings))) ||
                 ((q.name == "final_norm" || q.name == "head") && spec.has_head);
        }
        if (!held) continue;
        mine.push_back(q);
        n += q.numel;
      }
      if (n > most) {
        most = n;
        biggest = mine;
        local_moe_blocks = stage_moe;
        p.memory_stage = r;
      }
      int64_t sends = 0;
      for (const PipeOp& op : pipe.schedule.ranks[static_cast<size_t>(r)]) sends += op.kind == PipeOpKind::kSend;
      pipe_sends = std::max(pipe_sends, sends);
      std::string blocks;
      for (const BlockRange& c : spec.chunks) absl::StrAppend(&blocks, blocks.empty() ? "" : " ", "[", c.first, ",", c.last, ")");
      absl::StrAppend(&stages, absl::StrFormat("  stage %d: blocks %s%s%s, %.2fM parameters per rank\n", r, blocks,
                                               spec.has_embedding ? " + embedding" : "",
                                               spec.has_head ? (m.tie_embeddings && r > 0 ? " + head (tied copy)" : " + head") : "",
                                               n / 1e6));
    }
    local = biggest;
    p.schedule = absl::StrCat("stages       ", pipe.balanced ? "balanced by training FLOPs" : "parallel.pipeline.layout", "\n",
                              stages, "schedule     ", schedule_name(pipe.kind), ", ", pipe.m,
                              " micro-batches per pipeline (unit costs F = B = W = 1; bubble formula ",
                              schedule_bubble_formula(pipe.kind, pipe.p, pipe.v, 1, 1, 1), ")\n",
                              format_schedule(pipe.schedule, 1, 1, 1, 0.5));
  }
  // Expert parallelism: this rank's experts, and the dense / expert split of its gradients.
  std::vector<int64_t> dense_reversed, expert_reversed;  // bucket fill order: backward's, last first
  int64_t local_params = 0, local_trained = 0;
  for (const PlannedParam& q : local) {
    local_params += q.numel;
    if (q.trained) local_trained += q.numel;
  }
  for (size_t i = local.size(); i-- > 0;) {
    if (!local[i].trained) continue;
    (p.ep > 1 && local[i].expert ? expert_reversed : dense_reversed).push_back(local[i].numel);
  }
  if (p.ep > 1) {
    const int64_t El = m.moe.n_experts / p.ep;
    p.notes.push_back(absl::StrCat("experts: ep rank q holds experts [", El, "q, ", El, "(q+1)) of every MoE block (",
                                   El, " of ", m.moe.n_experts, "); their gradients are reduced over edp = ",
                                   p.dp / p.ep, " ranks"));
  }

  // Persistent tensors.
  MemoryPlan& mem = p.memory;
  const int64_t moment = config.optim.moments_dtype == MomentDType::kBF16 ? 2 : 4;
  const bool buckets = p.dp > 1;
  const bool zero1 = buckets && p.zero >= 1;
  p.zero = zero1 ? 1 : 0;  // what runs: ZeRO-1 needs a dp group
  mem.parameters = local_params * kF;
  mem.gradients = local_trained * kF;
  mem.optimizer = 2 * moment * local_trained;
  if (grpo && config.grpo.beta > 0) mem.reference_model = mem.parameters + local_trained * kF;
  const int64_t edp = p.dp / p.ep;
  int64_t expert_padded = 0;  // expert gradients in buckets over edp (ep > 1, edp > 1)
  if (buckets && p.ep > 1 && edp > 1) {
    for (int64_t n : plan_buckets(expert_reversed, config.parallel.bucket_mb, edp).padded) expert_padded += n;
  }
  if (buckets) {
    const BucketLayout layout = plan_buckets(dense_reversed, config.parallel.bucket_mb, p.dp);
    p.bucket_elements = layout.padded;
    int64_t padded = 0;
    for (int64_t n : layout.padded) padded += n;
    int64_t expert_plain = 0;  // expert gradients left in place (edp = 1)
    if (p.ep > 1 && edp == 1)
      for (int64_t n : expert_reversed) expert_plain += n;
    mem.gradients = (padded + expert_padded + expert_plain) * kF;
    if (zero1) {
      mem.grad_shards = padded / p.dp * kF;
      int64_t most = -1;
      for (int64_t r = 0; r < p.dp; ++r) {
        const int64_t n = shard_elements(layout, p.dp, r);
        if (n > most) {
          most = n;
          p.memory_rank = r;
        }
      }
      int64_t expert_trained = 0;  // expert tensors keep their whole (1/ep) state under ZeRO-1
      for (int64_t n : expert_reversed) expert_trained += n;
      mem.optimizer = 2 * moment * (most + expert_trained);
    }
    mem.startup_peak = mem.parameters + local_trained * kF + mem.gradients + mem.grad_shards;
  }

  // Activations: this rank's micro-batches of every step.
  if (p.pp > 1) {
    p.activations_modelled = false;
    p.notes.push_back("pp > 1: activation memory is not modelled yet: a stage holds the micro-batches its schedule "
                      "keeps alive at once (\"activations held at most\" under the timeline), its blocks' share each, "
                      "plus the messages in flight; the figures are the persistent tensors of the largest stage");
  } else if (grpo) {
    p.activations_modelled = false;
    p.notes.push_back("train.mode grpo: rollouts, KV caches and policy-update activations vary with completion "
                      "lengths and are not modelled; figures are the persistent tensors only");
  } else {
    p.rows = mbs;
    p.seq_len = config.data.seq_len;
    p.micro_batches_per_rank = G / mbs / p.dp;
    const ActivationPlan last = plan_activations(config, p.rows, p.seq_len, true);
    mem.activations_saved = last.saved_tensor;
    mem.activations_host = last.saved_host;
    mem.activations_peak = last.peak_tensor;
    if (p.micro_batches_per_rank > 1) {
      const ActivationPlan earlier = plan_activations(config, p.rows, p.seq_len, false);
      mem.activations_peak = std::max(mem.activations_peak, earlier.peak_tensor);
    }
  }
  mem.allocator_peak = std::max(mem.startup_peak, mem.persistent() + mem.activations_peak);
  for (const GemmShape& g : gemm_shapes(m))
    if (gemm_mode(config.precision, g.kind) != PrecisionMode::kFp32) mem.lowp_weights += g.n * g.k * g.count * kF;
  mem.total = mem.allocator_peak + mem.activations_host + mem.lowp_weights;

  // Communication (ring collectives), per rank per step.
  if (p.pp > 1 && !grpo) {
    // Every send of the schedule carries one micro-batch's hidden state or its gradient (the
    // busiest rank's sends).
    p.comm.push_back({"pipeline messages",
                      pipe_sends * mbs * config.data.seq_len * m.d_model * kF});
  }
  if (buckets) {
    const double share = static_cast<double>(p.dp - 1) / static_cast<double>(p.dp);
    int64_t padded = 0;
    for (int64_t n : p.bucket_elements) padded += n;
    const int64_t grad_bytes = padded * kF;
    auto ring = [&](double factor, int64_t bytes) {
      return static_cast<int64_t>(std::llround(factor * share * static_cast<double>(bytes)));
    };
    if (zero1) {
      p.comm.push_back({"gradient reduce-scatter", ring(1, grad_bytes)});
      p.comm.push_back({"parameter all-gather", ring(1, grad_bytes)});
    } else {
      p.comm.push_back({"gradient all-reduce", ring(2, grad_bytes)});
    }
    if (expert_padded > 0) {
      p.comm.push_back({"expert gradient all-reduce (edp)",
                        static_cast<int64_t>(std::llround(2.0 * (edp - 1) / edp * static_cast<double>(expert_padded * kF)))});
    }
    if (p.ep > 1 && !grpo) {
      // Per MoE block and micro-batch: dispatch and combine forward, both again backward, each
      // sending the slots bound for other ranks: (ep - 1) / ep of N*K rows under balanced routing.
      const double rows = static_cast<double>(mbs * config.data.seq_len * m.moe.top_k) * (p.ep - 1) / p.ep;
      const double per_step = 4.0 * rows * m.d_model * kF * local_moe_blocks * static_cast<double>(G / mbs / p.dp);
      p.comm.push_back({"MoE all-to-all (balanced routing)", static_cast<int64_t>(std::llround(per_step))});
    }
    int64_t fp8_gemms = 0;
    if (config.precision.mode == PrecisionMode::kFp8 && config.precision.fp8.recipe == Fp8Recipe::kTensorwiseDelayed) {
      for (const GemmShape& g : gemm_shapes(m))
        if (gemm_mode(config.precision, g.kind) == PrecisionMode::kFp8) fp8_gemms += g.count;
    }
    if (!grpo) {  // train.cc's: loss, aux, fp8 events, expert loads; skip flag and norm; amaxes
      const int64_t scalars = 8 * (3 + m.moe.n_experts * moe_blocks) + 16 + 12 * fp8_gemms;
      p.comm.push_back({"scalar all-reduces", ring(2, scalars)});
    }
  }
  for (const CommItem& c : p.comm) p.comm_bytes += c.bytes;

  // Assumptions.
  if (p.activations_modelled) {
    p.notes.push_back(absl::StrCat("a micro-batch is ", p.rows, " x ", p.seq_len, " tokens (data.micro_batch_size x "
                                   "data.seq_len); one micro-batch's activations are alive at a time"));
  }
  if (p.ep > 1) {
    p.notes.push_back("ep > 1: activations assume balanced routing (each rank's experts receive as many slots as it "
                      "sends); real peaks move with the routing imbalance");
  }
  if (m.is_moe()) {
    p.notes.push_back(m.moe.capacity_factor > 0
                          ? "MoE: dispatched slots at the capacity bound (fewer when tokens are dropped)"
                          : "MoE: every token's top_k choices are dispatched (no capacity limit): exact");
  }
  if (m.recompute == Recompute::kFull) {
    p.notes.push_back("model.recompute full shrinks what the forward keeps, not the peak: the backward keeps each "
                      "block's recomputed activations until the micro-batch ends");
  }
  if (config.precision.mode != PrecisionMode::kFp32) {
    p.notes.push_back("low-precision GEMM operand scratch (two buffers per thread) is not counted");
  }
  if (p.dp > 1) {
    p.notes.push_back(absl::StrCat("communication: ring collectives (an all-reduce sends 2(dp-1)/dp of the buffer); ",
                                   grpo ? "GRPO's rollout and reward exchanges, " : "",
                                   "checkpoint and evaluation traffic not counted"));
  }
  return p;
}

std::string format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b < 1e3) return absl::StrCat(bytes, " B");
  if (b < 1e6) return absl::StrFormat("%.1f KB", b / 1e3);
  if (b < 1e9) return absl::StrFormat("%.2f MB", b / 1e6);
  return absl::StrFormat("%.2f GB", b / 1e9);
}

std::string format_training_plan(const TrainingPlan& p) {
  std::string s;
  absl::StrAppend(&s, "layout       ", p.layout, p.zero >= 1 ? ", ZeRO-1" : "", "\n");
  absl::StrAppend(&s, "model        ", p.model, absl::StrFormat(" (%.2fM trained)\n", p.trained_params / 1e6));
  if (!p.refused.empty()) absl::StrAppend(&s, "refused      strata train refuses this config today: ", p.refused, "\n");
  absl::StrAppend(&s, p.schedule);
  if (p.activations_modelled) {
    absl::StrAppend(&s, absl::StrFormat("batch        micro-batch %d x %d tokens, %d per rank per step\n", p.rows,
                                        p.seq_len, p.micro_batches_per_rank));
  }
  if (!p.bucket_elements.empty()) {
    int64_t padded = 0;
    for (int64_t n : p.bucket_elements) padded += n;
    absl::StrAppend(&s, absl::StrFormat("buckets      %d gradient bucket%s, %d elements with padding\n",
                                        p.bucket_elements.size(), p.bucket_elements.size() == 1 ? "" : "s", padded));
  }
  const MemoryPlan& m = p.memory;
  std::string which;
  if (p.pp > 1) absl::StrAppend(&which, "stage ", p.memory_stage);
  if (p.dp > 1) absl::StrAppend(&which, which.empty() ? "" : ", ", "dp rank ", p.memory_rank);
  absl::StrAppend(&s, "\nmemory per rank", which.empty() ? "" : absl::StrCat(" (", which, ", the largest)"),
                  ", MB = 1e6 bytes\n");
  auto row = [&](const char* what, int64_t bytes, const std::string& why) {
    absl::StrAppend(&s, absl::StrFormat("  %-18s %s", what, mb(bytes)), why.empty() ? "" : "   ", why, "\n");
  };
  row("parameters", m.parameters, "fp32 values");
  row("gradients", m.gradients, p.bucket_elements.empty() ? "fp32" : "fp32, in padded buckets");
  row("optimizer", m.optimizer,
      absl::StrCat("AdamW m and v", p.zero >= 1 ? ", this rank's 1/dp shard (ZeRO-1)" : ""));
  if (m.grad_shards > 0) row("gradient shards", m.grad_shards, "ZeRO-1 reduced-gradient shard per bucket");
  if (m.reference_model > 0) row("reference model", m.reference_model, "GRPO KL reference (beta > 0)");
  if (p.activations_modelled) {
    row("activations saved", m.activations_saved, "Tensors one micro-batch's forward keeps");
    row("activations peak", m.activations_peak, "forward + backward of one micro-batch, saved included");
  } else {
    absl::StrAppend(&s, "  activations        not modelled (see notes)\n");
  }
  if (m.startup_peak > 0) row("startup peak", m.startup_peak, "gradients moving into buckets");
  row("allocator peak", m.allocator_peak, "Tensor storage: predicts tensor_peak_mb");
  row("outside Tensors", m.activations_host + m.lowp_weights,
      "fp8 activation codes, MoE routing, low-precision weights");
  row("total", m.total, "");
  if (!p.comm.empty()) {
    absl::StrAppend(&s, "\ncommunication per rank per step\n");
    for (const CommItem& c : p.comm)
      absl::StrAppend(&s, absl::StrFormat("  %-24s %s\n", c.what, format_bytes(c.bytes)));
    absl::StrAppend(&s, absl::StrFormat("  %-24s %s\n", "total", format_bytes(p.comm_bytes)));
  } else {
    absl::StrAppend(&s, "\ncommunication per rank per step: none (a single rank)\n");
  }
  if (!p.notes.empty()) {
    absl::StrAppend(&s, "\nnotes\n");
    for (const std::string& n : p.notes) absl::StrAppend(&s, "  - ", n, "\n");
  }
  return s;
}

}  // namespace strata
