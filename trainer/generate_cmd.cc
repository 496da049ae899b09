#include "trainer/generate_cmd.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/rng.h"
#include "core/timer.h"
#include "model/generate.h"
#include "data/tasks.h"
#include "trainer/train.h"
#include "trainer/cli.h"

namespace strata {

int run_generate(const GenerateArgs& args) {
  auto lm = load_model_for_inference(args.checkpoint, args.tokenizer);
  if (!lm.ok()) {
    std::fprintf(stderr, "strata generate: %s\n", std::string(lm.status().message()).c_str());
    const auto code = lm.status().code();
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ? kExitUsage : kExitFailure;
  }
  const ModelConfig& config = lm->config.model;
  std::vector<int32_t> prompt;
  if (!args.prompt.empty()) {
    if (!lm->tokenizer) {
      std::fprintf(stderr, "strata generate: %s has no tokenizer.json; pass --tokenizer or --prompt-ids\n",
                   args.checkpoint.c_str());
      return kExitUsage;
    }
    const bool r1 = args.r1_template || lm->config.data.r1_template;
    prompt = lm->tokenizer->encode(r1 ? apply_r1_template(args.prompt) : args.prompt);
  } else {
    for (absl::string_view part : absl::StrSplit(args.prompt_ids, absl::ByAnyChar(", "), absl::SkipEmpty())) {
      int32_t id;
      if (!absl::SimpleAtoi(part, &id) || id < 0) {
        std::fprintf(stderr, "strata generate: --prompt-ids: \"%s\" is not a token id\n", std::string(part).c_str());
        return kExitUsage;
      }
      prompt.push_back(id);
    }
  }
  if (prompt.empty()) {
    std::fprintf(stderr, "strata generate: give a prompt: --prompt TEXT or --prompt-ids \"1 2 3\"\n");
    return kExitUsage;
  }
  for (int32_t id : prompt) {
    if (id >= config.vocab_size) {
      std::fprintf(stderr, "strata generate: --prompt-ids: %d is outside the vocabulary (%ld)\n", id,
                   static_cast<long>(config.vocab_size));
      return kExitUsage;
    }
  }
  const int64_t max_new = args.max_new_tokens > 0 ? args.max_new_tokens
                                                  : config.max_seq_len - static_cast<int64_t>(prompt.size());
  if (max_new < 1 || static_cast<int64_t>(prompt.size()) + max_new > config.max_seq_len) {
    std::fprintf(stderr, "strata generate: prompt (%zu tokens) + --max-new-tokens (%ld) exceeds the model's %ld positions\n",
                 prompt.size(), static_cast<long>(max_new), static_cast<long>(config.max_seq_len));
    return kExitUsage;
  }
  if (!args.logits_out.empty()) {
    Batch b;
    b.B = 1;
    b.T = static_cast<int64_t>(prompt.size());
    b.tokens = prompt;
    b.finalize(config.vocab_size);
    const Tensor logits = lm->model->logits(b);
    nlohmann::json j = {{"ids", prompt}, {"logits", nlohmann::json::array()}};
    for (int64_t t = 0; t < b.T; ++t) {
      const float* row = logits.f32() + t * config.vocab_size;
      j["logits"].push_back(std::vector<float>(row, row + config.vocab_size));
    }
    std::ofstream out(args.logits_out);
    out << j.dump() << "\n";
    if (!out.good()) {
      std::fprintf(stderr, "strata generate: --logits-out %s: cannot write\n", args.logits_out.c_str());
      return kExitFailure;
    }
  }
  SamplingParams sp;
  sp.max_new_tokens = max_new;
  sp.temperature = static_cast<float>(args.temperature);
  sp.top_k = args.top_k;
  sp.top_p = static_cast<float>(args.top_p);
  sp.eos_id = args.eos_id >= -1 ? static_cast<int32_t>(args.eos_id) : (lm->tokenizer ? lm->tokenizer->eos_id() : -1);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(args.samples), prompt);
  std::vector<uint64_t> keys;
  for (int64_t i = 0; i < args.samples; ++i) keys.push_back(stream_id("generate/sample/" + std::to_string(i)));
  Timer timer;
  Generation g = generate(*lm->model, prompts, sp, keys, static_cast<uint64_t>(args.seed));
  const double sec = timer.seconds();
  for (const auto& c : g.completions) {
    if (!args.prompt.empty()) {
      std::vector<int32_t> ids = c;
      if (!ids.empty() && ids.back() == sp.eos_id) ids.pop_back();
      std::printf("%s\n", lm->tokenizer->decode(ids).c_str());
      continue;
    }
    std::string line;
    for (size_t i = 0; i < c.size(); ++i) line += (i ? " " : "") + std::to_string(c[i]);
    std::printf("%s\n", line.c_str());
  }
  std::fprintf(stderr, "strata generate: %ld tokens in %.3f s (%.0f tokens/s)\n", static_cast<long>(g.new_tokens), sec,
               g.new_tokens / std::max(sec, 1e-9));
  return kExitOk;
}

}  // namespace strata
