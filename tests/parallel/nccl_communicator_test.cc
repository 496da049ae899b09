// The NCCL Communicator (parallel/nccl_communicator.h) on a single rank: NCCL refuses two ranks
// on one GPU, so this runs on any machine with one GPU, in-process (MPI starts as a singleton),
// and more ranks need a multi-GPU machine. It checks every call of the interface on device
// buffers against the values one rank must produce (reductions, scatters and gathers of one
// member, all_to_all_v with an empty and a full block, messages to self matched in issue order
// whatever their tags), split (names, members, a foreign group refused), and that a timeout names
// the call and its communicator and leaves the communicator refusing further calls. Without a GPU
// (or a CUDA build) those skip, saying why, and the factory's refusal is checked instead.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/device.h"         // device_alloc, device_copy, cuda_unavailable_reason
#include "parallel/mpi_env.h"    // the ncclUniqueId travels over MPI
#include "parallel/nccl_communicator.h"

namespace strata {
namespace {

// MPI for the whole test process, started on first use and finalised after the last test
// (MPI cannot start again once finalised).
std::unique_ptr<MpiEnv>& mpi_env() {
  static std::unique_ptr<MpiEnv> env;
  return env;
}
class MpiEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { mpi_env().reset(); }
};
[[maybe_unused]] ::testing::Environment* const kMpiEnvironment =
    ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

// Skips the test (returning false) unless a GPU and MPI are there.
bool gpu_and_mpi(std::string* why) {
  if (cuda_device_count() == 0) {
    *why = cuda_unavailable_reason();
    return false;
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    *why = "MPI was finalised by an earlier test";
    return false;
  }
  // Without mpirun, MPI starts as a singleton: one rank, no launcher needed.
  if (!mpi_env()) mpi_env() = std::make_unique<MpiEnv>(nullptr, nullptr);
  return true;
}

#define REQUIRE_GPU_AND_MPI()                      \
  do {                                             \
    std::string _why;                              \
    if (!gpu_and_mpi(&_why)) GTEST_SKIP() << _why; \
  } while (0)

// One world communicator on GPU 0; the test is single-rank.
#define MAKE_WORLD(comm, timeout_s)                                                 \
  auto comm##_or = nccl_world_communicator(timeout_s, 0);                           \
  ASSERT_TRUE(comm##_or.ok()) << comm##_or.status();                                \
  std::unique_ptr<Communicator> comm = std::move(comm##_or).value();               \
  if (comm->size() != 1) GTEST_SKIP() << "a single-rank test, run with one rank"

// A device buffer of n T's, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n), ptr_(device_alloc(Device::cuda(), n * sizeof(T))) {}
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { device_free(Device::cuda(), ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* data() { return static_cast<T*>(ptr_); }
  void upload(const std::vector<T>& host) {
    device_copy(ptr_, Device::cuda(), host.data(), Device::cpu(), n_ * sizeof(T));
  }
  std::vector<T> to_host() const {
    std::vector<T> host(n_);
    device_copy(host.data(), Device::cpu(), ptr_, Device::cuda(), n_ * sizeof(T));
    return host;
  }

 private:
  size_t n_;
  void* ptr_;
};

template <typename T>
std::vector<T> ramp(size_t n, T start, T step) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + step * static_cast<T>(i);
  return v;
}

TEST(NcclCommunicator, RefusesWithoutAGpuSayingWhy) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present: the other tests use it";
  auto comm = nccl_world_communicator(5.0, 0);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition) << comm.status();
  EXPECT_NE(std::string(comm.status().message()).find(cuda_unavailable_reason()), std::string::npos)
      << comm.status();
  EXPECT_NE(std::string(comm.status().message()).find("nccl_world_communicator"), std::string::npos)
      << comm.status();
}

TEST(NcclCommunicator, RefusesAGpuThatDoesNotExist) {
  REQUIRE_GPU_AND_MPI();
  auto comm = nccl_world_communicator(5.0, cuda_device_count());
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
}

TEST(NcclCommunicator, SingleRankCollectivesOnDeviceBuffers) {
  REQUIRE_GPU_AND_MPI();
  MAKE_WORLD(world, 60.0);
  EXPECT_EQ(world->rank(), 0);
  EXPECT_EQ(world->name(), "world");
  EXPECT_EQ(world->members(), std::vector<int64_t>{0});

  const size_t n = 1000;  // not a multiple of anything NCCL chunks by
  const std::vector<float> x = ramp<float>(n, -3.5f, 0.25f);

  // all_reduce (float, sum and max; blocking and not): one member's data is the reduction.
  DeviceArray<float> a(x);
  ASSERT_TRUE(world->all_reduce(a.data(), n, ReduceOp::kSum).ok());
  EXPECT_EQ(a.to_host(), x);
  ASSERT_TRUE(world->all_reduce(a.data(), n, ReduceOp::kMax).ok());
  EXPECT_EQ(a.to_host(), x);
  auto h = world->iall_reduce(a.data(), n, ReduceOp::kSum);
  ASSERT_TRUE(h->wait().ok());
  EXPECT_TRUE(h->test());
  EXPECT_EQ(a.to_host(), x);

  // all_reduce (double).
  const std::vector<double> xd = ramp<double>(n, 1e10, -1.0 / 3.0);
  DeviceArray<double> ad(xd);
  ASSERT_TRUE(world->all_reduce(ad.data(), n, ReduceOp::kSum).ok());
  EXPECT_EQ(ad.to_host(), xd);
  ASSERT_TRUE(world->all_reduce(ad.data(), n, ReduceOp::kMax).ok());
  EXPECT_EQ(ad.to_host(), xd);

  // reduce_scatter: in (size * n,) -> out (n,), this rank's block; out starts as garbage.
  const std::vector<float> junk(n, -777.0f);
  DeviceArray<float> in(x), out(junk);
  ASSERT_TRUE(world->reduce_scatter(in.data(), out.data(), n, ReduceOp::kSum).ok());
  EXPECT_EQ(out.to_host(), x);
  out.upload(junk);
  auto hrs = world->ireduce_scatter(in.data(), out.data(), n, ReduceOp::kMax);
  ASSERT_TRUE(hrs->wait().ok());
  EXPECT_EQ(out.to_host(), x);

  // all_gather: in (n,) -> out (size * n,).
  out.upload(junk);
  ASSERT_TRUE(world->all_gather(in.data(), out.data(), n).ok());
  EXPECT_EQ(out.to_host(), x);
  out.upload(junk);
  auto hag = world->iall_gather(in.data(), out.data(), n);
  while (!hag->test()) {
  }
  ASSERT_TRUE(hag->wait().ok());
  EXPECT_EQ(out.to_host(), x);

  // all_to_all_v (bytes): a full block to self, then an empty one.
  std::vector<uint8_t> bytes(777);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  const std::vector<uint8_t> zeros(bytes.size(), 0);
  DeviceArray<uint8_t> send(bytes), recv(zeros);
  const std::vector<int64_t> counts{static_cast<int64_t>(bytes.size())};
  ASSERT_TRUE(world->all_to_all_v(send.data(), counts, recv.data(), counts).ok());
  EXPECT_EQ(recv.to_host(), bytes);
  recv.upload(zeros);
  ASSERT_TRUE(world->all_to_all_v(send.data(), {0}, recv.data(), {0}).ok());
  EXPECT_EQ(recv.to_host(), zeros);

  // broadcast from the only rank, then a barrier.
  ASSERT_TRUE(world->broadcast(send.data(), static_cast<int64_t>(bytes.size()), 0).ok());
  EXPECT_EQ(send.to_host(), bytes);
  ASSERT_TRUE(world->barrier().ok());

  // send/recv to self, either way round.
  const int64_t nbytes = static_cast<int64_t>(n * sizeof(float));
  out.upload(junk);
  auto hs = world->isend(in.data(), nbytes, 0, 7);
  ASSERT_TRUE(world->recv(out.data(), nbytes, 0, 7).ok());
  ASSERT_TRUE(hs->wait().ok());
  EXPECT_EQ(out.to_host(), x);
  out.upload(junk);
  auto hr = world->irecv(out.data(), nbytes, 0, 8);
  ASSERT_TRUE(world->send(in.data(), nbytes, 0, 8).ok());
  ASSERT_TRUE(hr->wait().ok());
  EXPECT_EQ(out.to_host(), x);
}

TEST(NcclCommunicator, MessagesToSelfMatchInIssueOrderNotByTag) {
  REQUIRE_GPU_AND_MPI();
  MAKE_WORLD(world, 60.0);
  const std::vector<float> first(64, 1.0f), second(64, 2.0f), junk(64, -1.0f);
  DeviceArray<float> a(first), b(second), x(junk), y(junk);
  const int64_t bytes = 64 * sizeof(float);
  auto s1 = world->isend(a.data(), bytes, 0, /*tag=*/1);
  auto s2 = world->isend(b.data(), bytes, 0, /*tag=*/2);
  ASSERT_TRUE(world->recv(x.data(), bytes, 0, /*tag=*/2).ok());  // NCCL has no tags: gets the first
  ASSERT_TRUE(world->recv(y.data(), bytes, 0, /*tag=*/1).ok());
  ASSERT_TRUE(s1->wait().ok());
  ASSERT_TRUE(s2->wait().ok());
  EXPECT_EQ(x.to_host(), first);
  EXPECT_EQ(y.to_host(), second);

  // Sizes that do not match fail both sides, and the communicator stays usable.
  auto s3 = world->isend(a.data(), bytes, 0, 3);
  Status r3 = world->recv(x.data(), bytes / 2, 0, 3);
  EXPECT_EQ(r3.code(), absl::StatusCode::kInvalidArgument) << r3;
  EXPECT_NE(std::string(r3.message()).find("a send of 256 bytes met a recv of 128 bytes"), std::string::npos) << r3;
  EXPECT_EQ(s3->wait().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(world->barrier().ok());
}

TEST(NcclCommunicator, SplitNamesItsGroupAndRefusesAForeignOne) {
  REQUIRE_GPU_AND_MPI();
  MAKE_WORLD(world, 60.0);
  auto solo_or = world->split({0}, "solo");
  ASSERT_TRUE(solo_or.ok()) << solo_or.status();
  std::unique_ptr<Communicator> solo = std::move(solo_or).value();
  EXPECT_EQ(solo->name(), "solo");
  EXPECT_EQ(solo->size(), 1);
  EXPECT_EQ(solo->rank(), 0);
  EXPECT_EQ(solo->members(), std::vector<int64_t>{0});
  const std::vector<float> x = ramp<float>(100, 0.5f, 1.0f);
  DeviceArray<float> a(x);
  ASSERT_TRUE(solo->all_reduce(a.data(), 100, ReduceOp::kSum).ok());
  EXPECT_EQ(a.to_host(), x);
  // The parent still works after the split.
  ASSERT_TRUE(world->all_reduce(a.data(), 100, ReduceOp::kMax).ok());
  EXPECT_EQ(a.to_host(), x);

  auto foreign = world->split({1, 2}, "ep");
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(foreign.status().message()).find("split ep: world rank 0 is not in [1,2]"), std::string::npos)
      << foreign.status();
}

TEST(NcclCommunicator, TimeoutNamesTheCallAndAbortsTheCommunicator) {
  REQUIRE_GPU_AND_MPI();
  MAKE_WORLD(world, 3.0);  // long enough for NCCL to start, short for the test to wait
  DeviceArray<float> a(std::vector<float>(16, 1.0f));
  ASSERT_TRUE(world->barrier().ok());  // collective #1
  auto h = world->irecv(a.data(), 16 * sizeof(float), 0, 5);  // no send to self ever comes
  EXPECT_FALSE(h->test());
  Status s = h->wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(std::string(s.message()).find("recv from 0 tag 5 on world [0] timed out after 3s"), std::string::npos)
      << s;
  EXPECT_NE(std::string(s.message()).find("aborted"), std::string::npos) << s;

  // The aborted communicator refuses what follows, naming the call, its number and the cause.
  Status after = world->all_reduce(a.data(), 16, ReduceOp::kSum);
  EXPECT_EQ(after.code(), absl::StatusCode::kFailedPrecondition) << after;
  EXPECT_NE(std::string(after.message()).find("all_reduce #2 on world [0]"), std::string::npos) << after;
  EXPECT_NE(std::string(after.message()).find("recv from 0 tag 5"), std::string::npos) << after;
  EXPECT_FALSE(world->split({0}, "late").ok());
}

}  // namespace
}  // namespace strata
