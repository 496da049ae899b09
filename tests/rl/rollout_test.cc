// The rollout engine (rl/rollout.h) on a tiny random model with the character tokenizer:
//   - samples depend only on (seed, step, prompt index, sample index): splitting the prompts over
//     calls (as over ranks) or decoding fewer rows together gives the same completions;
//   - another step or seed gives other completions; a group's G samples differ;
//   - stop strings end a completion (cut right after the string) and are not "truncated";
//   - the lockstep hook is called every decode step and keeps decoding while any rank is active.
#include <gtest/gtest.h>

#include "data/tokenizer.h"
#include "rl/rollout.h"

namespace strata {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 128;
  c.d_model = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.ffn_hidden = 64;
  c.max_seq_len = 64;
  return c;
}

struct Fixture {
  Transformer model{tiny(), PrecisionConfig{}};
  std::unique_ptr<Tokenizer> tok = *load_tokenizer("char");
  Fixture() { model.init(3); }
  RolloutResult run(const std::vector<std::string>& prompts, std::vector<int64_t> indices, RolloutOptions o,
                    uint64_t seed = 1, int64_t step = 0, const RolloutLayout& layout = {}) {
    std::vector<std::vector<int32_t>> ids;
    for (const auto& p : prompts) ids.push_back(tok->encode(p));
    return rollout(model, *tok, ids, indices, o, seed, step, layout);
  }
};

RolloutOptions options(int64_t G, int64_t rows) {
  RolloutOptions o;
  o.sampling.max_new_tokens = 10;
  o.sampling.temperature = 1.0f;
  o.group_size = G;
  o.batch_rows = rows;
  return o;
}

TEST(Rollout, KeyedByPromptAndSampleNotByBatching) {
  Fixture f;
  const RolloutResult all = f.run({"Compute 1+2", "Compute 30-4"}, {5, 9}, options(3, 64));
  const RolloutResult first = f.run({"Compute 1+2"}, {5}, options(3, 3));
  const RolloutResult second = f.run({"Compute 30-4"}, {9}, options(3, 1));  // one row per batch
  ASSERT_EQ(all.samples.size(), 6u);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(all.samples[s].completion, first.samples[s].completion);
    EXPECT_EQ(all.samples[3 + s].completion, second.samples[s].completion);
    EXPECT_EQ(all.samples[3 + s].prompt_index, 9);
    EXPECT_EQ(all.samples[3 + s].sample_index, s);
  }
  EXPECT_NE(all.samples[0].completion, all.samples[1].completion);  // a group's samples differ
  const RolloutResult other_step = f.run({"Compute 1+2"}, {5}, options(3, 64), 1, 1);
  const RolloutResult other_seed = f.run({"Compute 1+2"}, {5}, options(3, 64), 2, 0);
  EXPECT_NE(other_step.samples[0].completion, first.samples[0].completion);
  EXPECT_NE(other_seed.samples[0].completion, first.samples[0].completion);
  EXPECT_GT(all.new_tokens, 0);
}

TEST(Rollout, StopStringsEndCompletions) {
  Fixture f;
  RolloutOptions o = options(4, 64);
  o.sampling.max_new_tokens = 40;
  const RolloutResult free_run = f.run({"x"}, {0}, o);
  // Use a character that appears in some sampled completion as the stop string.
  std::string stop;
  for (const auto& s : free_run.samples)
    if (s.text.size() > 3) stop = s.text.substr(2, 1);
  ASSERT_FALSE(stop.empty());
  o.stop = {stop};
  const RolloutResult r = f.run({"x"}, {0}, o);
  int stopped = 0;
  for (const auto& s : r.samples) {
    const size_t at = s.text.find(stop);
    if (at == std::string::npos) continue;
    ++stopped;
    EXPECT_EQ(at + stop.size(), s.text.size()) << s.text;  // cut right after the stop string
    EXPECT_FALSE(s.truncated);
    EXPECT_EQ(f.tok->decode(s.completion), s.text);
  }
  EXPECT_GT(stopped, 0);
}

TEST(Rollout, LockstepHookDecidesWhenAllRanksAreDone) {
  Fixture f;
  RolloutOptions o = options(2, 64);
  o.sampling.temperature = 0.0f;  // greedy: the hook alone decides how long rows run
  int calls = 0;
  RolloutLayout keep_going;  // another rank still decoding: this one must keep stepping
  keep_going.any_active = [&](bool) {
    ++calls;
    return true;
  };
  const RolloutResult r = f.run({"Compute 1+2"}, {0}, o, 1, 0, keep_going);
  EXPECT_EQ(calls, o.sampling.max_new_tokens - 1);  // every step but the last asks
  const RolloutResult alone = f.run({"Compute 1+2"}, {0}, o);
  for (size_t i = 0; i < r.samples.size(); ++i) EXPECT_EQ(r.samples[i].completion, alone.samples[i].completion);
}

}  // namespace
}  // namespace strata
