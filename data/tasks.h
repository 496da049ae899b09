// Synthetic reasoning tasks with verifiable answers, generated from the seed: 3-digit arithmetic
// and TinyZero's countdown. An example is a pure function of (kind, seed, index, split), so any
// rank regenerates the example any other rank would see, and the held-out split is disjoint from
// train by construction: a problem belongs to eval iff a hash of its canonical text is 0 mod 10
// (task_split_of), and generation rejection-samples until the problem lands in the requested
// split. Also the DeepSeek-R1 prompt template. Files of examples live in data/jsonl.h; batching
// in data/loader.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "data/config.h"

namespace strata {

// One supervised example. `answer` is the gold answer as compact JSON text for the verifiers:
// {"result":936} (arithmetic), {"numbers":[25,4,3],"target":87} (countdown); "" when unknown.
struct Example {
  std::string prompt, completion, answer;
};

enum class Split { kTrain, kEval };

// Example `index` of a task's split; deterministic in (kind, seed, index, split).
//   arithmetic  prompt "Compute 347+589"
//               completion "<think>7+9=16 c1, 4+8+1=13 c1, 3+5+1=9 c0, so 936</think> <answer>936</answer>"
//   countdown   prompt "Using the numbers [25, 4, 3], create an equation that equals 87. You can use
//               basic arithmetic operations (+, -, *, /) and each number can only be used once"
//               completion "<think>25+4=29, 29*3=87</think> <answer>(25+4)*3</answer>"
// Prompts carry no final period: apply_r1_template's ". Assistant:" closes them.
Example make_task_example(TaskKind kind, uint64_t seed, int64_t index, Split split);

// The worked trace of a + b or a - b (a, b in [100, 999]; op '+' or '-'), <think> and <answer>:
// column by column from the units digit, always showing the incoming carry/borrow ("+0"/"-0"),
// so every column has the same shape:
//   347+589  "<think>7+9=16 c1, 4+8+1=13 c1, 3+5+1=9 c0, so 936</think> <answer>936</answer>"
//   512-347  "<think>512>=347, 12-7-0=5 b1, 11-4-1=6 b1, 5-3-1=1 b0, so 165</think> <answer>165</answer>"
//   347-589  "<think>347<589 so -(589-347), 9-7-0=2 b0, 8-4-0=4 b0, 5-3-0=2 b0, so -242</think> <answer>-242</answer>"
// A subtraction column writes its top digit with the borrowed ten already added ("12-7-0=5 b1":
// the column borrows one from the next, which then subtracts it: "11-4-1").
std::string arithmetic_completion(int a, char op, int b);
// The same trace by a teacher that forgets every carry and borrow: each column writes an
// incoming "+0" / "-0" and the answer is assembled from those columns' digits (the top column's
// carry still leads), so it is wrong exactly when a carry or borrow crosses columns:
//   347+589  "<think>7+9=16 c1, 4+8+0=12 c1, 3+5+0=8 c0, so 826</think> <answer>826</answer>"
std::string arithmetic_completion_forgetful(int a, char op, int b);

// Example `index` of an arithmetic SFT set whose traces come from the forgetful teacher with
// probability `teacher_error_rate` (decided per example from the seed); prompt and gold answer
// are those of make_task_example.
Example make_arithmetic_example(uint64_t seed, int64_t index, Split split, double teacher_error_rate);

// The canonical text that decides a problem's split: "347+589" (arithmetic); the sorted numbers
// and the target, "3,4,25=87" (countdown), so a problem is the same whatever order its numbers
// are shown in.
std::string arithmetic_canonical(int a, char op, int b);
std::string countdown_canonical(std::vector<int> numbers, int target);
// kEval iff stream_id(canonical) % 10 == 0.
Split task_split_of(std::string_view canonical);

// The DeepSeek-R1 conversation template (REFERENCE.md section 5), exactly: "A conversation between
// User and Assistant. ... User: {prompt}. Assistant:".
std::string apply_r1_template(const std::string& prompt);

// "countdown" | "arithmetic" and "train" | "eval".
const char* task_name(TaskKind kind);
StatusOr<TaskKind> parse_task_kind(std::string_view name);
const char* split_name(Split split);
StatusOr<Split> parse_split(std::string_view name);

}  // namespace strata
