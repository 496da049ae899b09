#include "kernels/precision/config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata {

void Fp8Config::validate(ConfigChecker& c) const {
  const auto& kinds = precision_module_kinds();
  for (const auto& m : high_precision_modules) {
    if (std::find(kinds.begin(), kinds.end(), m) == kinds.end()) {
      c.fail("high_precision_modules",
             absl::StrCat("\"", m, "\" is not a module kind; allowed: ", absl::StrJoin(kinds, ", ")));
    }
  }
  if (format == Fp8Format::kHybrid && recipe != Fp8Recipe::kTensorwiseDelayed) {
    c.fail("format", "hybrid (E5M2 gradients) needs recipe: tensorwise_delayed; blockwise is E4M3 only",
           {"recipe"});
  }
}

}  // namespace strata
