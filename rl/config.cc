#include "rl/config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata {

void GrpoConfig::validate(ConfigChecker& c) const {
  const auto& known = reward_names();
  for (const auto& [name, weight] : rewards) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      c.fail("rewards", absl::StrCat("unknown reward \"", name, "\"; known: ", absl::StrJoin(known, ", ")));
    }
  }
  if (rewards.count("command") && reward_command.empty()) {
    c.fail("reward_command", "is required when rewards include \"command\"", {"rewards"});
  }
  if (rewards.count("overlong") && overlong_buffer == 0) {
    c.fail("overlong_buffer", "must be > 0 when rewards include \"overlong\"", {"rewards"});
  }
  if (overlong_buffer >= max_new_tokens) {
    c.fail("overlong_buffer", absl::StrCat(overlong_buffer, " must be smaller than max_new_tokens=", max_new_tokens),
           {"max_new_tokens"});
  }
}

}  // namespace strata
