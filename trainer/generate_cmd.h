// `strata generate`: sample from a model: a Strata run or checkpoint, or a Hugging Face directory
// (hf:DIR). The prompt is text (encoded with the run's tokenizer, or --tokenizer) or token ids.
// Text completions are printed one per sample; with --prompt-ids, token ids.
#pragma once

#include <cstdint>
#include <string>

namespace strata {

struct GenerateArgs {
  std::string checkpoint;   // run dir, checkpoint dir or root, or hf:DIR
  std::string tokenizer;    // override: char | tokenizer.json
  std::string prompt;       // text (needs a tokenizer)
  std::string prompt_ids;   // "1 2 3" or "1,2,3"
  int64_t max_new_tokens = 0;  // 0 = up to the model's max_seq_len
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  int64_t samples = 1;
  int64_t seed = 1234;
  int64_t eos_id = -2;     // -2 = the tokenizer's EOS; -1 = none
  bool r1_template = false; // wrap --prompt in the R1 template (default: as the run trained)
  std::string logits_out;   // write the prompt's logits at every position as JSON (interop checks)
};

// Returns the process exit code (cli.h's kExit*); prints one line of token ids per sample. With
// logits_out, first writes {"ids": [...], "logits": [[V floats] per prompt position]} from one
// forward over the prompt (what scripts/check_hf_export.py compares with transformers).
int run_generate(const GenerateArgs& args);

}  // namespace strata
