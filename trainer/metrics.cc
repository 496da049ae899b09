#include "trainer/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"

namespace strata {

double MetricRecord::get(const std::string& name, double fallback) const {
  for (const auto& [k, v] : values)
    if (k == name) return v;
  return fallback;
}

bool MetricsWriter::open(const std::string& jsonl_path, int64_t resumed_step) {
  if (jsonl_path.empty()) return true;
  if (resumed_step >= 0) {  // drop records the resumed run will write again
    std::ifstream in(jsonl_path);
    std::vector<std::string> keep;
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number() &&
          j["step"].get<int64_t>() > resumed_step) {
        continue;
      }
      keep.push_back(line);
    }
    in.close();
    std::ofstream out(jsonl_path, std::ios::trunc);
    for (const auto& l : keep) out << l << "\n";
  }
  file_ = std::fopen(jsonl_path.c_str(), "a");
  return file_ != nullptr;
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(const MetricRecord& r) {
  if (!file_) return;
  nlohmann::json j;
  j["kind"] = r.kind;
  j["step"] = r.step;
  for (const auto& [k, v] : r.values) {
    if (std::isfinite(v)) {
      j[k] = v;
    } else {
      j[k] = nullptr;  // JSON has no NaN; null marks a non-finite value
    }
  }
  std::fprintf(file_, "%s\n", j.dump().c_str());
  std::fflush(file_);
}

std::string format_metric_line(const MetricRecord& r) {
  std::string s = absl::StrFormat("%s %6d", r.kind == "train" ? "step" : r.kind.c_str(), r.step);
  for (const auto& [k, v] : r.values) {
    std::string val;
    if (k == "lr") {
      val = absl::StrFormat("%.2e", v);
    } else if (k == "tokens_per_s") {
      val = absl::StrFormat("%.0f", v);
    } else if (k == "mfu") {
      val = absl::StrFormat("%.1f%%", 100.0 * v);
    } else if (k == "step_s") {
      val = absl::StrFormat("%.2fs", v);
    } else if (k == "memory_gb") {
      val = absl::StrFormat("%.2fG", v);
    } else if (std::fabs(v) >= 1e5 || (v != 0 && std::fabs(v) < 1e-3)) {
      val = absl::StrFormat("%.3e", v);
    } else {
      val = absl::StrFormat("%.4f", v);
    }
    std::string name = k == "tokens_per_s" ? "tok/s" : k == "step_s" ? "time" : k == "memory_gb" ? "mem" : k;
    s += " | " + name + " " + val;
  }
  return s;
}

int64_t resident_memory_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace strata
