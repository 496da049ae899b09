#include "rl/command_reward.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/log.h"

namespace strata {

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      default: break;
    }
    if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      continue;
    }
    // Multi-byte UTF-8: copy a well-formed sequence, escape a stray byte as U+FFFD.
    int len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok) {
      out.append(s, i, static_cast<size_t>(len));
      i += static_cast<size_t>(len - 1);
    } else {
      out += "\\ufffd";
    }
  }
  return out + "\"";
}

CommandReward::CommandReward(std::string command, double timeout_s, RewardFailure on_failure)
    : command_(std::move(command)), timeout_s_(timeout_s), on_failure_(on_failure) {}

CommandReward::~CommandReward() { stop(); }

Status CommandReward::start() {
  int in[2], out[2];
  if (pipe(in) != 0 || pipe(out) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {  // child: stdin from in[0], stdout to out[1]; stderr stays the trainer's
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    execl("/bin/sh", "sh", "-c", command_.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  to_child_ = in[1];
  from_child_ = out[0];
  fcntl(to_child_, F_SETFD, FD_CLOEXEC);
  fcntl(from_child_, F_SETFD, FD_CLOEXEC);
  pid_ = pid;
  buffer_.clear();
  return OkStatus();
}

void CommandReward::stop() {
  if (to_child_ >= 0) close(to_child_);
  if (from_child_ >= 0) close(from_child_);
  to_child_ = from_child_ = -1;
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
}

StatusOr<double> CommandReward::fail(const std::string& what) {
  ++failures_;
  last_failure_ = absl::StrCat("reward command `", command_, "` ", what, " (line ", lines_, ")");
  stop();  // a fresh process for the next line: never trust one that misbehaved
  if (on_failure_ == RewardFailure::kStop) {
    return absl::AbortedError(absl::StrCat(last_failure_, "; stopping (grpo.reward_command_on_failure: stop)"));
  }
  LOG(WARN) << last_failure_ << "; scoring 0 and restarting it";
  return 0.0;
}

StatusOr<double> CommandReward::score(const std::string& prompt, const std::string& completion,
                                      const std::string& answer_json) {
  ++lines_;
  if (pid_ < 0) RETURN_IF_ERROR(start());
  const std::string line = absl::StrCat("{\"prompt\":", json_quote(prompt), ",\"completion\":", json_quote(completion),
                                        ",\"answer\":", answer_json.empty() ? "null" : answer_json, "}\n");
  // A child that died makes write() fail with EPIPE instead of killing us with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = write(to_child_, line.data() + done, line.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(absl::StrCat("cannot be written to: ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  size_t nl;
  while ((nl = buffer_.find('\n')) == std::string::npos) {
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return fail(absl::StrFormat("gave no answer within %.3gs", timeout_s_));
    pollfd pfd{from_child_, POLLIN, 0};
    const int r = poll(&pfd, 1, static_cast<int>(std::ceil(left * 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;  // the deadline check above reports it
    char buf[4096];
    const ssize_t n = read(from_child_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int status = 0;
      std::string how = "closed its output";
      // The program closed its output: it is most likely exiting; give it a moment to be reaped
      // so the message can say how it ended.
      bool reaped = false;
      for (int i = 0; i < 200 && pid_ > 0 && !reaped; ++i) {
        reaped = waitpid(pid_, &status, WNOHANG) == pid_;
        if (!reaped) usleep(2000);
      }
      if (reaped) {
        how = WIFEXITED(status)     ? absl::StrCat("exited with status ", WEXITSTATUS(status))
              : WIFSIGNALED(status) ? absl::StrCat("was killed by signal ", WTERMSIG(status))
                                    : how;
        pid_ = -1;
      }
      return fail(how);
    }
    buffer_.append(buf, static_cast<size_t>(n));
    if (buffer_.size() > (1 << 20)) return fail("printed over 1 MiB without a newline");
  }
  const std::string reply = buffer_.substr(0, nl);
  buffer_.erase(0, nl + 1);
  // Expect {"reward": <number>} (whitespace allowed); anything else is garbage.
  const size_t key = reply.find("\"reward\"");
  const size_t colon = key == std::string::npos ? key : reply.find(':', key);
  double value = NAN;
  if (colon != std::string::npos) {
    const char* begin = reply.c_str() + colon + 1;
    char* end = nullptr;
    value = std::strtod(begin, &end);
    if (end == begin) value = NAN;
    while (end && (*end == ' ' || *end == '\t')) ++end;
    if (end && *end != '}' && *end != ',') value = NAN;
  }
  const size_t first = reply.find_first_not_of(" \t");
  if (first == std::string::npos || reply[first] != '{' || !std::isfinite(value)) {
    return fail(absl::StrCat("printed \"", reply.substr(0, 200), "\", not {\"reward\": <finite number>}"));
  }
  return value;
}

}  // namespace strata
