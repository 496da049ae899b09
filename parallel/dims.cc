#include "parallel/dims.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/check.h"

namespace strata {

const char* parallel_group_name(ParallelGroup g) {
  switch (g) {
    case ParallelGroup::kDp: return "dp";
    case ParallelGroup::kEp: return "ep";
    case ParallelGroup::kEdp: return "edp";
    case ParallelGroup::kPp: return "pp";
  }
  return "?";
}

StatusOr<ParallelDims> ParallelDims::make(const ParallelConfig& config, int64_t world) {
  if (world < 1) return absl::InvalidArgumentError(absl::StrCat("world size ", world, " must be >= 1"));
  ParallelDims d;
  d.world_ = world;
  d.pp_ = config.pp;
  d.ep_ = config.ep;
  if (!parse_rank_order(config.order, &d.order_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.order: \"", config.order, "\" is not a permutation of ep,edp,pp"));
  }
  if (world % d.pp_ != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.pp: pp=", d.pp_, " does not divide the world of ", world, " ranks"));
  }
  d.dp_ = config.dp < 0 ? world / d.pp_ : config.dp;
  if (d.dp_ < 1 || d.dp_ * d.pp_ != world) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.dp: pp x dp = ", d.pp_, " x ", d.dp_, " = ",
                                                   d.pp_ * d.dp_, " ranks, but the job has ", world,
                                                   " (set dp: -1 to infer it)"));
  }
  if (d.dp_ % d.ep_ != 0) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.ep: ep=", d.ep_, " must divide dp=", d.dp_));
  }
  return d;
}

int64_t ParallelDims::extent(const std::string& name) const {
  if (name == "ep") return ep_;
  if (name == "edp") return edp();
  return pp_;
}

RankCoord ParallelDims::coord(int64_t rank) const {
  CHECK(rank >= 0 && rank < world_) << "rank " << rank << " of " << world_;
  RankCoord c;
  int64_t rest = rank;
  for (const std::string& name : order_) {
    const int64_t n = extent(name), v = rest % n;
    rest /= n;
    (name == "ep" ? c.ep : name == "edp" ? c.edp : c.pp) = v;
  }
  return c;
}

int64_t ParallelDims::rank_of(const RankCoord& c) const {
  int64_t rank = 0, stride = 1;
  for (const std::string& name : order_) {
    rank += stride * (name == "ep" ? c.ep : name == "edp" ? c.edp : c.pp);
    stride *= extent(name);
  }
  return rank;
}

int64_t ParallelDims::dp_rank(int64_t rank) const {
  const RankCoord c = coord(rank);
  return c.ep + ep_ * c.edp;
}

std::vector<int64_t> ParallelDims::group(int64_t rank, ParallelGroup g) const {
  const RankCoord base = coord(rank);
  std::vector<int64_t> out;
  switch (g) {
    case ParallelGroup::kDp:
      for (int64_t e = 0; e < edp(); ++e)
        for (int64_t x = 0; x < ep_; ++x) out.push_back(rank_of({x, e, base.pp}));
      break;
    case ParallelGroup::kEp:
      for (int64_t x = 0; x < ep_; ++x) out.push_back(rank_of({x, base.edp, base.pp}));
      break;
    case ParallelGroup::kEdp:
      for (int64_t e = 0; e < edp(); ++e) out.push_back(rank_of({base.ep, e, base.pp}));
      break;
    case ParallelGroup::kPp:
      for (int64_t p = 0; p < pp_; ++p) out.push_back(rank_of({base.ep, base.edp, p}));
      break;
  }
  return out;
}

std::string ParallelDims::describe(bool per_rank) const {
  std::string s = absl::StrCat("world ", world_, " = pp ", pp_, " x dp ", dp_, " (ep ", ep_, " x edp ", edp(),
                               "), order ", absl::StrJoin(order_, ","));
  if (!per_rank) return s;
  for (int64_t r = 0; r < world_; ++r) {
    const RankCoord c = coord(r);
    absl::StrAppend(&s, "\n  rank ", r, ": pp ", c.pp, ", dp ", dp_rank(r), " (ep ", c.ep, ", edp ", c.edp,
                    "); dp group [", absl::StrJoin(group(r, ParallelGroup::kDp), ","), "], ep group [",
                    absl::StrJoin(group(r, ParallelGroup::kEp), ","), "], edp group [",
                    absl::StrJoin(group(r, ParallelGroup::kEdp), ","), "], pp group [",
                    absl::StrJoin(group(r, ParallelGroup::kPp), ","), "]");
  }
  return s;
}

}  // namespace strata
