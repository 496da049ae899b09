#include "rl/pass_at_k.h"

#include "absl/strings/str_cat.h"

namespace strata {

StatusOr<double> pass_at_k(int64_t n, int64_t correct, int64_t k) {
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("pass@k: k=", k, " must be at least 1"));
  if (n < k) return absl::InvalidArgumentError(absl::StrCat("pass@k: n=", n, " samples are fewer than k=", k));
  if (correct < 0 || correct > n) {
    return absl::InvalidArgumentError(absl::StrCat("pass@k: correct=", correct, " is outside [0, n=", n, "]"));
  }
  // Every k-subset must then contain a correct sample (C(n-c, k) = 0).
  if (n - correct < k) return 1.0;
  double all_wrong = 1.0;  // C(n-c, k) / C(n, k)
  for (int64_t i = n - correct + 1; i <= n; ++i) all_wrong *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - all_wrong;
}

StatusOr<double> mean_pass_at_k(const std::vector<SampleCounts>& problems, int64_t k) {
  if (problems.empty()) return absl::InvalidArgumentError("pass@k: no problems");
  double sum = 0.0;
  for (size_t p = 0; p < problems.size(); ++p) {
    auto one = pass_at_k(problems[p].n, problems[p].correct, k);
    if (!one.ok()) return annotate(one.status(), absl::StrCat("problem ", p));
    sum += *one;
  }
  return sum / static_cast<double>(problems.size());
}

}  // namespace strata
