// Runs under mpirun (tests/parallel/communicator_test.sh). Mode "collectives" checks every call
// of the MPI Communicator on 3 or 4 ranks against values each rank can compute alone and prints
// "collectives ok" per rank; mode "hang" makes the last rank skip a collective so the others time
// out, and rank 0's message must name the collective and the missing rank. Mode "buckets" checks
// GradBuckets (parallel/grad_buckets.h) in both modes and prints "buckets ok" per rank.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "core/check.h"
#include "parallel/communicator.h"
#include "parallel/grad_buckets.h"
#include "parallel/mpi_env.h"

using namespace strata;

namespace {

void expect(bool ok, const std::string& what) { CHECK(ok) << what; }

void collectives(Communicator& world) {
  const int r = world.rank(), n = world.size();
  // all_reduce sum and max, float and double, blocking and not.
  std::vector<float> v = {float(r), float(r * r), 1.0f};
  expect(world.all_reduce(v.data(), 3, ReduceOp::kSum).ok(), "all_reduce sum");
  expect(v[0] == n * (n - 1) / 2.0f && v[2] == n, "all_reduce sum values");
  std::vector<double> d = {double(r), -double(r)};
  expect(world.all_reduce(d.data(), 2, ReduceOp::kMax).ok(), "all_reduce max");
  expect(d[0] == n - 1 && d[1] == 0, "all_reduce max values");
  float x = 2.0f;
  auto h = world.iall_reduce(&x, 1, ReduceOp::kSum);
  expect(h->wait().ok() && x == 2.0f * n, "iall_reduce");
  // reduce_scatter: rank r contributes (r + 1) * [0, 1, ..., 2n-1]; rank r gets its block of 2.
  std::vector<float> in(2 * n), out(2);
  for (int i = 0; i < 2 * n; ++i) in[i] = float((r + 1) * i);
  expect(world.reduce_scatter(in.data(), out.data(), 2, ReduceOp::kSum).ok(), "reduce_scatter");
  const float tri = n * (n + 1) / 2.0f;
  expect(out[0] == tri * (2 * r) && out[1] == tri * (2 * r + 1), "reduce_scatter values");
  // all_gather.
  std::vector<float> mine = {float(10 * r), float(10 * r + 1)}, all(2 * n);
  expect(world.all_gather(mine.data(), all.data(), 2).ok(), "all_gather");
  for (int q = 0; q < n; ++q) expect(all[2 * q] == 10 * q && all[2 * q + 1] == 10 * q + 1, "all_gather values");
  // all_to_all_v: rank r sends q + 1 bytes of value (r * 16 + q) to rank q (rank r receives r + 1 from each).
  std::vector<int64_t> sc(n), rc(n, r + 1);
  std::vector<unsigned char> send;
  for (int q = 0; q < n; ++q) {
    sc[q] = q + 1;
    send.insert(send.end(), static_cast<size_t>(q + 1), static_cast<unsigned char>(r * 16 + q));
  }
  std::vector<unsigned char> recv(static_cast<size_t>(n * (r + 1)));
  expect(world.all_to_all_v(send.data(), sc, recv.data(), rc).ok(), "all_to_all_v");
  for (int q = 0; q < n; ++q)
    for (int k = 0; k <= r; ++k) expect(recv[q * (r + 1) + k] == q * 16 + r, "all_to_all_v values");
  // send / recv around a ring, with the non-blocking forms.
  int got = -1, value = 100 + r;
  auto rh = world.irecv(&got, sizeof(got), (r + n - 1) % n, 7);
  auto sh = world.isend(&value, sizeof(value), (r + 1) % n, 7);
  expect(sh->wait().ok() && rh->wait().ok() && got == 100 + (r + n - 1) % n, "ring send/recv");
  // broadcast from the last rank.
  char msg[16] = {};
  if (r == n - 1) std::strcpy(msg, "from the last");
  expect(world.broadcast(msg, sizeof(msg), n - 1).ok() && std::string(msg) == "from the last", "broadcast");
  expect(world.barrier().ok(), "barrier");
  // split into {even} and {odd} world ranks: a sum over each.
  std::vector<int64_t> group;
  for (int q = r % 2; q < n; q += 2) group.push_back(q);
  auto sub = world.split(group, r % 2 ? "odd" : "even");
  expect(sub.ok(), "split");
  float one = 1.0f;
  expect((*sub)->all_reduce(&one, 1, ReduceOp::kSum).ok() && one == float(group.size()), "split group sum");
  expect((*sub)->members() == group, "split members");
  std::printf("rank %d: collectives ok\n", r);
}

// Five gradients of awkward sizes, with rank-dependent values, in buckets of ~100 floats: the
// views replace the tensors, buckets start strictly in order as their tensors are marked ready,
// and finish() leaves the sum over ranks (all-reduce) or this rank's shard of it (reduce-scatter).
void buckets(Communicator& world) {
  const int r = world.rank(), n = world.size();
  const std::vector<int64_t> sizes = {70, 33, 5, 120, 1};  // buckets: {70, 33}, {5, 120}, {1}
  for (auto mode : {GradBuckets::Mode::kAllReduce, GradBuckets::Mode::kReduceScatter}) {
    std::vector<Tensor> grads;
    for (int64_t s : sizes) grads.push_back(Tensor::zeros({s}, DType::kF32));
    std::vector<Tensor*> ptrs;
    for (Tensor& g : grads) ptrs.push_back(&g);
    GradBuckets gb(ptrs, 100 * sizeof(float), &world, mode);
    const auto& bs = gb.buckets();
    expect(bs.size() == 3 && bs[0].count == 2 && bs[1].count == 2 && bs[2].count == 1, "bucket split");
    for (const auto& b : bs) expect(b.buffer.numel() % (16 * n) == 0 && b.buffer.numel() >= b.used, "bucket padding");
    for (size_t t = 0; t < grads.size(); ++t) {
      const auto& b = bs[t < 2 ? 0 : t < 4 ? 1 : 2];
      expect(grads[t].f32() >= b.buffer.f32() && grads[t].f32() + grads[t].numel() <= b.buffer.f32() + b.buffer.numel(),
             "gradient is a view of its bucket");
    }
    for (int round = 0; round < 2; ++round) {  // the second round reuses the buckets after zero()
      gb.zero();
      for (size_t t = 0; t < grads.size(); ++t)
        for (int64_t i = 0; i < grads[t].numel(); ++i) grads[t].f32()[i] = float((r + 1) * (1000 * t + i + round));
      // Bucket 1 complete first: it must wait for bucket 0.
      gb.mark_ready(grads[2].f32());
      gb.mark_ready(grads[3].f32());
      expect(!bs[0].started && !bs[1].started, "a later bucket waits for the earlier ones");
      gb.mark_ready(grads[0].f32());
      gb.mark_ready(grads[1].f32());
      expect(bs[0].started && bs[1].started && !bs[2].started, "complete buckets start in order");
      gb.poll();
      expect(gb.finish().ok(), "finish");
      expect(gb.started_early() == 2, "two buckets started while a gradient was still outstanding");
      const float ranks_sum = n * (n + 1) / 2.0f;
      for (size_t bi = 0; bi < bs.size(); ++bi) {
        const auto& b = bs[bi];
        // The expected reduced bucket: the sum of every rank's values, zero in the padding.
        std::vector<float> want(static_cast<size_t>(b.buffer.numel()), 0.0f);
        for (size_t k = 0; k < b.count; ++k) {
          const size_t t = b.first + k;
          for (int64_t i = 0; i < sizes[t]; ++i) want[b.offsets[k] + i] = ranks_sum * float(1000 * t + i + round);
        }
        if (mode == GradBuckets::Mode::kAllReduce) {
          for (size_t i = 0; i < want.size(); ++i) expect(b.buffer.f32()[i] == want[i], "all-reduced bucket values");
        } else {
          const int64_t m = b.shard.numel();
          expect(m * n == b.buffer.numel(), "shard size");
          for (int64_t i = 0; i < m; ++i) expect(b.shard.f32()[i] == want[r * m + i], "reduce-scattered shard values");
        }
      }
    }
  }
  std::printf("rank %d: buckets ok\n", r);
}

void hang(Communicator& world) {
  float x = 1.0f;
  CHECK(world.all_reduce(&x, 1, ReduceOp::kSum).ok());  // #1: everyone
  if (world.rank() == world.size() - 1) return;         // the last rank never reaches #2
  Status s = world.all_reduce(&x, 1, ReduceOp::kSum);
  CHECK(!s.ok()) << "the all_reduce should have timed out";
  std::printf("rank %d: %s\n", world.rank(), std::string(s.message()).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  MpiEnv env(&argc, &argv);
  const std::string mode = argc > 1 ? argv[1] : "collectives";
  auto world = mpi_world_communicator(mode == "hang" ? 1.0 : 60.0);
  if (mode == "hang") {
    hang(*world);
  } else if (mode == "buckets") {
    buckets(*world);
  } else {
    collectives(*world);
  }
  std::fflush(stdout);
  return 0;
}
