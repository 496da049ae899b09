#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
#include "core/rng.h"

namespace strata {

int32_t sample_token(const float* logits, int64_t V, const SamplingParams& params, float u) {
  if (params.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  // Candidates in descending probability; filters keep a prefix of them.
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [logits](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t keep = V;
  if (params.top_k > 0) keep = std::min(keep, params.top_k);
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = logits[order[0]] / params.temperature;
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += p[i] = std::exp(logits[order[i]] / params.temperature - mx);
  if (params.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p (always at least one)
    double mass = 0;
    int64_t n = 0;
    while (n < keep && mass < params.top_p * sum) mass += p[n++];
    keep = std::max<int64_t>(n, 1);
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += p[i];
  }
  const double target = static_cast<double>(u) * sum;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (target < acc) return order[i];
  }
  return order[keep - 1];
}

namespace {
bool ends_with(const std::vector<int32_t>& seq, const std::vector<int32_t>& tail) {
  return !tail.empty() && seq.size() >= tail.size() && std::equal(tail.rbegin(), tail.rend(), seq.rbegin());
}
}  // namespace

Generation generate(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts, const SamplingParams& params,
                    const std::vector<uint64_t>& row_keys, uint64_t seed, const AnyActiveFn& any_active) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  CHECK_GT(B, 0) << "generate() needs at least one prompt";
  CHECK_EQ(row_keys.size(), prompts.size()) << "one RNG key per row";
  int64_t P = 0;
  for (const auto& p : prompts) {
    CHECK(!p.empty()) << "empty prompt";
    P = std::max<int64_t>(P, static_cast<int64_t>(p.size()));
  }
  const int64_t V = decoder.config().vocab_size;
  CHECK_LE(P + params.max_new_tokens, decoder.config().max_seq_len) << "prompt + max_new_tokens exceeds max_seq_len";

  // Left-pad to P: pads sit before key_start and take position 0; real tokens count from 0.
  std::vector<int32_t> tokens(static_cast<size_t>(B * P), 0), positions(static_cast<size_t>(B * P), 0),
      key_start(static_cast<size_t>(B));
  std::vector<int32_t> next_pos(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = static_cast<int64_t>(prompts[b].size()), pad = P - len;
    key_start[b] = static_cast<int32_t>(pad);
    for (int64_t t = 0; t < len; ++t) {
      tokens[b * P + pad + t] = prompts[b][t];
      positions[b * P + pad + t] = static_cast<int32_t>(t);
    }
    next_pos[b] = static_cast<int32_t>(len);
  }

  Generation out;
  out.completions.assign(static_cast<size_t>(B), {});
  out.truncated.assign(static_cast<size_t>(B), false);
  std::vector<bool> done(static_cast<size_t>(B), false);
  decoder.start(B, P + params.max_new_tokens);
  Tensor logits = decoder.step(tokens, positions, key_start, B, P);

  std::vector<int32_t> step_tokens(static_cast<size_t>(B)), step_pos(static_cast<size_t>(B));
  for (int64_t step = 0; step < params.max_new_tokens; ++step) {
    // Sampled where the logits are, then shared: every rank keeps the same completions.
    if (logits.defined()) {
      for (int64_t b = 0; b < B; ++b) {
        const float u = RngStream(seed, row_keys[b]).uniform(static_cast<uint64_t>(step));
        step_tokens[b] = done[b] ? 0 : sample_token(logits.f32() + b * V, V, params, u);
      }
    }
    decoder.share(step_tokens);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      const int32_t tok = done[b] ? 0 : step_tokens[b];
      if (!done[b]) {
        auto& c = out.completions[b];
        c.push_back(tok);
        ++out.new_tokens;
        bool stop = tok == params.eos_id;
        for (const auto& s : params.stop_sequences) stop = stop || ends_with(c, s);
        if (stop) {
          done[b] = true;
        } else if (static_cast<int64_t>(c.size()) == params.max_new_tokens) {
          done[b] = true;
          out.truncated[b] = true;
        }
      }
      all_done = all_done && done[b];
      step_tokens[b] = tok;
      step_pos[b] = next_pos[b]++;
    }
    out.steps = step + 1;
    if (step + 1 == params.max_new_tokens) break;  // every row is done or truncated: no decode needed
    if (!(any_active ? any_active(!all_done) : !all_done)) break;
    logits = decoder.step(step_tokens, step_pos, key_start, B, 1);
  }
  return out;
}

}  // namespace strata
