// WeightGrads: the weight-gradient half of a backward pass, deferred. A layer's backward computes
// its input gradient at once (the "B" of a zero-bubble pipeline schedule) and, for each parameter
// GEMM, queues the dW product here; running the queue is the "W" op. A plain backward runs the
// queue immediately after, so there is one code path. Tasks capture pointers into the layer's
// saved activations, which must stay alive until the queue has run.
#pragma once

#include <functional>
#include <vector>

namespace strata {

class WeightGrads {
 public:
  void add(std::function<void()> task) { tasks_.push_back(std::move(task)); }
  // Runs every queued task in the order queued (deterministic accumulation order) and clears.
  void run() {
    for (auto& t : tasks_) t();
    tasks_.clear();
  }
  bool empty() const { return tasks_.empty(); }
  size_t size() const { return tasks_.size(); }

 private:
  std::vector<std::function<void()>> tasks_;
};

}  // namespace strata
