#include "rl/rollout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/rng.h"
#include "core/timer.h"

namespace strata {

uint64_t rollout_key(int64_t step, int64_t prompt_index, int64_t sample_index) {
  return stream_id(absl::StrCat("rollout/", step, "/", prompt_index, "/", sample_index));
}

RolloutResult rollout(Transformer& model, const Tokenizer& tokenizer, const std::vector<std::vector<int32_t>>& prompts,
                      const std::vector<int64_t>& prompt_indices, const RolloutOptions& options, uint64_t seed,
                      int64_t step, const RolloutLayout& layout) {
  CHECK_EQ(prompts.size(), prompt_indices.size()) << "one global index per prompt";
  const int64_t G = options.group_size;
  CHECK_GE(G, 1);
  SamplingParams sp = options.sampling;
  if (sp.eos_id < 0) sp.eos_id = tokenizer.eos_id();
  for (const std::string& s : options.stop) {
    if (!s.empty()) sp.stop_sequences.push_back(tokenizer.encode(s));
  }
  // Whole groups per decode batch, so a group never straddles two batches.
  const int64_t groups_per_batch = std::max<int64_t>(1, options.batch_rows / G);

  RolloutResult out;
  Timer timer;
  const int64_t P = static_cast<int64_t>(prompts.size());
  for (int64_t first = 0; first < P; first += groups_per_batch) {
    const int64_t n = std::min(groups_per_batch, P - first);
    std::vector<std::vector<int32_t>> rows;
    std::vector<uint64_t> keys;
    for (int64_t p = first; p < first + n; ++p) {
      for (int64_t s = 0; s < G; ++s) {
        rows.push_back(prompts[p]);
        keys.push_back(rollout_key(step, prompt_indices[p], s));
      }
    }
    Generation g = layout.decoder ? generate(*layout.decoder, rows, sp, keys, seed, layout.any_active)
                                  : generate(model, rows, sp, keys, seed, layout.any_active);
    out.new_tokens += g.new_tokens;
    for (int64_t r = 0; r < static_cast<int64_t>(rows.size()); ++r) {
      RolloutSample sample;
      sample.prompt_index = prompt_indices[first + r / G];
      sample.sample_index = r % G;
      sample.prompt = rows[r];
      sample.completion = g.completions[r];
      sample.truncated = g.truncated[r];
      std::vector<int32_t> ids = sample.completion;
      if (!ids.empty() && ids.back() == sp.eos_id) ids.pop_back();
      sample.text = tokenizer.decode(ids);
      // A stop string that a subword tokenizer split differently than encode() did is still
      // honoured on the text; the tokens after it are dropped.
      for (const std::string& s : options.stop) {
        const size_t at = s.empty() ? std::string::npos : sample.text.find(s);
        if (at == std::string::npos) continue;
        sample.text.resize(at + s.size());
        sample.truncated = false;
        std::vector<int32_t> kept;
        for (int32_t id : sample.completion) {
          if (tokenizer.decode(kept).size() >= sample.text.size()) break;
          kept.push_back(id);
        }
        sample.completion = kept;
      }
      out.samples.push_back(std::move(sample));
    }
  }
  out.seconds = timer.seconds();
  return out;
}

}  // namespace strata
