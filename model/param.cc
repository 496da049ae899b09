#include "model/param.h"

#include <algorithm>

#include "core/rng.h"

namespace strata {

void init_params(const ParamList& params, uint64_t seed, float init_std) {
  for (const ParamRef& p : params) {
    float* v = p.param->v();
    const int64_t n = p.param->value.numel();
    switch (p.kind) {
      case ParamKind::kMatrix:
      case ParamKind::kEmbedding:
        // A shard draws the numbers its rows have in the whole tensor.
        RngStream(seed, p.name).fill_normal(v, n, p.row_begin * (n / std::max<int64_t>(p.param->value.shape()[0], 1)), 0.0f, init_std);
        break;
      case ParamKind::kNorm:
        for (int64_t i = 0; i < n; ++i) v[i] = 1.0f;
        break;
      case ParamKind::kBias:
      case ParamKind::kRouterBias:
        for (int64_t i = 0; i < n; ++i) v[i] = 0.0f;
        break;
    }
  }
}

void zero_grads(const ParamList& params) {
  for (const ParamRef& p : params)
    if (p.param->grad.defined()) p.param->grad.zero_();
}

int64_t count_elements(const ParamList& params) {
  int64_t n = 0;
  for (const ParamRef& p : params) n += p.param->value.numel();
  return n;
}

}  // namespace strata
