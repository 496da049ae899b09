#include "kernels/precision/config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace strata {

void Fp8Config::validate(ConfigChecker& c) const {
  const auto& kinds = precision_module_kinds();
  bool all_known = true;
  for (const auto& m : high_precision_modules) {
    if (std::find(kinds.begin(), kinds.end(), m) == kinds.end()) {
      all_known = false;
      c.fail("high_precision_modules",
             absl::StrCat("\"", m, "\" is not a module kind; allowed: ", absl::StrJoin(kinds, ", ")));
    }
  }
  // These never run as an fp8 GEMM here: the embedding is a lookup, norms are not GEMMs, and
  // the attention core (softmax(QK^T) V) has no fp8 path.
  for (const char* always : {"embedding", "norm", "attention_core"}) {
    if (all_known && std::find(high_precision_modules.begin(), high_precision_modules.end(), always) ==
        high_precision_modules.end()) {
      c.fail("high_precision_modules",
             absl::StrCat(always, " has no fp8 path in Strata and always stays in bf16/fp32; keep it in the list"));
    }
  }
  if (format == Fp8Format::kHybrid && recipe != Fp8Recipe::kTensorwiseDelayed) {
    c.fail("format", "hybrid (E5M2 gradients) needs recipe: tensorwise_delayed; blockwise is E4M3 only",
           {"recipe"});
  }
}

}  // namespace strata
