#pragma once
// The communication thread: after MPI_Init, every MPI call of the process groups is made by this
// one thread. Callers queue operations (FIFO, so each group's operations start in call order) and
// get on with their work; the thread starts the non-blocking MPI calls and progresses everything
// in flight with MPI_Testsome, spinning while something is in flight (so a large collective
// progresses as fast as the blocking call) and sleeping when idle. That is what overlaps the
// backward pass (user thread) with gradient all-reduces on CPU.
//
// It is also the watchdog: an operation in flight longer than its timeout starts a "roll call" on
// a private duplicate of MPI_COMM_WORLD: the stuck rank asks every member of the group what it is
// waiting on, the other comm threads answer between polls, and after a short grace period the
// stuck rank prints one line naming who is waiting, who is elsewhere and who did not answer, then
// calls MPI_Abort(kTimeoutExitCode).
//
// A caller blocked in wait() progresses the engine itself rather than sleeping until the thread
// reports: every MPI call, the thread's and the waiters', is made under one progress lock (so the
// calls stay serialised, as MPI_THREAD_SERIALIZED requires), and while a caller drives, the thread
// steps aside. Waking a thread costs about 10 us on the 2-core VM (more when it preempts a rank
// that is busy copying), twice per operation for a hand-off there and back, which kept 1 MiB
// collectives near 80% of the raw MPI call. So submit() wakes the thread only when it must: when
// it is in its long idle sleep, or when other operations are queued or in flight (the caller is
// clearly overlapping), or when the caller asks (Work::start, for an operation meant to overlap
// its compute). An operation issued alone and waited on at once then never involves the thread;
// one issued alone, not started, and left in flight is picked up by the thread's next short
// wake-up (kActiveWake) while the engine has been busy recently.
//
// Thread levels: with MPI_THREAD_MULTIPLE or SERIALIZED the engine's threads are the only MPI
// callers after initialisation. Below SERIALIZED there is no thread: operations are progressed by
// the caller inside wait()/done() (no overlap, and timeouts are only noticed while someone waits).
#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace shoestring::parallel {


// One queued operation: phases run one after another on the comm thread; each starts MPI calls
// and appends their requests, and the next phase starts when all of them completed.
struct CommOp {
  using Phase = std::function<void(std::vector<MPI_Request>&)>;
  std::vector<Phase> phases;
  // Identity, for timeout reports and roll-call answers.
  std::string name;              // "all_reduce"
  std::string group;             // "dp"
  std::vector<int> world_ranks;  // the group's members
  uint64_t group_id = 0;         // equal on all members of a group; 0: internal, no timeout
  int64_t seq = 0;               // per group, in call order
  double timeout_s = 0;          // <= 0: none
  double issued_at = 0;
  std::atomic<double> started_at{0};
  std::atomic<bool> done{false};

 private:
  friend class CommEngine;
  size_t next_phase = 0;
  int pending = 0;  // requests of the current phase still in flight
};

class CommEngine {
 public:
  // The process's engine, started on first use (MPI must be initialised). Never destroyed: a
  // rank that calls exit() with the thread running must not trip std::thread's destructor.
  static CommEngine& instance();
  static bool started();

  void submit(const std::shared_ptr<CommOp>& op);
  void wait(CommOp& op);
  bool test(CommOp& op);
  // Wakes the thread to start op now if nobody has (Work::start).
  void start(CommOp& op);
  // Runs f under the progress lock (on the comm thread or in this caller's wait) and returns when
  // it has run: for MPI calls that have no non-blocking form (MPI_Comm_dup, the raw baselines of
  // the benchmark).
  void run(const std::function<void()>& f);
  // Finishes what is queued, stops the thread and frees the engine's MPI objects; before
  // MPI_Finalize. Further submits throw.
  void shutdown();
  int world_rank() const { return world_rank_; }
  bool threaded() const { return threaded_; }

 private:
  CommEngine();
  void loop();
  void poll_once();  // under progress_mu_ whenever threaded_
  void start_queued();
  void start_next_phase(const std::shared_ptr<CommOp>& op);
  void complete(const std::shared_ptr<CommOp>& op);
  void progress_requests();
  void serve_roll_call();
  void check_timeouts();
  void answer_ping(int from, uint64_t group_id);
  void begin_roll_call(const std::shared_ptr<CommOp>& op, double now);
  void finish_roll_call(double now);

  int world_rank_ = 0, world_size_ = 1;
  bool threaded_ = true;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<CommOp>> queue_;
  std::atomic<int> queued_{0};
  bool stop_ = false, stopped_ = false;
  // The thread's state, under mu_: in its long idle sleep (submit must wake it), and whether
  // someone woke it (submit, or a leaving waiter handing back work in flight).
  bool deep_sleep_ = false, wake_ = false;
  double last_busy_ = 0;  // when the thread last saw work (thread only)

  // Held around every poll_once when threaded_: the MPI calls and the progress state below.
  // drivers_ counts callers progressing in wait(); the thread does not poll while there are any.
  std::mutex progress_mu_;
  std::atomic<int> drivers_{0};
  std::atomic<int> inflight_count_{0};  // inflight_.size(), readable without progress_mu_

  // Progress state (the comm thread or a driving waiter, under progress_mu_).
  std::vector<std::shared_ptr<CommOp>> inflight_;
  std::vector<MPI_Request> reqs_;
  std::vector<CommOp*> owners_;
  std::vector<int> indices_;
  double last_control_ = 0;

  // Roll call (see roll_call.cpp).
  struct RollCall;
  MPI_Comm ctl_ = MPI_COMM_NULL;
  MPI_Request ping_req_ = MPI_REQUEST_NULL;
  uint64_t ping_buf_[1] = {0};
  std::vector<std::pair<std::unique_ptr<char[]>, MPI_Request>> answers_;  // replies being sent
  std::shared_ptr<RollCall> roll_;  // shared_ptr: RollCall is complete only in roll_call.cpp
};

// finalize_world calls this before MPI_Finalize; a no-op when the engine never started.
void shutdown_comm_engine();

}  // namespace shoestring::parallel
