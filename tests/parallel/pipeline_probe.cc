// Runs under mpirun (tests/parallel/pipeline_test.sh) on p ranks: the pipeline executor runs every
// schedule (GPipe, 1F1B, ZB-H1 at m = p, 2p, 2p + 1; interleaved 1F1B with 2 chunks at m = p, 2p;
// the forward-only schedule) over a toy stage whose arithmetic every rank can redo alone, and
// checks on each rank that
//   - the trace of ops it ran equals its op list in the schedule,
//   - the most activation sets the stage held at once equals simulate_schedule's peak,
//   - the weight gradients (and for forward-only the outputs) equal the closed form.
// Prints "pipeline ok" per rank.
//
// The toy model: virtual stage s multiplies its input (K,) elementwise by w_s = 1 + s / 8 and
// adds 1; stage 0's input is (micro + 1) everywhere; the loss is the sum of the last output. So
// d loss / d w_s = sum over micro-batches and elements of x_s * (product of w_t for t > s).
#include <cmath>
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "core/check.h"
#include "parallel/communicator.h"
#include "parallel/mpi_env.h"
#include "parallel/pipeline.h"
#include "parallel/schedule.h"

using namespace strata;

namespace {

constexpr int K = 5;

double weight(int vstage) { return 1.0 + vstage / 8.0; }

class ToyStage : public PipelineStage {
 public:
  ToyStage(int p, int v, int rank) : p_(p), v_(v), rank_(rank), dw_(static_cast<size_t>(v), 0.0) {}
  int64_t boundary_elems(int) const override { return K; }
  void forward(int micro, int chunk, const float* input, float* output) override {
    const int s = chunk * p_ + rank_;
    std::vector<float> x(K);
    for (int i = 0; i < K; ++i) x[i] = input ? input[i] : static_cast<float>(micro + 1);
    std::vector<float> y(K);
    for (int i = 0; i < K; ++i) y[i] = static_cast<float>(weight(s)) * x[i] + 1.0f;
    if (output) {
      for (int i = 0; i < K; ++i) output[i] = y[i];
    } else {
      for (int i = 0; i < K; ++i) loss += y[i];
    }
    CHECK(saved_.emplace(std::make_tuple(micro, chunk), x).second) << "forward twice";
  }
  void backward_input(int micro, int chunk, const float* d_output, float* d_input, bool whole) override {
    const int s = chunk * p_ + rank_;
    auto it = saved_.find({micro, chunk});
    CHECK(it != saved_.end()) << "backward before forward";
    std::vector<float> dy(K);
    for (int i = 0; i < K; ++i) dy[i] = d_output ? d_output[i] : 1.0f;
    if (d_input)
      for (int i = 0; i < K; ++i) d_input[i] = static_cast<float>(weight(s)) * dy[i];
    deferred_[{micro, chunk}] = {it->second, dy};  // a weight gradient keeps only its GEMM inputs
    saved_.erase(it);
    if (whole) backward_weight(micro, chunk);
  }
  void backward_weight(int micro, int chunk) override {
    auto it = deferred_.find({micro, chunk});
    CHECK(it != deferred_.end()) << "W before B";
    for (int i = 0; i < K; ++i) dw_[chunk] += static_cast<double>(it->second.first[i]) * it->second.second[i];
    deferred_.erase(it);
  }
  int live_activations() const override { return static_cast<int>(saved_.size()); }

  double loss = 0;
  const std::vector<double>& dw() const { return dw_; }

 private:
  int p_, v_, rank_;
  std::map<std::tuple<int, int>, std::vector<float>> saved_;
  std::map<std::tuple<int, int>, std::pair<std::vector<float>, std::vector<float>>> deferred_;
  std::vector<double> dw_;
};

// What every virtual stage's weight gradient and the total loss must be.
void expected(int S, int m, std::vector<double>* dw, double* loss) {
  dw->assign(static_cast<size_t>(S), 0.0);
  *loss = 0;
  for (int micro = 0; micro < m; ++micro) {
    std::vector<double> x(static_cast<size_t>(S + 1));
    x[0] = micro + 1;
    for (int s = 0; s < S; ++s) x[s + 1] = weight(s) * x[s] + 1.0;
    *loss += K * x[S];
    double down = 1.0;  // product of the weights after stage s
    for (int s = S - 1; s >= 0; --s) {
      (*dw)[s] += K * x[s] * down;
      down *= weight(s);
    }
  }
}

std::string op_str(const PipeOp& o) {
  return std::to_string(static_cast<int>(o.kind)) + "/" + std::to_string(o.micro) + "/" + std::to_string(o.chunk) + "/" +
         std::to_string(o.peer) + "/" + std::to_string(o.grad);
}

void check_run(Communicator& pp, const Schedule& s, bool forward_only, const std::string& what) {
  const int r = pp.rank();
  ToyStage stage(s.p, s.v, r);
  StatusOr<PipelineRun> run = run_pipeline(s, r, stage, &pp);
  CHECK(run.ok()) << what << ": " << run.status().ToString();
  const std::vector<PipeOp>& ops = s.ranks[static_cast<size_t>(r)];
  CHECK_EQ(run->trace.size(), ops.size()) << what << ": trace length";
  for (size_t i = 0; i < ops.size(); ++i)
    CHECK(op_str(run->trace[i].op) == op_str(ops[i])) << what << ": op " << i << " ran " << op_str(run->trace[i].op)
                                                      << ", schedule says " << op_str(ops[i]);
  for (size_t i = 1; i < run->trace.size(); ++i) CHECK(run->trace[i].start >= run->trace[i - 1].end) << what;
  std::vector<double> dw;
  double loss = 0;
  const int S = s.p * s.v;
  expected(S, s.m, &dw, &loss);
  if (!forward_only) {
    const ScheduleSim sim = simulate_schedule(s, 1, 1, 1);
    CHECK_EQ(run->activation_peak, sim.activation_peak[static_cast<size_t>(r)])
        << what << ": measured activation peak vs the schedule's";
    for (int c = 0; c < s.v; ++c) {
      const double want = dw[static_cast<size_t>(c * s.p + r)];
      CHECK(std::fabs(stage.dw()[c] - want) <= 1e-5 * std::fabs(want)) << what << ": dw of chunk " << c << " is "
                                                                         << stage.dw()[c] << ", want " << want;
    }
  } else {
    CHECK_EQ(run->activation_peak, s.m * s.v) << what << ": forward-only keeps what it computed (the toy frees nothing)";
  }
  if (r == s.p - 1) CHECK(std::fabs(stage.loss - loss) <= 1e-5 * loss) << what << ": loss " << stage.loss << " want " << loss;
  const int64_t sends = std::count_if(ops.begin(), ops.end(), [](const PipeOp& o) { return o.kind == PipeOpKind::kSend; });
  CHECK_EQ(run->bytes_sent, sends * K * static_cast<int64_t>(sizeof(float))) << what;
}

}  // namespace

int main(int argc, char** argv) {
  MpiEnv env(&argc, &argv);
  std::unique_ptr<Communicator> world = mpi_world_communicator(60.0);
  const int p = world->size();
  int runs = 0;
  for (ScheduleKind kind : {ScheduleKind::kGpipe, ScheduleKind::k1F1B, ScheduleKind::kZbH1, ScheduleKind::kInterleaved1F1B}) {
    const bool inter = kind == ScheduleKind::kInterleaved1F1B;
    for (int m : {p, 2 * p, 2 * p + 1}) {
      if (inter && m % p != 0) continue;
      StatusOr<Schedule> s = make_schedule(kind, p, m, inter ? 2 : 1);
      CHECK(s.ok()) << s.status().ToString();
      check_run(*world, *s, false, std::string(schedule_name(kind)) + " m=" + std::to_string(m));
      ++runs;
    }
  }
  for (int v : {1, 2}) {
    check_run(*world, forward_only_schedule(p, 3, v), true, "forward-only v=" + std::to_string(v));
    ++runs;
  }
  std::printf("rank %d: %d runs, pipeline ok\n", world->rank(), runs);
  return 0;
}
