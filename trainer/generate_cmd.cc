#include "trainer/generate_cmd.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/generate.h"
#include "model/hf.h"
#include "trainer/cli.h"

namespace strata {

int run_generate(const GenerateArgs& args) {
  if (args.checkpoint.rfind("hf:", 0) != 0) {
    std::fprintf(stderr,
                 "strata generate: %s: Strata checkpoints land with the Training issue (#4); "
                 "use hf:DIR for a Hugging Face model directory\n",
                 args.checkpoint.c_str());
    return kExitNotLanded;
  }
  if (!args.prompt.empty()) {
    std::fprintf(stderr, "strata generate: --prompt needs the tokenizers of the Training issue (#4); pass --prompt-ids\n");
    return kExitNotLanded;
  }
  std::vector<int32_t> prompt;
  for (absl::string_view part : absl::StrSplit(args.prompt_ids, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id) || id < 0) {
      std::fprintf(stderr, "strata generate: --prompt-ids: \"%s\" is not a token id\n", std::string(part).c_str());
      return kExitUsage;
    }
    prompt.push_back(id);
  }
  if (prompt.empty()) {
    std::fprintf(stderr, "strata generate: give the prompt as --prompt-ids \"1 2 3\"\n");
    return kExitUsage;
  }
  const std::string dir = args.checkpoint.substr(3);
  auto config = load_hf_config(dir);
  if (!config.ok()) {
    std::fprintf(stderr, "strata generate: %s\n", std::string(config.status().message()).c_str());
    return kExitUsage;
  }
  for (int32_t id : prompt) {
    if (id >= config->vocab_size) {
      std::fprintf(stderr, "strata generate: --prompt-ids: %d is outside the vocabulary (%ld)\n", id,
                   static_cast<long>(config->vocab_size));
      return kExitUsage;
    }
  }
  if (static_cast<int64_t>(prompt.size()) + args.max_new_tokens > config->max_seq_len) {
    std::fprintf(stderr, "strata generate: prompt (%zu) + --max-new-tokens (%ld) exceeds the model's %ld positions\n",
                 prompt.size(), static_cast<long>(args.max_new_tokens), static_cast<long>(config->max_seq_len));
    return kExitUsage;
  }
  Transformer model(*config, PrecisionConfig{});
  Status loaded = load_hf_weights(model, dir);
  if (!loaded.ok()) {
    std::fprintf(stderr, "strata generate: %s\n", std::string(loaded.message()).c_str());
    return kExitFailure;
  }
  SamplingParams sp;
  sp.max_new_tokens = args.max_new_tokens;
  sp.temperature = static_cast<float>(args.temperature);
  sp.top_k = args.top_k;
  sp.top_p = static_cast<float>(args.top_p);
  sp.eos_id = static_cast<int32_t>(args.eos_id);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(args.samples), prompt);
  std::vector<uint64_t> keys;
  for (int64_t i = 0; i < args.samples; ++i) keys.push_back(stream_id("generate/sample/" + std::to_string(i)));
  Timer timer;
  Generation g = generate(model, prompts, sp, keys, static_cast<uint64_t>(args.seed));
  const double sec = timer.seconds();
  for (const auto& c : g.completions) {
    std::string line;
    for (size_t i = 0; i < c.size(); ++i) line += (i ? " " : "") + std::to_string(c[i]);
    std::printf("%s\n", line.c_str());
  }
  std::fprintf(stderr, "strata generate: %ld tokens in %.3f s (%.0f tokens/s)\n", static_cast<long>(g.new_tokens), sec,
               g.new_tokens / std::max(sec, 1e-9));
  return kExitOk;
}

}  // namespace strata
