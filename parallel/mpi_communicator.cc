// The MPI backend of Communicator (parallel/communicator.h): non-blocking MPI calls polled
// against a deadline, plus an arrival channel (a duplicated communicator on which every rank
// tells the first rank which collective it reached) so a timeout names who never came.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "parallel/communicator.h"

namespace strata {
namespace {

constexpr int kArrivalTagModulo = 30000;  // MPI guarantees tags up to 32767

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

class MpiCommunicator;

class MpiHandle : public CommHandle {
 public:
  MpiHandle(MpiCommunicator* comm, std::string what, int64_t seq, double timeout_s)
      : comm_(comm), what_(std::move(what)), seq_(seq), timeout_s_(timeout_s) {}
  ~MpiHandle() override {
    if (!done_) (void)wait();
  }
  MPI_Request* request() { return &request_; }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    MPI_Test(&request_, &flag, MPI_STATUS_IGNORE);
    done_ = flag != 0;
    return done_;
  }
  Status wait() override;

 private:
  MpiCommunicator* comm_;
  std::string what_;
  int64_t seq_;
  double timeout_s_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::vector<int64_t> members, std::string name, double timeout_s)
      : comm_(comm), members_(std::move(members)), name_(std::move(name)), timeout_s_(timeout_s) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_dup(comm_, &arrivals_);
    last_arrival_.assign(static_cast<size_t>(size_), 0);
  }
  ~MpiCommunicator() override {
    MPI_Comm_free(&arrivals_);
    if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::vector<int64_t>& members() const override { return members_; }
  const std::string& name() const override { return name_; }

  Status all_reduce(float* data, int64_t n, ReduceOp op) override { return iall_reduce(data, n, op)->wait(); }
  Status all_reduce(double* data, int64_t n, ReduceOp op) override {
    auto h = start("all_reduce");
    MPI_Iallreduce(MPI_IN_PLACE, data, count(n), MPI_DOUBLE, mpi_op(op), comm_, h->request());
    return h->wait();
  }
  std::unique_ptr<CommHandle> iall_reduce(float* data, int64_t n, ReduceOp op) override {
    auto h = start("all_reduce");
    MPI_Iallreduce(MPI_IN_PLACE, data, count(n), MPI_FLOAT, mpi_op(op), comm_, h->request());
    return h;
  }
  Status reduce_scatter(const float* in, float* out, int64_t n, ReduceOp op) override {
    return ireduce_scatter(in, out, n, op)->wait();
  }
  std::unique_ptr<CommHandle> ireduce_scatter(const float* in, float* out, int64_t n, ReduceOp op) override {
    auto h = start("reduce_scatter");
    MPI_Ireduce_scatter_block(in, out, count(n), MPI_FLOAT, mpi_op(op), comm_, h->request());
    return h;
  }
  Status all_gather(const float* in, float* out, int64_t n) override { return iall_gather(in, out, n)->wait(); }
  std::unique_ptr<CommHandle> iall_gather(const float* in, float* out, int64_t n) override {
    auto h = start("all_gather");
    MPI_Iallgather(in, count(n), MPI_FLOAT, out, count(n), MPI_FLOAT, comm_, h->request());
    return h;
  }
  Status all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                      const std::vector<int64_t>& recv_counts) override {
    CHECK(static_cast<int>(send_counts.size()) == size_ && static_cast<int>(recv_counts.size()) == size_)
        << "all_to_all_v on " << name_ << ": one count per rank";
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      sc[r] = count(send_counts[r]);
      rc[r] = count(recv_counts[r]);
      sd[r] = count(so);
      rd[r] = count(ro);
      so += send_counts[r];
      ro += recv_counts[r];
    }
    auto h = start("all_to_all_v");
    MPI_Ialltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, comm_, h->request());
    return h->wait();
  }
  Status send(const void* data, int64_t bytes, int dest, int tag) override { return isend(data, bytes, dest, tag)->wait(); }
  Status recv(void* data, int64_t bytes, int src, int tag) override { return irecv(data, bytes, src, tag)->wait(); }
  std::unique_ptr<CommHandle> isend(const void* data, int64_t bytes, int dest, int tag) override {
    auto h = std::make_unique<MpiHandle>(this, absl::StrCat("send to ", dest, " tag ", tag), 0, timeout_s_);
    MPI_Isend(data, count(bytes), MPI_BYTE, dest, tag, comm_, h->request());
    return h;
  }
  std::unique_ptr<CommHandle> irecv(void* data, int64_t bytes, int src, int tag) override {
    auto h = std::make_unique<MpiHandle>(this, absl::StrCat("recv from ", src, " tag ", tag), 0, timeout_s_);
    MPI_Irecv(data, count(bytes), MPI_BYTE, src, tag, comm_, h->request());
    return h;
  }
  Status broadcast(void* data, int64_t bytes, int root) override {
    auto h = start("broadcast");
    MPI_Ibcast(data, count(bytes), MPI_BYTE, root, comm_, h->request());
    return h->wait();
  }
  Status barrier() override {
    auto h = start("barrier");
    MPI_Ibarrier(comm_, h->request());
    return h->wait();
  }

  StatusOr<std::unique_ptr<Communicator>> split(const std::vector<int64_t>& world_ranks,
                                                const std::string& name) override {
    // The colour is the group's smallest world rank, the key this rank's position in it.
    const int64_t my_world = members_[static_cast<size_t>(rank_)];
    auto it = std::find(world_ranks.begin(), world_ranks.end(), my_world);
    if (it == world_ranks.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("split ", name, ": world rank ", my_world, " is not in [", absl::StrJoin(world_ranks, ","), "]"));
    }
    const int colour = static_cast<int>(*std::min_element(world_ranks.begin(), world_ranks.end()));
    MPI_Comm sub;
    MPI_Comm_split(comm_, colour, static_cast<int>(it - world_ranks.begin()), &sub);
    return std::unique_ptr<Communicator>(new MpiCommunicator(sub, world_ranks, name, timeout_s_));
  }

  // ---- timeout machinery ----
  std::string describe(const std::string& what, int64_t seq) const {
    return absl::StrCat(what, seq > 0 ? absl::StrCat(" #", seq) : std::string(), " on ", name_, " [",
                        absl::StrJoin(members_, ","), "]");
  }
  // Which members never reported reaching collective `seq` (only the first rank hears them).
  std::string missing(int64_t seq) {
    if (rank_ != 0 || seq <= 0) return "";
    drain_arrivals();
    std::vector<int64_t> missing;
    for (int r = 1; r < size_; ++r)
      if (last_arrival_[r] < seq) missing.push_back(members_[r]);
    if (missing.empty()) return "; every rank arrived (a rank may be stuck inside it)";
    return absl::StrCat(missing.size() == 1 ? "; rank " : "; ranks ", absl::StrJoin(missing, ","), " did not arrive");
  }

 private:
  static int count(int64_t n) {
    CHECK(n >= 0 && n <= INT32_MAX) << "MPI count " << n << " exceeds int";
    return static_cast<int>(n);
  }

  std::unique_ptr<MpiHandle> start(const char* what) {
    const int64_t seq = ++seq_;
    if (rank_ != 0) {
      MPI_Request r;
      int64_t* payload = &arrival_payload_[seq % kArrivalSlots];  // eager: sent long before reuse
      *payload = seq;
      MPI_Isend(payload, 1, MPI_INT64_T, 0, static_cast<int>(seq % kArrivalTagModulo), arrivals_, &r);
      MPI_Request_free(&r);
    } else {
      drain_arrivals();
    }
    return std::make_unique<MpiHandle>(this, what, seq, timeout_s_);
  }

  void drain_arrivals() {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, arrivals_, &flag, &st);
      if (!flag) return;
      int64_t seq = 0;
      MPI_Recv(&seq, 1, MPI_INT64_T, st.MPI_SOURCE, st.MPI_TAG, arrivals_, MPI_STATUS_IGNORE);
      last_arrival_[st.MPI_SOURCE] = std::max(last_arrival_[st.MPI_SOURCE], seq);
    }
  }

  MPI_Comm comm_;
  MPI_Comm arrivals_;
  std::vector<int64_t> members_;
  std::string name_;
  double timeout_s_;
  int rank_ = 0, size_ = 1;
  int64_t seq_ = 0;
  static constexpr int kArrivalSlots = 1024;
  int64_t arrival_payload_[kArrivalSlots] = {};  // send buffers of the arrival messages, a ring
  std::vector<int64_t> last_arrival_;
};

Status MpiHandle::wait() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  int spins = 0;
  while (!test()) {
    if (++spins > 1000) {
      if (std::chrono::steady_clock::now() > deadline) {
        return absl::DeadlineExceededError(absl::StrFormat("%s timed out after %gs%s", comm_->describe(what_, seq_),
                                                           timeout_s_, comm_->missing(seq_)));
      }
      usleep(50);  // two ranks may share a core: let the other one run
    }
  }
  return OkStatus();
}

}  // namespace

std::unique_ptr<Communicator> mpi_world_communicator(double timeout_s) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int64_t> members(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) members[r] = r;
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, std::move(members), "world", timeout_s);
}

}  // namespace strata
