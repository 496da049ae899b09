// What a run reports while it trains: one console line per logged step on rank 0 and the same
// record as one JSON object per line in <run dir>/metrics.jsonl (DESIGN.md "What users see").
// A record is a flat list of named numbers so later issues (RL rewards, communication time,
// expert loads) add fields without touching the writers.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace strata {

struct MetricRecord {
  std::string kind = "train";  // "train", "eval", ...
  int64_t step = 0;
  std::vector<std::pair<std::string, double>> values;  // in print order

  void add(const std::string& name, double v) { values.emplace_back(name, v); }
  double get(const std::string& name, double fallback = 0.0) const;
};

class MetricsWriter {
 public:
  // Appends to `jsonl_path` ("" = no file). Lines of steps > resumed_step left by a run that
  // crashed after its last checkpoint are dropped first, so the file matches the resumed run.
  bool open(const std::string& jsonl_path, int64_t resumed_step);
  ~MetricsWriter();
  void write(const MetricRecord& r);

 private:
  std::FILE* file_ = nullptr;
};

// "step 120 | loss 1.2345 | lr 3.0e-04 | ..." : the console line for a record.
std::string format_metric_line(const MetricRecord& r);

// Resident memory of this process in bytes (from /proc/self/statm); 0 when unknown.
int64_t resident_memory_bytes();

}  // namespace strata
