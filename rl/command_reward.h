// The `command` reward (REFERENCE.md section 6): any program, started once per scoring process,
// that reads JSON lines {"prompt", "completion", "answer"} on stdin and writes one line
// {"reward": x} per input, in order, so users can plug in a Python verifier (math-verify, a
// unit-test runner). Each line has a timeout. A program that crashes, hangs past the timeout or
// prints garbage is reported (which line, what it printed, its exit status) and then, per
// grpo.reward_command_on_failure, the completion scores 0 and the program is restarted for the
// next line, or the run stops with that message. Nothing here can hang the trainer.
#pragma once

#include <string>
#include <sys/types.h>

#include "core/status.h"
#include "rl/rewards.h"

namespace strata {

class CommandReward {
 public:
  // `command` runs under /bin/sh -c; started lazily on the first score().
  CommandReward(std::string command, double timeout_s, RewardFailure on_failure);
  ~CommandReward();
  CommandReward(const CommandReward&) = delete;
  CommandReward& operator=(const CommandReward&) = delete;

  // The reward of one completion; `answer_json` is the task's gold answer as the dataset stores it.
  // Failures: with on_failure zero, 0 (and failures() counts it); with stop, an error.
  StatusOr<double> score(const std::string& prompt, const std::string& completion, const std::string& answer_json);

  int64_t failures() const { return failures_; }
  const std::string& last_failure() const { return last_failure_; }

 private:
  Status start();
  void stop();  // kills the child (if any) and reaps it
  StatusOr<double> fail(const std::string& what);

  std::string command_;
  double timeout_s_;
  RewardFailure on_failure_;
  pid_t pid_ = -1;
  int to_child_ = -1, from_child_ = -1;
  std::string buffer_;  // bytes read past the last newline
  int64_t lines_ = 0, failures_ = 0;
  std::string last_failure_;
};

// JSON string literal of `s` (quotes, backslashes, control characters and invalid UTF-8 bytes
// escaped), for the lines sent to the command.
std::string json_quote(const std::string& s);

}  // namespace strata
