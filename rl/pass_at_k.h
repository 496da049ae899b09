// pass@k (REFERENCE.md section 5): the unbiased estimator of the chance that at least one of k
// samples is correct, from n >= k samples of which c are correct (Chen et al. 2021, "Evaluating
// Large Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k), computed in the paper's stable
// product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms a binomial coefficient.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace strata {

// Samples drawn for one problem and how many of them were correct.
struct SampleCounts {
  int64_t n = 0;
  int64_t correct = 0;
};

// pass@k for one problem. InvalidArgument unless 1 <= k <= n and 0 <= correct <= n.
StatusOr<double> pass_at_k(int64_t n, int64_t correct, int64_t k);

// Mean of pass@k over problems; InvalidArgument for an empty list or any problem that fails the
// checks above (the message names its index).
StatusOr<double> mean_pass_at_k(const std::vector<SampleCounts>& problems, int64_t k);

}  // namespace strata
