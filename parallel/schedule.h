// Pipeline schedules as data (DESIGN.md "The parallel layout"): for p pipeline ranks and m
// micro-batches, a schedule is, per rank, the ordered list of ops it runs: F (forward of one
// micro-batch through one model chunk), B (its backward: the input gradient only when the
// schedule splits W off, else the whole backward), W (the deferred weight gradient), and the
// send / recv that carry activations forward and gradients back. Nothing here computes: a
// schedule can be printed, validated and simulated before any rank runs it (`strata plan`), and
// the executor (issue #9) runs a rank's list as given.
//
// Chunks: with v virtual chunks per rank (interleaved 1F1B), rank r holds virtual stages
// r, r + p, ..., r + (v - 1) p; a micro-batch flows through virtual stages 0 .. v p - 1, so it
// visits every rank v times. Other schedules have v = 1 (chunk 0, virtual stage = rank).
//
// Schedules (REFERENCE.md section 4 gives their bubbles; simulate() reproduces them):
//   GPipe            all forwards, then all backwards                        bubble (p-1)(F+B+W)
//   1F1B             p-r-1 warm-up forwards, then one forward one backward     (p-1)(F+B+W)
//   Interleaved1F1B  1F1B over v chunks (Megatron's order; m a multiple of p)  (p-1)(F+B+W)/v
//   ZbH1             1F1B with W split off and deferred into the bubbles,      (p-1)(F+B-W)
//                    at 1F1B's activation memory (zero-bubble ZB-H1)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace strata {

enum class PipeOpKind { kF, kB, kW, kSend, kRecv };

struct PipeOp {
  PipeOpKind kind = PipeOpKind::kF;
  int micro = 0;      // micro-batch
  int chunk = 0;      // model chunk on this rank (0 .. v-1)
  int peer = -1;      // kSend / kRecv: the other rank
  bool grad = false;  // kSend / kRecv: a gradient going back (else an activation going forward)
};

enum class ScheduleKind { kGpipe, k1F1B, kInterleaved1F1B, kZbH1 };
const char* schedule_name(ScheduleKind kind);  // "gpipe", "1f1b", "interleaved_1f1b", "zb_h1"

struct Schedule {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int p = 1, m = 1, v = 1;
  bool split_w = false;                   // B is the input gradient only; W ops follow
  std::vector<std::vector<PipeOp>> ranks;  // (p,) each rank's ops in order
};

// The schedule `kind` for p ranks, m micro-batches and v chunks (v > 1 for interleaved only).
// Errors: p or m below 1, v != 1 for a non-interleaved kind, m not a multiple of p for
// interleaved.
StatusOr<Schedule> make_schedule(ScheduleKind kind, int p, int m, int v = 1);

// Structural checks: on every rank each (micro, chunk) has exactly one F, B (and W when split), F
// before B before W; each send is matched by a recv of the same payload on its peer, and the sends
// from one rank to another arrive in the order the receiver posts its recvs; and the schedule
// runs to the end (no deadlock) with blocking recvs. The error names the rank and op.
Status validate_schedule(const Schedule& s);

struct ScheduleSim {
  double makespan = 0;                // time from the first op to the last
  double bubble = 0;                  // makespan minus one rank's compute (every rank computes alike)
  double bubble_ratio = 0;            // bubble / makespan
  std::vector<int> activation_peak;   // (p,) most micro-batch chunks whose activations a rank holds
  std::vector<std::vector<double>> start;  // per rank, per op: its start time (send/recv take 0)
};

// Runs the schedule on a model where one micro-batch through one whole stage costs F forward, B
// input gradient and W weight gradient (a chunk of an interleaved stage costs 1/v of that;
// without split W a backward costs B + W); communication is free. The activations of a (micro,
// chunk) count as held from its F until its B (a deferred W keeps only its GEMM inputs).
ScheduleSim simulate_schedule(const Schedule& s, double F, double B, double W);

// REFERENCE.md section 4's bubble for the schedule's kind, p and v.
double schedule_bubble_formula(ScheduleKind kind, int p, int v, double F, double B, double W);

// Each rank's ops as a line ("F0 F1 B0 W0 ...", chunk as F0.1 when v > 1), then a timeline from
// simulate_schedule with one character per `unit` of time: the op's letter, '.' when idle.
std::string format_schedule(const Schedule& s, double F, double B, double W, double unit = 1.0);

}  // namespace strata
