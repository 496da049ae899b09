// Wall-clock timers for the step-time breakdown (compute / communication / bubble) that each
// logged step prints. Timer measures one interval; TimerSet accumulates named sections and is
// reset once per logged step. Both are per-thread objects, not global state.
#pragma once

#include <chrono>
#include <map>
#include <string>

namespace strata {

class Timer {
 public:
  Timer() : start_(Clock::now()) {}
  void reset() { start_ = Clock::now(); }
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double millis() const { return seconds() * 1e3; }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
};

class TimerSet {
 public:
  void add(const std::string& name, double seconds) { totals_[name] += seconds; }
  double get(const std::string& name) const {
    auto it = totals_.find(name);
    return it == totals_.end() ? 0.0 : it->second;
  }
  const std::map<std::string, double>& totals() const { return totals_; }
  void clear() { totals_.clear(); }

  // Adds the scope's duration to `name` when it ends: { auto s = timers.scope("comm"); ... }
  class Scope {
   public:
    Scope(TimerSet* set, std::string name) : set_(set), name_(std::move(name)) {}
    ~Scope() { set_->add(name_, timer_.seconds()); }

   private:
    TimerSet* set_;
    std::string name_;
    Timer timer_;
  };
  Scope scope(const std::string& name) { return Scope(this, name); }

 private:
  std::map<std::string, double> totals_;
};

}  // namespace strata
