#include "optim/config.h"

#include "absl/strings/str_cat.h"

namespace strata {

void OptimConfig::validate(ConfigChecker& c) const {
  if (min_lr > lr) c.fail("min_lr", absl::StrCat(min_lr, " exceeds lr=", lr), {"lr"});
}

}  // namespace strata
