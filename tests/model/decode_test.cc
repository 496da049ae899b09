// Incremental decoding with the KV cache against the full forward, on a left-padded batch of
// different prompt lengths; a decode step recomputes nothing; sampling filters and keyed
// randomness.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/generate.h"

namespace strata {
namespace {

ModelConfig decode_config(bool moe) {
  ModelConfig c;
  c.vocab_size = 29;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 40;
  c.max_seq_len = 32;
  c.qk_norm = true;
  c.init_std = 0.2;
  if (moe) {
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.expert_ffn_hidden = 16;
    c.moe.scoring = RouterScoring::kSigmoid;
    c.moe.n_shared_experts = 1;
  }
  return c;
}

double rel_err(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

void check_decode_matches_forward(bool moe) {
  ModelConfig c = decode_config(moe);
  Transformer model(c, PrecisionConfig{});
  model.init(4);
  std::mt19937 rng(1);
  const std::vector<int64_t> lens = {3, 7, 5};
  const int64_t B = 3, P = 7, steps = 5, L = P + steps, V = c.vocab_size;
  std::vector<std::vector<int32_t>> seq(B);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < lens[b] + steps; ++t) seq[b].push_back(static_cast<int32_t>(rng() % V));

  // Full forward over the left-padded batch.
  Batch full;
  full.B = B;
  full.T = L;
  full.tokens.assign(B * L, 0);
  full.positions.assign(B * L, 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pad = P - lens[b];
    full.key_start.push_back(static_cast<int32_t>(pad));
    for (int64_t t = 0; t < lens[b] + steps; ++t) {
      full.tokens[b * L + pad + t] = seq[b][t];
      full.positions[b * L + pad + t] = static_cast<int32_t>(t);
    }
  }
  full.finalize(V);
  Tensor ref = model.logits(full);

  // Prefill, then one token per step.
  auto caches = model.make_kv_caches(B, L);
  std::vector<int32_t> tok(full.tokens.begin(), full.tokens.end()), pos(full.positions.begin(), full.positions.end());
  std::vector<int32_t> pre_tok, pre_pos;
  for (int64_t b = 0; b < B; ++b) {
    pre_tok.insert(pre_tok.end(), tok.begin() + b * L, tok.begin() + b * L + P);
    pre_pos.insert(pre_pos.end(), pos.begin() + b * L, pos.begin() + b * L + P);
  }
  Tensor pre = model.decode(caches, pre_tok, pre_pos, full.key_start, B, P, false);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = P - lens[b]; t < P; ++t)
      EXPECT_LT(rel_err(pre.f32() + (b * P + t) * V, ref.f32() + (b * L + t) * V, V), 1e-5) << b << "," << t;

  const int64_t rows_before = model.blocks()[0].attn.gemm_q.forward_rows();
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> st, sp;
    for (int64_t b = 0; b < B; ++b) {
      st.push_back(tok[b * L + P + s]);
      sp.push_back(pos[b * L + P + s]);
    }
    const int64_t rows_at = model.blocks()[0].attn.gemm_q.forward_rows();
    Tensor step = model.decode(caches, st, sp, full.key_start, B, 1, false);
    // No recomputation: every step projects exactly the B new tokens, however long the cache is.
    EXPECT_EQ(model.blocks()[0].attn.gemm_q.forward_rows() - rows_at, B);
    for (int64_t b = 0; b < B; ++b)
      EXPECT_LT(rel_err(step.f32() + b * V, ref.f32() + (b * L + P + s) * V, V), 1e-5) << b << " step " << s;
  }
  EXPECT_EQ(model.blocks()[0].attn.gemm_q.forward_rows() - rows_before, B * steps);
}

TEST(Decode, KvCacheMatchesFullForwardDense) { check_decode_matches_forward(false); }
TEST(Decode, KvCacheMatchesFullForwardMoe) { check_decode_matches_forward(true); }

TEST(Sampling, GreedyTopKTopP) {
  std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f, 0.0f};
  SamplingParams greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sample_token(logits.data(), 5, greedy, 0.99f), 1);
  SamplingParams k1;
  k1.top_k = 1;
  for (float u : {0.0f, 0.5f, 0.999f}) EXPECT_EQ(sample_token(logits.data(), 5, k1, u), 1);
  SamplingParams p;
  p.top_p = 0.9f;  // tokens 1 and 2 hold ~0.88 of the mass: the nucleus needs a third (token 0 or 4)
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 1000; ++i) seen[sample_token(logits.data(), 5, p, (i + 0.5f) / 1000)]++;
  EXPECT_EQ(seen[3], 0);
  EXPECT_GT(seen[1], seen[2]);
  EXPECT_GT(seen[1] + seen[2], 900);
}

TEST(Generate, RowRandomnessIsKeyedNotPositional) {
  ModelConfig c = decode_config(true);
  Transformer model(c, PrecisionConfig{});
  model.init(6);
  SamplingParams sp;
  sp.max_new_tokens = 8;
  const std::vector<int32_t> a = {1, 2, 3}, b = {4, 5, 6, 7, 8};
  Generation alone = generate(model, {a}, sp, {42}, 7);
  Generation both = generate(model, {b, a}, sp, {9, 42}, 7);
  EXPECT_EQ(alone.completions[0], both.completions[1]);
  Generation other_key = generate(model, {a}, sp, {43}, 7);
  EXPECT_NE(alone.completions[0], other_key.completions[0]);
  EXPECT_TRUE(alone.truncated[0]);
}

TEST(Generate, StopsOnEosAndStopSequences) {
  ModelConfig c = decode_config(false);
  Transformer model(c, PrecisionConfig{});
  model.init(6);
  SamplingParams sp;
  sp.max_new_tokens = 10;
  sp.temperature = 0;
  Generation g = generate(model, {{1, 2}}, sp, {0}, 1);
  ASSERT_EQ(g.completions[0].size(), 10u);
  sp.eos_id = g.completions[0][3];  // pretend the 4th greedy token is EOS
  Generation e = generate(model, {{1, 2}}, sp, {0}, 1);
  EXPECT_LE(e.completions[0].size(), 4u);
  EXPECT_FALSE(e.truncated[0]);
  sp.eos_id = -1;
  sp.stop_sequences = {{g.completions[0][4], g.completions[0][5]}};
  Generation s = generate(model, {{1, 2}}, sp, {0}, 1);
  EXPECT_LE(s.completions[0].size(), 6u);
}

}  // namespace
}  // namespace strata
