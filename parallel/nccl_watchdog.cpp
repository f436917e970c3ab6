#include "parallel/nccl_watchdog.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "parallel/process_group.h"

namespace shoestring::parallel::nccl {


void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// --- CommState ---

CommState::~CommState() {
  // Best effort and silent: a destructor must not throw, and at exit CUDA may be gone already.
  // An aborted communicator is already freed by ncclCommAbort.
  if (comm != nullptr && !aborted) api().CommDestroy(comm);
  if (caller_ready != nullptr) cudaEventDestroy(caller_ready);
  if (epoch != nullptr) cudaEventDestroy(epoch);
  for (auto [start, end] : spare_events) cudaEventDestroy(start), cudaEventDestroy(end);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

void CommState::init_stream() {
  // Non-blocking: the legacy default stream must not serialise with our collectives.
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check_cuda(cudaEventCreateWithFlags(&caller_ready, cudaEventDisableTiming), "cudaEventCreate");
  check_cuda(cudaEventCreate(&epoch), "cudaEventCreate");
  check_cuda(cudaEventRecord(epoch, stream), "cudaEventRecord");
  check_cuda(cudaEventSynchronize(epoch), "cudaEventSynchronize");
  epoch_s = steady_seconds();
}

std::string CommState::describe() const {
  // Runs of consecutive ranks as a-b: a 512-rank world stays one short line.
  std::ostringstream s;
  s << "group " << name << " (world ranks ";
  for (size_t i = 0; i < world_ranks.size();) {
    size_t j = i;
    while (j + 1 < world_ranks.size() && world_ranks[j + 1] == world_ranks[j] + 1) ++j;
    s << (i ? "," : "") << world_ranks[i];
    if (j > i) s << "-" << world_ranks[j];
    i = j + 1;
  }
  s << ")";
  return s.str();
}

// --- OpRecord ---

OpRecord::OpRecord(std::shared_ptr<CommState> c, std::string op_name, int64_t sequence)
    : comm(std::move(c)), op(std::move(op_name)), seq(sequence), issued_s(steady_seconds()) {
  {
    const std::lock_guard<std::mutex> lock(comm->spare_mu);
    if (!comm->spare_events.empty()) {
      std::tie(start, end) = comm->spare_events.back();
      comm->spare_events.pop_back();
      return;
    }
  }
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  check_cuda(cudaEventCreateWithFlags(&end, cudaEventDisableTiming), "cudaEventCreate");
}

OpRecord::~OpRecord() {
  // The watchdog holds every record until `end` completed, so the events are idle here (a record
  // dropped on an aborting job is never reused). A later cudaStreamWaitEvent on an old handle
  // already captured the record it waited for.
  if (start == nullptr || end == nullptr) return;
  const std::lock_guard<std::mutex> lock(comm->spare_mu);
  comm->spare_events.emplace_back(start, end);
}

bool OpRecord::finished() const {
  const cudaError_t e = cudaEventQuery(end);
  if (e == cudaErrorNotReady) return false;
  check_cuda(e, "cudaEventQuery");
  return true;
}

double OpRecord::started_at() {
  if (const double s = started_s.load(); s != 0) return s;
  if (cudaEventQuery(start) != cudaSuccess) return 0;
  // GPU timestamps, not the time we happened to poll: exact to ~1 us, which the overlap
  // measurements need.
  float ms = 0;
  if (cudaEventElapsedTime(&ms, comm->epoch, start) != cudaSuccess) return 0;
  const double s = comm->epoch_s + ms / 1000.0;
  started_s.store(s);
  return s;
}

// --- the watchdog ---

namespace {

[[noreturn]] void fail(OpRecord& op, const std::string& kind, const std::string& what) {
  const CommState& c = *op.comm;
  std::ostringstream line;
  line << "[rank " << c.world_ranks[size_t(c.rank)] << "] " << kind << ": " << op.op << " #" << op.seq << " on "
       << c.describe() << " " << what << " (nccl)\n";
  std::fputs(line.str().c_str(), stderr);
  std::fflush(stderr);
  // ncclCommAbort or MPI_Abort could hang on a wedged GPU or network; the job must end regardless.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    std::_Exit(kTimeoutExitCode);
  }).detach();
  // Abort first: it makes the peers' pending NCCL calls on this communicator fail fast.
  op.comm->aborted = true;
  api().CommAbort(op.comm->comm);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, kTimeoutExitCode);
  std::_Exit(kTimeoutExitCode);
}

class Watchdog {
 public:
  static Watchdog& get() {
    // Leaked on purpose: the detached thread must find its state intact while statics are destroyed.
    static Watchdog* w = new Watchdog();
    return *w;
  }
  void add(std::shared_ptr<OpRecord> op) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(std::move(op));
    cv_.notify_one();
  }

 private:
  Watchdog() { std::thread([this] { loop(); }).detach(); }

  // 10 ms: timeouts are seconds, and finished ops release their tensors within one period.
  static constexpr auto kPoll = std::chrono::milliseconds(10);

  void loop() {
    for (;;) {
      std::vector<std::shared_ptr<OpRecord>> ops;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !pending_.empty(); });
        ops = pending_;
      }
      std::vector<OpRecord*> done;
      for (const auto& op : ops)
        if (poll(*op)) done.push_back(op.get());
      {
        std::lock_guard<std::mutex> lock(mu_);
        std::erase_if(pending_, [&](const auto& op) { return std::find(done.begin(), done.end(), op.get()) != done.end(); });
      }
      ops.clear();  // may free tensors and destroy communicators: outside the lock
      std::this_thread::sleep_for(kPoll);
    }
  }

  // True when `op` needs no more watching.
  static bool poll(OpRecord& op) {
    CommState& c = *op.comm;
    if (c.aborted) return true;
    // Without this the thread's queries would create a context on device 0 on every rank.
    cudaSetDevice(c.device);
    const cudaError_t q = cudaEventQuery(op.end);
    // The process is exiting (CUDA's atexit teardown ran): not a comm failure.
    if (q == cudaErrorCudartUnloading) return true;
    if (q != cudaSuccess && q != cudaErrorNotReady)
      fail(op, "comm error", std::string("failed on the GPU: ") + cudaGetErrorString(q));
    if (q == cudaSuccess) {
      op.started_at();  // fix the start time while the epoch event is surely alive
      op.tensors.clear();
      return true;
    }
    ncclResult_t async = ncclSuccess;
    if (api().CommGetAsyncError(c.comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
      std::string msg = std::string("failed: NCCL async error: ") + api().GetErrorString(async);
      if (api().GetLastError != nullptr)
        if (const char* last = api().GetLastError(c.comm); last != nullptr && *last) msg += std::string(" (") + last + ")";
      fail(op, "comm error", msg);
    }
    if (steady_seconds() - op.issued_s > c.timeout_s) {
      std::ostringstream s;
      s << "did not finish in " << c.timeout_s << " s";
      fail(op, "comm timeout", s.str());
    }
    return false;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<OpRecord>> pending_;
};

}  // namespace

void watch(std::shared_ptr<OpRecord> op) { Watchdog::get().add(std::move(op)); }

}  // namespace shoestring::parallel::nccl
