// ParallelDims: the parallel layout of a job (DESIGN.md "The parallel layout"). world = pp x dp;
// expert parallelism is carved out of dp: dp = ep x edp, where an expert group of ep ranks holds
// n_experts / ep experts each and the edp ranks holding the same experts reduce their gradients.
// A rank's coordinates come from one order string, fastest-varying first (default "ep,edp,pp":
// the ranks of an expert group are neighbours, so on a cluster they share a node).
//
//   rank = c[order[0]] + n[order[0]] * (c[order[1]] + n[order[1]] * c[order[2]])
//
// Groups are the ranks that share every coordinate but the ones a group varies:
//   dp  (varies ep, edp): dense gradients are reduced over it; ZeRO-1 shards over it
//   ep  (varies ep):      MoE all-to-all dispatch
//   edp (varies edp):     expert gradients are reduced over it
//   pp  (varies pp):      the pipeline's stages
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "parallel/config.h"

namespace strata {

enum class ParallelGroup { kDp, kEp, kEdp, kPp };
const char* parallel_group_name(ParallelGroup g);  // "dp", "ep", "edp", "pp"

struct RankCoord {
  int64_t ep = 0, edp = 0, pp = 0;
};

class ParallelDims {
 public:
  // Resolves dp = -1 from the world size and validates; errors read like "ep=3 must divide dp=4"
  // and name the config keys.
  static StatusOr<ParallelDims> make(const ParallelConfig& config, int64_t world);

  int64_t world() const { return world_; }
  int64_t dp() const { return dp_; }
  int64_t pp() const { return pp_; }
  int64_t ep() const { return ep_; }
  int64_t edp() const { return dp_ / ep_; }
  const std::vector<std::string>& order() const { return order_; }

  RankCoord coord(int64_t rank) const;
  int64_t rank_of(const RankCoord& c) const;
  // This rank's index within its data-parallel group: ep + ep_size * edp.
  int64_t dp_rank(int64_t rank) const;
  // The ranks of `rank`'s group, in the group's own rank order (its index = the varied coordinates
  // in order-string order).
  std::vector<int64_t> group(int64_t rank, ParallelGroup g) const;

  // "world 8 = pp 2 x dp 4 (ep 2 x edp 2), order ep,edp,pp" and one line per rank when verbose.
  std::string describe(bool per_rank = false) const;

 private:
  int64_t extent(const std::string& name) const;
  int64_t world_ = 1, dp_ = 1, pp_ = 1, ep_ = 1;
  std::vector<std::string> order_ = {"ep", "edp", "pp"};
};

}  // namespace strata
