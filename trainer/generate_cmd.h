// `strata generate`: sample from a model. Today the model comes from a Hugging Face directory
// (hf:DIR, any supported architecture) and prompts are token ids; text prompts need the
// tokenizers and Strata checkpoints need the checkpoint format, both from the Training issue.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

struct GenerateArgs {
  std::string checkpoint;   // hf:DIR
  std::string prompt;       // text (needs a tokenizer)
  std::string prompt_ids;   // "1 2 3" or "1,2,3"
  int64_t max_new_tokens = 32;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  int64_t samples = 1;
  int64_t seed = 1234;
  int64_t eos_id = -1;
};

// Returns the process exit code (cli.h's kExit*); prints one line of token ids per sample.
int run_generate(const GenerateArgs& args);

}  // namespace strata
