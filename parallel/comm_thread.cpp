#include "parallel/comm_thread.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>

#include "parallel/mpi_types.h"

namespace shoestring::parallel {

namespace {

std::atomic<CommEngine*> g_engine{nullptr};
std::mutex g_engine_mu;

// Idle wake-up: how late a roll-call question may be answered by an idle rank.
constexpr auto kIdleWake = std::chrono::milliseconds(10);
// While the engine has been busy within kActiveSpan, the thread wakes this often on its own, to
// pick up an operation submitted alone (without a wake-up) and left in flight.
constexpr auto kActiveWake = std::chrono::milliseconds(1);
constexpr double kActiveSpan = 0.1;

// Set while this thread is inside poll_once: waiting there for an operation would never end.
thread_local bool t_progressing = false;
struct ProgressScope {
  ProgressScope() { t_progressing = true; }
  ~ProgressScope() { t_progressing = false; }
};

}  // namespace

CommEngine& CommEngine::instance() {
  if (CommEngine* e = g_engine.load()) return *e;
  std::lock_guard lock(g_engine_mu);
  if (!g_engine.load()) g_engine.store(new CommEngine());
  return *g_engine.load();
}

bool CommEngine::started() { return g_engine.load() != nullptr; }

CommEngine::CommEngine() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) throw std::logic_error("comm engine: MPI is not initialised (init_world did not launch MPI)");
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  threaded_ = level >= MPI_THREAD_SERIALIZED;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  // Collective over the world: the first make_world_group is called by every rank.
  MPI_Comm_dup(MPI_COMM_WORLD, &ctl_);
  init_mpi_types();
  MPI_Irecv(ping_buf_, 1, MPI_UINT64_T, MPI_ANY_SOURCE, 1, ctl_, &ping_req_);
  if (threaded_) thread_ = std::thread([this] { loop(); });
}

void CommEngine::submit(const std::shared_ptr<CommOp>& op) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stop_) throw std::logic_error("comm engine: " + op->name + " on group " + op->group + " after shutdown");
    wake = threaded_ && (deep_sleep_ || !queue_.empty() || inflight_count_.load(std::memory_order_acquire) > 0);
    wake_ = wake_ || wake;
    queue_.push_back(op);
    queued_.fetch_add(1, std::memory_order_release);
  }
  if (wake) work_cv_.notify_one();
  else if (!threaded_) poll_once();
}

void CommEngine::wait(CommOp& op) {
  if (!threaded_) {
    while (!op.done.load(std::memory_order_acquire)) {
      poll_once();
      if (!inflight_.empty()) sched_yield();
    }
    return;
  }
  if (t_progressing)
    throw std::logic_error("comm engine: wait on " + op.name + " from inside an operation (it could never finish)");
  // Backstop for a thread stuck inside a blocking MPI call with the progress lock held, where the
  // watchdog in poll_once cannot run: give it the timeout plus the roll call's grace, then abort.
  const double limit = op.timeout_s > 0 ? op.timeout_s + 30 : 0;
  drivers_.fetch_add(1, std::memory_order_acq_rel);
  while (!op.done.load(std::memory_order_acquire)) {
    if (std::unique_lock progress(progress_mu_, std::try_to_lock); progress.owns_lock()) {
      poll_once();
      if (op.done.load(std::memory_order_acquire)) break;
      // Holding progress, spin as a blocking MPI call does: a yield per poll cost 2-5% at
      // 1-4 MiB on 2 ranks, and 5-10% on a 1 MiB all-reduce over 4 ranks on 2 cores, where the
      // kernel's time slices share the cores anyway (docs/parallelism.md).
      continue;
    }
    if (limit > 0 && steady_seconds() - op.issued_at > limit) {
      std::fprintf(stderr,
                   "[rank %d] comm timeout: %s #%lld on group %s did not finish in %.0f s and the communication "
                   "thread did not report it (stuck inside MPI)\n",
                   world_rank_, op.name.c_str(), static_cast<long long>(op.seq), op.group.c_str(), op.timeout_s);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    // Another thread is progressing: let it run.
    sched_yield();
  }
  drivers_.fetch_sub(1, std::memory_order_acq_rel);
  if (inflight_count_.load(std::memory_order_acquire) > 0 || queued_.load(std::memory_order_acquire) > 0) {
    {
      std::lock_guard lock(mu_);
      wake_ = true;
    }
    work_cv_.notify_one();
  }
}

bool CommEngine::test(CommOp& op) {
  if (!threaded_ && !op.done.load()) poll_once();
  return op.done.load(std::memory_order_acquire);
}

void CommEngine::start(CommOp& op) {
  if (!threaded_ || op.started_at.load() > 0 || op.done.load(std::memory_order_acquire)) return;
  {
    std::lock_guard lock(mu_);
    wake_ = true;
  }
  work_cv_.notify_one();
}

void CommEngine::run(const std::function<void()>& f) {
  auto op = std::make_shared<CommOp>();
  op->name = "internal";
  op->group = "-";
  op->issued_at = steady_seconds();
  op->phases.push_back([&f](std::vector<MPI_Request>&) { f(); });
  submit(op);
  wait(*op);
}

void CommEngine::shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (threaded_) {
    work_cv_.notify_one();
    thread_.join();
  } else {
    while (!queue_.empty() || !inflight_.empty()) poll_once();
  }
  MPI_Cancel(&ping_req_);
  MPI_Wait(&ping_req_, MPI_STATUS_IGNORE);
  for (auto& a : answers_) MPI_Wait(&a.second, MPI_STATUS_IGNORE);
  answers_.clear();
  MPI_Comm_free(&ctl_);
  free_mpi_types();
  stopped_ = true;
}

void CommEngine::loop() {
  for (;;) {
    bool idle = false;
    if (drivers_.load(std::memory_order_acquire) == 0) {
      std::unique_lock progress(progress_mu_);
      poll_once();
      if (!inflight_.empty()) {
        // Spin while something is in flight: Open MPI progresses (shared-memory copies, the
        // steps of a ring) only inside our MPI calls. Yield so the ranks' other threads can run
        // on an oversubscribed node.
        progress.unlock();
        last_busy_ = steady_seconds();
        sched_yield();
        continue;
      }
      idle = true;
    }
    std::unique_lock lock(mu_);
    if (idle && stop_ && queue_.empty()) break;
    const double now = steady_seconds();
    if (!queue_.empty() || drivers_.load(std::memory_order_acquire) > 0) last_busy_ = now;
    // While a waiter drives, it polls (and answers roll calls); it hands back work it leaves in
    // flight. Otherwise sleep short while recently busy (see kActiveWake), long when not.
    deep_sleep_ = now - last_busy_ > kActiveSpan;
    if (!wake_) work_cv_.wait_for(lock, deep_sleep_ ? kIdleWake : kActiveWake, [this] { return stop_ || wake_; });
    deep_sleep_ = wake_ = false;
  }
}

void CommEngine::poll_once() {
  const ProgressScope scope;
  if (queued_.load(std::memory_order_acquire) > 0) start_queued();
  if (!inflight_.empty()) progress_requests();
  // The watchdog's work is cheap but each MPI_Test is a trip through Open MPI's progress engine:
  // once a millisecond is plenty for answers that may take seconds.
  const double now = steady_seconds();
  if (now - last_control_ < 1e-3) return;
  last_control_ = now;
  serve_roll_call();
  check_timeouts();
}

void CommEngine::start_queued() {
  std::deque<std::shared_ptr<CommOp>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(queue_);
    queued_.store(0, std::memory_order_release);
  }
  for (auto& op : batch) {
    op->started_at.store(steady_seconds());
    inflight_.push_back(op);
    inflight_count_.fetch_add(1, std::memory_order_release);
    start_next_phase(op);
  }
}

void CommEngine::start_next_phase(const std::shared_ptr<CommOp>& op) {
  // A phase may start no request (an empty message): go straight on to the next.
  while (op->next_phase < op->phases.size()) {
    const size_t before = reqs_.size();
    op->phases[op->next_phase++](reqs_);
    const int n = int(reqs_.size() - before);
    if (n > 0) {
      op->pending = n;
      owners_.resize(reqs_.size(), op.get());
      return;
    }
  }
  complete(op);
}

void CommEngine::complete(const std::shared_ptr<CommOp>& op) {
  op->phases.clear();  // releases the tensors the phases hold
  inflight_.erase(std::find(inflight_.begin(), inflight_.end(), op));
  inflight_count_.fetch_sub(1, std::memory_order_release);
  {
    std::lock_guard lock(mu_);
    op->done.store(true, std::memory_order_release);
  }
  done_cv_.notify_all();
}

void CommEngine::progress_requests() {
  if (reqs_.empty()) return;
  indices_.resize(reqs_.size());
  int n = 0;
  MPI_Testsome(int(reqs_.size()), reqs_.data(), &n, indices_.data(), MPI_STATUSES_IGNORE);
  if (n == MPI_UNDEFINED || n == 0) return;
  std::vector<CommOp*> finished;
  for (int i = 0; i < n; ++i) {
    CommOp* op = owners_[size_t(indices_[size_t(i)])];
    if (--op->pending == 0) finished.push_back(op);
  }
  // Drop completed slots (MPI_Testsome set them to MPI_REQUEST_NULL), keeping the order.
  size_t w = 0;
  for (size_t r = 0; r < reqs_.size(); ++r) {
    if (reqs_[r] == MPI_REQUEST_NULL) continue;
    reqs_[w] = reqs_[r];
    owners_[w++] = owners_[r];
  }
  reqs_.resize(w);
  owners_.resize(w);
  for (CommOp* raw : finished) {
    const auto op = *std::find_if(inflight_.begin(), inflight_.end(), [raw](const auto& p) { return p.get() == raw; });
    start_next_phase(op);
  }
}

void shutdown_comm_engine() {
  if (CommEngine::started()) CommEngine::instance().shutdown();
}

}  // namespace shoestring::parallel
