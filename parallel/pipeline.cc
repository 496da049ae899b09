#include "parallel/pipeline.h"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/timer.h"

namespace strata {
namespace {

constexpr int kMaxTag = 32767;  // the least MPI_TAG_UB MPI guarantees
constexpr double kSendSpinSeconds = 2e-3;

// A message is named by its micro-batch, the boundary it crosses (between virtual stages b and
// b + 1) and its direction; the tag is unique among the messages of one step.
int message_tag(int micro, int boundary, bool grad, int stages) { return (micro * stages + boundary) * 2 + (grad ? 1 : 0); }

using Key = std::tuple<int, int>;  // (micro, chunk)

struct PendingSend {
  std::vector<float> buffer;
  std::unique_ptr<CommHandle> handle;
};

}  // namespace

StatusOr<PipelineRun> run_pipeline(const Schedule& s, int rank, PipelineStage& stage, Communicator* pp) {
  const int S = s.p * s.v;
  if (s.p > 1 && (pp == nullptr || pp->size() != s.p || pp->rank() != rank)) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline of ", s.p, " ranks needs a pp group of that size with this "
                                                   "rank at ", rank));
  }
  if (message_tag(s.m - 1, S - 1, true, S) > kMaxTag) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline: ", s.m, " micro-batches over ", S,
                                                   " virtual stages need more message tags than MPI guarantees"));
  }
  PipelineRun run;
  Timer clock;
  std::map<Key, std::vector<float>> act_in, act_out, grad_in, grad_out;  // by (micro, this rank's chunk)
  std::vector<PendingSend> sends;
  const std::vector<PipeOp>& ops = s.ranks[static_cast<size_t>(rank)];

  // Receives are posted up to kLookahead recv ops ahead, so a message can land while this rank
  // computes; each is waited for at its own op.
  constexpr int kLookahead = 2;
  std::map<size_t, std::unique_ptr<CommHandle>> posted;  // by op index
  size_t next_post = 0;
  auto post_recvs = [&](size_t from) {
    next_post = std::max(next_post, from);
    while (next_post < ops.size() && static_cast<int>(posted.size()) < kLookahead) {
      const PipeOp& op = ops[next_post];
      if (op.kind == PipeOpKind::kRecv) {
        const int vstage = op.chunk * s.p + rank;
        const int64_t n = stage.boundary_elems(op.micro);
        std::vector<float>& buf = (op.grad ? grad_in : act_in)[{op.micro, op.chunk}];
        buf.resize(static_cast<size_t>(n));
        const int tag = message_tag(op.micro, op.grad ? vstage : vstage - 1, op.grad, S);
        posted[next_post] = pp->irecv(buf.data(), n * static_cast<int64_t>(sizeof(float)), op.peer, tag);
      }
      ++next_post;
    }
  };
  auto progress = [&] {
    for (PendingSend& p : sends) p.handle->test();
    for (auto& [at, h] : posted) h->test();
  };
  stage.set_progress(progress);
  struct Unset {
    PipelineStage& stage;
    ~Unset() { stage.set_progress(nullptr); }
  } unset{stage};
  auto reap_sends = [&] {
    sends.erase(std::remove_if(sends.begin(), sends.end(), [](PendingSend& p) { return p.handle->test(); }), sends.end());
  };

  post_recvs(0);
  for (size_t at = 0; at < ops.size(); ++at) {
    const PipeOp& op = ops[at];
    PipeTraceEntry entry{op, clock.seconds(), 0};
    const Key key{op.micro, op.chunk};
    const int vstage = op.chunk * s.p + rank;
    const int64_t n = stage.boundary_elems(op.micro);
    switch (op.kind) {
      case PipeOpKind::kRecv: {
        post_recvs(at);
        auto it = posted.find(at);
        Timer t;
        Status st = it->second->wait();
        run.wait_s += t.seconds();
        posted.erase(it);
        RETURN_IF_ERROR(st);
        post_recvs(at + 1);
        break;
      }
      case PipeOpKind::kSend: {
        auto& buffers = op.grad ? grad_out : act_out;
        auto it = buffers.find(key);
        if (it == buffers.end()) {
          return absl::InternalError(absl::StrCat("pipeline rank ", rank, ": send of micro-batch ", op.micro, " chunk ",
                                                  op.chunk, " before it was computed"));
        }
        PendingSend p{std::move(it->second), nullptr};
        buffers.erase(it);
        const int tag = message_tag(op.micro, op.grad ? vstage - 1 : vstage, op.grad, S);
        p.handle = pp->isend(p.buffer.data(), n * static_cast<int64_t>(sizeof(float)), op.peer, tag);
        run.bytes_sent += n * static_cast<int64_t>(sizeof(float));
        // The receiver has usually posted its recv (a few ops ahead) and waits: stay in MPI a
        // moment so the transfer finishes now rather than at this rank's next MPI call.
        for (Timer spin; !p.handle->test() && spin.seconds() < kSendSpinSeconds;) {
        }
        sends.push_back(std::move(p));
        break;
      }
      case PipeOpKind::kF: {
        const float* input = nullptr;
        if (vstage > 0) {
          auto it = act_in.find(key);
          if (it == act_in.end()) {
            return absl::InternalError(absl::StrCat("pipeline rank ", rank, ": forward of micro-batch ", op.micro,
                                                    " chunk ", op.chunk, " has no input"));
          }
          input = it->second.data();
        }
        float* output = nullptr;
        if (vstage < S - 1) {
          std::vector<float>& out = act_out[key];
          out.resize(static_cast<size_t>(n));
          output = out.data();
        }
        Timer t;
        stage.forward(op.micro, op.chunk, input, output);
        run.compute_s += t.seconds();
        act_in.erase(key);  // the stage copied what it keeps
        // Interleaved hand-off within a rank never happens (neighbouring virtual stages sit on
        // neighbouring ranks), but p == 1 with several chunks would: pass the output on.
        if (vstage < S - 1 && (vstage + 1) % s.p == rank) act_in[{op.micro, (vstage + 1) / s.p}] = std::move(act_out[key]);
        break;
      }
      case PipeOpKind::kB: {
        const float* d_output = nullptr;
        if (vstage < S - 1) {
          auto it = grad_in.find(key);
          if (it == grad_in.end()) {
            return absl::InternalError(absl::StrCat("pipeline rank ", rank, ": backward of micro-batch ", op.micro,
                                                    " chunk ", op.chunk, " has no output gradient"));
          }
          d_output = it->second.data();
        }
        float* d_input = nullptr;
        if (vstage > 0) {
          std::vector<float>& out = grad_out[key];
          out.resize(static_cast<size_t>(n));
          d_input = out.data();
        }
        Timer t;
        stage.backward_input(op.micro, op.chunk, d_output, d_input, !s.split_w);
        run.compute_s += t.seconds();
        grad_in.erase(key);
        if (vstage > 0 && (vstage - 1) % s.p == rank) grad_in[{op.micro, (vstage - 1) / s.p}] = std::move(grad_out[key]);
        break;
      }
      case PipeOpKind::kW: {
        Timer t;
        stage.backward_weight(op.micro, op.chunk);
        run.compute_s += t.seconds();
        break;
      }
    }
    entry.end = clock.seconds();
    run.trace.push_back(entry);
    run.activation_peak = std::max(run.activation_peak, stage.live_activations());
    reap_sends();
    stage.poll();
  }
  Timer t;
  for (PendingSend& p : sends) RETURN_IF_ERROR(p.handle->wait());
  if (!posted.empty()) return absl::InternalError(absl::StrCat("pipeline rank ", rank, ": receives left posted"));
  run.wait_s += t.seconds();
  run.seconds = clock.seconds();
  return run;
}

Schedule forward_only_schedule(int p, int m, int v) {
  Schedule s;
  s.kind = ScheduleKind::kGpipe;
  s.p = p, s.m = m, s.v = v;
  s.ranks.resize(static_cast<size_t>(p));
  const int S = p * v;
  for (int micro = 0; micro < m; ++micro) {
    for (int vs = 0; vs < S; ++vs) {
      const int r = vs % p, chunk = vs / p;
      std::vector<PipeOp>& ops = s.ranks[static_cast<size_t>(r)];
      if (vs > 0 && (vs - 1) % p != r) ops.push_back({PipeOpKind::kRecv, micro, chunk, (vs - 1) % p, false});
      ops.push_back({PipeOpKind::kF, micro, chunk, -1, false});
      if (vs < S - 1 && (vs + 1) % p != r) ops.push_back({PipeOpKind::kSend, micro, chunk, (vs + 1) % p, false});
    }
  }
  return s;
}

std::vector<int64_t> balance_stages(const std::vector<double>& block_cost, int64_t stages, double extra_first,
                                    double extra_last) {
  const int64_t n = static_cast<int64_t>(block_cost.size());
  std::vector<double> prefix(static_cast<size_t>(n + 1), 0.0);
  for (int64_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + block_cost[i];
  auto cost = [&](int64_t s, int64_t a, int64_t b) {  // stage s holds blocks [a, b)
    return prefix[b] - prefix[a] + (s == 0 ? extra_first : 0.0) + (s == stages - 1 ? extra_last : 0.0);
  };
  // best[s][i]: the least possible maximum stage cost when stages 0..s-1 hold blocks [0, i).
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(static_cast<size_t>(stages + 1), std::vector<double>(static_cast<size_t>(n + 1), kInf));
  std::vector<std::vector<int64_t>> cut(best.size(), std::vector<int64_t>(static_cast<size_t>(n + 1), 0));
  best[0][0] = 0.0;
  for (int64_t s = 1; s <= stages; ++s) {
    for (int64_t i = s; i <= n; ++i) {
      for (int64_t j = s - 1; j < i; ++j) {
        const double c = std::max(best[s - 1][j], cost(s - 1, j, i));
        if (c < best[s][i] - 1e-12 * std::max(1.0, c)) {
          best[s][i] = c;
          cut[s][i] = j;
        }
      }
    }
  }
  std::vector<int64_t> counts(static_cast<size_t>(stages), 0);
  for (int64_t s = stages, i = n; s > 0; --s) {
    const int64_t j = cut[s][i];
    counts[static_cast<size_t>(s - 1)] = i - j;
    i = j;
  }
  return counts;
}

}  // namespace strata
