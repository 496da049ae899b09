#include "parallel/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace strata {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

PipeOp compute(PipeOpKind kind, int micro, int chunk = 0) { return PipeOp{kind, micro, chunk, -1, false}; }

// GPipe and 1F1B: each rank's compute ops in order (no W: the backward is whole).
std::vector<PipeOp> one_f_one_b(int p, int m, int r, bool gpipe) {
  std::vector<PipeOp> ops;
  const int warmup = gpipe ? m : std::min(p - r - 1, m);
  for (int j = 0; j < warmup; ++j) ops.push_back(compute(PipeOpKind::kF, j));
  for (int k = 0; k + warmup < m; ++k) {
    ops.push_back(compute(PipeOpKind::kF, warmup + k));
    ops.push_back(compute(PipeOpKind::kB, k));
  }
  for (int j = std::max(m - warmup, 0); j < m; ++j) ops.push_back(compute(PipeOpKind::kB, j));
  return ops;
}

// Megatron's interleaved 1F1B: virtual micro-batch k of rank r is micro-batch
// (k / (p v)) p + k % p through chunk (k / p) % v forward, chunk v - 1 - (k / p) % v backward.
std::vector<PipeOp> interleaved(int p, int m, int v, int r) {
  const int total = m * v;
  const int warmup = std::min((p - r - 1) * 2 + (v - 1) * p, total);
  auto micro = [&](int k) { return (k / (p * v)) * p + k % p; };
  auto fwd = [&](int k) { return compute(PipeOpKind::kF, micro(k), (k / p) % v); };
  auto bwd = [&](int k) { return compute(PipeOpKind::kB, micro(k), v - 1 - (k / p) % v); };
  std::vector<PipeOp> ops;
  for (int k = 0; k < warmup; ++k) ops.push_back(fwd(k));
  for (int i = 0; i + warmup < total; ++i) {
    ops.push_back(fwd(warmup + i));
    ops.push_back(bwd(i));
  }
  for (int i = std::max(total - warmup, 0); i < total; ++i) ops.push_back(bwd(i));
  return ops;
}

// ZB-H1 by list scheduling at unit costs (F = B = W = 1): every rank takes, at each moment, the
// op that can start first, preferring B (on the critical path) over F over W at a tie; a rank
// starts a new forward only while fewer than p - r micro-batches are between their F and B
// (1F1B's activation memory), so the deferred W's fill what would be bubbles. Once p W's are
// pending a W goes before the next F, so a rank never holds the weight-gradient inputs of more
// than p micro-batches (deferring every W to the cool-down would hold all m).
std::vector<std::vector<PipeOp>> zb_h1(int p, int m) {
  std::vector<std::vector<double>> f_end(p, std::vector<double>(m, kInf)), b_end = f_end;
  std::vector<std::vector<PipeOp>> ops(p);
  std::vector<double> free(p, 0.0);
  std::vector<int> next_f(p, 0), next_b(p, 0), next_w(p, 0);
  int left = 3 * p * m;
  while (left > 0) {
    double best_t = kInf;
    int best_r = -1, best_kind = 3, best_rank = 3;
    for (int r = 0; r < p; ++r) {
      // rank: the tie-break among ops that can start at the same time (lower first).
      auto consider = [&](double ready, int kind, int rank) {
        const double t = std::max(ready, free[r]);
        if (t < best_t || (t == best_t && (rank < best_rank || (rank == best_rank && r < best_r)))) {
          best_t = t, best_r = r, best_kind = kind, best_rank = rank;
        }
      };
      if (next_b[r] < next_f[r]) {  // B of the oldest forward: needs the gradient from r + 1
        const int j = next_b[r];
        consider(r == p - 1 ? f_end[r][j] : b_end[r + 1][j], 0, 0);
      }
      if (next_f[r] < m && next_f[r] - next_b[r] < p - r) consider(r == 0 ? 0.0 : f_end[r - 1][next_f[r]], 1, 2);
      if (next_w[r] < next_b[r]) consider(b_end[r][next_w[r]], 2, next_b[r] - next_w[r] >= p ? 1 : 3);
    }
    const int r = best_r;
    const double t_end = best_t + 1.0;
    if (best_kind == 0) {
      b_end[r][next_b[r]] = t_end;
      ops[r].push_back(compute(PipeOpKind::kB, next_b[r]++));
    } else if (best_kind == 1) {
      f_end[r][next_f[r]] = t_end;
      ops[r].push_back(compute(PipeOpKind::kF, next_f[r]++));
    } else {
      ops[r].push_back(compute(PipeOpKind::kW, next_w[r]++));
    }
    free[r] = t_end;
    --left;
  }
  return ops;
}

// Adds the sends and recvs around each compute op: an F receives its input from the previous
// virtual stage and sends its output on; a B receives its output's gradient and sends its input's
// back. Virtual stage of chunk c on rank r: c p + r. Hand-offs within a rank need no message.
void add_messages(Schedule& s) {
  const int S = s.v * s.p;
  for (int r = 0; r < s.p; ++r) {
    std::vector<PipeOp> out;
    for (const PipeOp& op : s.ranks[r]) {
      const int stage = op.chunk * s.p + r;
      auto peer = [&](int st) { return st % s.p; };
      if (op.kind == PipeOpKind::kF && stage > 0 && peer(stage - 1) != r)
        out.push_back({PipeOpKind::kRecv, op.micro, op.chunk, peer(stage - 1), false});
      if (op.kind == PipeOpKind::kB && stage < S - 1 && peer(stage + 1) != r)
        out.push_back({PipeOpKind::kRecv, op.micro, op.chunk, peer(stage + 1), true});
      out.push_back(op);
      if (op.kind == PipeOpKind::kF && stage < S - 1 && peer(stage + 1) != r)
        out.push_back({PipeOpKind::kSend, op.micro, op.chunk, peer(stage + 1), false});
      if (op.kind == PipeOpKind::kB && stage > 0 && peer(stage - 1) != r)
        out.push_back({PipeOpKind::kSend, op.micro, op.chunk, peer(stage - 1), true});
    }
    s.ranks[r] = std::move(out);
  }
}

// The chunk on the receiving side of a message: the next virtual stage forward, the previous back.
int peer_chunk(const Schedule& s, int rank, const PipeOp& op) {
  const int stage = op.chunk * s.p + rank;
  const int other = op.grad ? (op.kind == PipeOpKind::kSend ? stage - 1 : stage + 1)
                            : (op.kind == PipeOpKind::kSend ? stage + 1 : stage - 1);
  return other / s.p;
}

const char* op_letter(PipeOpKind k) {
  switch (k) {
    case PipeOpKind::kF: return "F";
    case PipeOpKind::kB: return "B";
    case PipeOpKind::kW: return "W";
    case PipeOpKind::kSend: return "S";
    case PipeOpKind::kRecv: return "R";
  }
  return "?";
}

std::string op_text(const Schedule& s, const PipeOp& op) {
  std::string t = absl::StrCat(op_letter(op.kind), op.micro);
  if (s.v > 1) absl::StrAppend(&t, ".", op.chunk);
  if (op.kind == PipeOpKind::kSend || op.kind == PipeOpKind::kRecv)
    absl::StrAppend(&t, op.grad ? "g" : "a", op.kind == PipeOpKind::kSend ? ">" : "<", op.peer);
  return t;
}

// Runs the ops in order with blocking recvs. Returns the start times, or the ranks stuck.
struct RunResult {
  std::vector<std::vector<double>> start;
  std::string stuck;  // empty when every op ran
};

RunResult run(const Schedule& s, double F, double B, double W) {
  const double v = s.v;
  auto cost = [&](PipeOpKind k) {
    switch (k) {
      case PipeOpKind::kF: return F / v;
      case PipeOpKind::kB: return (s.split_w ? B : B + W) / v;
      case PipeOpKind::kW: return W / v;
      default: return 0.0;
    }
  };
  RunResult out;
  out.start.resize(static_cast<size_t>(s.p));
  std::vector<size_t> pc(static_cast<size_t>(s.p), 0);
  std::vector<double> free(static_cast<size_t>(s.p), 0.0);
  // Sends posted so far: (from, to, grad, micro, receiver's chunk) -> time sent, FIFO per pair.
  std::map<std::tuple<int, int>, std::vector<std::tuple<bool, int, int, double>>> sent;
  std::map<std::tuple<int, int>, size_t> taken;
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < s.p; ++r) {
      while (pc[r] < s.ranks[r].size()) {
        const PipeOp& op = s.ranks[r][pc[r]];
        double t = free[r];
        if (op.kind == PipeOpKind::kRecv) {
          auto& q = sent[{op.peer, r}];
          size_t& k = taken[{op.peer, r}];
          if (k >= q.size()) break;  // blocked until the peer sends
          t = std::max(t, std::get<3>(q[k]));
          ++k;
        } else if (op.kind == PipeOpKind::kSend) {
          sent[{r, op.peer}].emplace_back(op.grad, op.micro, peer_chunk(s, r, op), t);
        }
        out.start[r].push_back(t);
        free[r] = t + cost(op.kind);
        ++pc[r];
        progress = true;
      }
    }
  }
  for (int r = 0; r < s.p; ++r)
    if (pc[r] < s.ranks[r].size())
      absl::StrAppend(&out.stuck, out.stuck.empty() ? "" : ", ", "rank ", r, " at op ", pc[r], " (",
                      op_text(s, s.ranks[r][pc[r]]), ")");
  return out;
}

}  // namespace

const char* schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kGpipe: return "gpipe";
    case ScheduleKind::k1F1B: return "1f1b";
    case ScheduleKind::kInterleaved1F1B: return "interleaved_1f1b";
    case ScheduleKind::kZbH1: return "zb_h1";
  }
  return "?";
}

StatusOr<Schedule> make_schedule(ScheduleKind kind, int p, int m, int v) {
  if (p < 1 || m < 1 || v < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline schedule: p = ", p, ", m = ", m, ", v = ", v,
                                                   " (each must be at least 1)"));
  }
  if (kind != ScheduleKind::kInterleaved1F1B && v != 1) {
    return absl::InvalidArgumentError(absl::StrCat(schedule_name(kind), ": virtual chunks (v = ", v,
                                                   ") need the interleaved_1f1b schedule"));
  }
  if (kind == ScheduleKind::kInterleaved1F1B && m % p != 0) {
    return absl::InvalidArgumentError(absl::StrCat("interleaved_1f1b: m = ", m,
                                                   " micro-batches must be a multiple of p = ", p));
  }
  Schedule s;
  s.kind = kind;
  s.p = p;
  s.m = m;
  s.v = v;
  s.split_w = kind == ScheduleKind::kZbH1;
  if (kind == ScheduleKind::kZbH1) {
    s.ranks = zb_h1(p, m);
  } else {
    for (int r = 0; r < p; ++r) {
      s.ranks.push_back(kind == ScheduleKind::kInterleaved1F1B ? interleaved(p, m, v, r)
                                                               : one_f_one_b(p, m, r, kind == ScheduleKind::kGpipe));
    }
  }
  add_messages(s);
  return s;
}

Status validate_schedule(const Schedule& s) {
  if (static_cast<int>(s.ranks.size()) != s.p) {
    return absl::InvalidArgumentError(absl::StrCat("schedule has ", s.ranks.size(), " ranks, p = ", s.p));
  }
  for (int r = 0; r < s.p; ++r) {
    // Per (micro, chunk): 0 nothing yet, 1 after F, 2 after B, 3 after W.
    std::vector<int> state(static_cast<size_t>(s.m * s.v), 0);
    for (size_t i = 0; i < s.ranks[r].size(); ++i) {
      const PipeOp& op = s.ranks[r][i];
      if (op.micro < 0 || op.micro >= s.m || op.chunk < 0 || op.chunk >= s.v) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", r, " op ", i, " (", op_text(s, op), "): out of range"));
      }
      int& st = state[static_cast<size_t>(op.micro * s.v + op.chunk)];
      const int want = op.kind == PipeOpKind::kF ? 0 : op.kind == PipeOpKind::kB ? 1 : op.kind == PipeOpKind::kW ? 2 : -1;
      if (want < 0) continue;
      if (op.kind == PipeOpKind::kW && !s.split_w) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", r, " op ", i, ": a W in a schedule without split W"));
      }
      if (st != want) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", r, " op ", i, " (", op_text(s, op),
                                                       "): out of order (F, then B", s.split_w ? ", then W" : "",
                                                       " for each micro-batch and chunk)"));
      }
      ++st;
    }
    const int done = s.split_w ? 3 : 2;
    for (int k = 0; k < s.m * s.v; ++k) {
      if (state[static_cast<size_t>(k)] != done) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", r, ": micro-batch ", k / s.v, " chunk ", k % s.v,
                                                       " is missing ops"));
      }
    }
  }
  // Messages: the i-th send from a to b must be the i-th recv at b from a, with the same payload.
  std::map<std::tuple<int, int>, std::vector<std::tuple<bool, int, int>>> sends, recvs;
  for (int r = 0; r < s.p; ++r) {
    for (const PipeOp& op : s.ranks[r]) {
      if (op.peer == r || ((op.kind == PipeOpKind::kSend || op.kind == PipeOpKind::kRecv) &&
                           (op.peer < 0 || op.peer >= s.p))) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", r, " (", op_text(s, op), "): bad peer"));
      }
      if (op.kind == PipeOpKind::kSend) sends[{r, op.peer}].emplace_back(op.grad, op.micro, peer_chunk(s, r, op));
      if (op.kind == PipeOpKind::kRecv) recvs[{op.peer, r}].emplace_back(op.grad, op.micro, op.chunk);
    }
  }
  if (sends != recvs) {
    for (const auto& [pair, list] : sends) {
      const auto& other = recvs[pair];
      for (size_t i = 0; i < std::max(list.size(), other.size()); ++i) {
        if (i >= list.size() || i >= other.size() || list[i] != other[i]) {
          return absl::InvalidArgumentError(absl::StrCat("messages from rank ", std::get<0>(pair), " to rank ",
                                                         std::get<1>(pair), ": send ", i,
                                                         " does not match the receiver's recv ", i));
        }
      }
    }
    return absl::InvalidArgumentError("a recv has no matching send");
  }
  const RunResult ran = run(s, 1.0, 1.0, 1.0);
  if (!ran.stuck.empty()) return absl::InvalidArgumentError(absl::StrCat("schedule deadlocks: ", ran.stuck));
  return OkStatus();
}

ScheduleSim simulate_schedule(const Schedule& s, double F, double B, double W) {
  ScheduleSim sim;
  const RunResult ran = run(s, F, B, W);
  sim.start = ran.start;
  const double v = s.v;
  for (int r = 0; r < s.p; ++r) {
    int held = 0, peak = 0;
    for (size_t i = 0; i < s.ranks[r].size() && i < ran.start[r].size(); ++i) {
      const PipeOp& op = s.ranks[r][i];
      const double c = op.kind == PipeOpKind::kF   ? F / v
                       : op.kind == PipeOpKind::kB ? (s.split_w ? B : B + W) / v
                       : op.kind == PipeOpKind::kW ? W / v
                                                   : 0.0;
      sim.makespan = std::max(sim.makespan, ran.start[r][i] + c);
      if (op.kind == PipeOpKind::kF) peak = std::max(peak, ++held);
      if (op.kind == PipeOpKind::kB) --held;
    }
    sim.activation_peak.push_back(peak);
  }
  sim.bubble = sim.makespan - s.m * (F + B + W);
  sim.bubble_ratio = sim.makespan > 0 ? sim.bubble / sim.makespan : 0.0;
  return sim;
}

double schedule_bubble_formula(ScheduleKind kind, int p, int v, double F, double B, double W) {
  switch (kind) {
    case ScheduleKind::kGpipe:
    case ScheduleKind::k1F1B: return (p - 1) * (F + B + W);
    case ScheduleKind::kInterleaved1F1B: return (p - 1) * (F + B + W) / v;
    case ScheduleKind::kZbH1: return (p - 1) * (F + B - W);
  }
  return 0.0;
}

std::string format_schedule(const Schedule& s, double F, double B, double W, double unit) {
  std::string out = absl::StrFormat("%s: p %d, m %d, v %d%s\n", schedule_name(s.kind), s.p, s.m, s.v,
                                    s.split_w ? ", W split off" : "");
  for (int r = 0; r < s.p; ++r) {
    absl::StrAppend(&out, "rank ", r, ":");
    for (const PipeOp& op : s.ranks[r])
      if (op.kind != PipeOpKind::kSend && op.kind != PipeOpKind::kRecv) absl::StrAppend(&out, " ", op_text(s, op));
    out += "\n";
  }
  const ScheduleSim sim = simulate_schedule(s, F, B, W);
  const int width = static_cast<int>(std::ceil(sim.makespan / unit));
  for (int r = 0; r < s.p; ++r) {
    std::string line(static_cast<size_t>(width), '.');
    for (size_t i = 0; i < s.ranks[r].size() && i < sim.start[r].size(); ++i) {
      const PipeOp& op = s.ranks[r][i];
      const double c = op.kind == PipeOpKind::kF   ? F / s.v
                       : op.kind == PipeOpKind::kB ? (s.split_w ? B : B + W) / s.v
                       : op.kind == PipeOpKind::kW ? W / s.v
                                                   : 0.0;
      const int a = static_cast<int>(std::lround(sim.start[r][i] / unit));
      const int b = static_cast<int>(std::lround((sim.start[r][i] + c) / unit));
      for (int t = a; t < b && t < width; ++t) line[static_cast<size_t>(t)] = op_letter(op.kind)[0];
    }
    absl::StrAppend(&out, "rank ", r, " |", line, "|\n");
  }
  absl::StrAppend(&out, absl::StrFormat("time %.2f, bubble %.2f (%.1f%%), activations held at most:", sim.makespan,
                                        sim.bubble, 100.0 * sim.bubble_ratio));
  for (int a : sim.activation_peak) absl::StrAppend(&out, " ", a);
  out += "\n";
  return out;
}

}  // namespace strata
