#pragma once
// Process groups: the one interface every parallel layout talks through. Three backends:
//   local -- a group of one process (no MPI): every collective is a copy or a no-op, so the
//            single-process run goes through the same code as a parallel one;
//   mpi   -- CPU tensors over MPI; the backend CI exercises;
//   nccl  -- CUDA tensors over NCCL, bootstrapped (unique id broadcast) over an MPI group.
// Every call is asynchronous: it is queued in call order and returns a Work handle. Collectives of
// one group must be issued in the same order on all its members (as with MPI and NCCL); calls on
// different groups may interleave freely.
//
// Timeouts: a Work that has not completed `CommOptions::timeout_s` after it was issued makes the
// job exit: the waiting rank prints which collective (name and sequence number in its group),
// which group and its ranks, which peers were seen waiting in a collective and which were not,
// then calls MPI_Abort with kTimeoutExitCode.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/world.h"

namespace shoestring::parallel {

enum class ReduceOp { Sum, Max, Min };

constexpr int kTimeoutExitCode = 3;

struct CommOptions {
  double timeout_s = 300;  // parallel.timeout_s
};

// Seconds since std::chrono::steady_clock's epoch: the clock of Work's timestamps, traces and
// timeouts.
double steady_seconds();

// One queued operation. wait() blocks until the result is usable by the caller (for NCCL: until
// the caller's current CUDA stream is ordered after it; the host does not block, except for
// barrier()), or aborts the job on timeout.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool done() = 0;  // has it completed? never blocks
  // Call on an operation that should progress while the caller computes, before computing: the
  // mpi backend otherwise leaves an operation issued alone for the caller's wait() to drive (no
  // thread hand-off, see comm_thread.h) and starts it only within a millisecond. Never blocks.
  virtual void start() {}
  // Seconds since std::chrono::steady_clock's epoch when the caller issued the operation and
  // when the backend started it (0 until then): for traces and the overlap test.
  virtual double issued_at() const = 0;
  virtual double started_at() const = 0;
};
using WorkPtr = std::shared_ptr<Work>;

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual std::string backend() const = 0;  // "local" | "mpi" | "nccl"
  const std::string& name() const { return name_; }    // "world", "dp", "ep", ... (in error messages)
  int rank() const { return rank_; }                   // this process's rank in the group
  int size() const { return int(world_ranks_.size()); }
  const std::vector<int>& world_ranks() const { return world_ranks_; }  // member i's global rank

  // All tensors must be contiguous, on the backend's device (CPU for local/mpi, CUDA for nccl) and
  // of one of: float32, float64, bfloat16, float16, int64, int32, uint8. Sizes may be zero.
  // In place: t becomes the reduction of every member's t.
  virtual WorkPtr all_reduce(const at::Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // in holds size() equal blocks; out (numel = in.numel() / size()) gets the reduction of block
  // rank() over all members. `out` may be block rank() of `in` itself (in place).
  virtual WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op = ReduceOp::Sum) = 0;
  // out (numel = size() * in.numel()) gets every member's in, in rank order. `in` may be block
  // rank() of `out` itself (in place).
  virtual WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in) = 0;
  virtual WorkPtr broadcast(const at::Tensor& t, int root) = 0;
  // All-to-all-v along dim 0: rows [sum(send_counts[:j]), +send_counts[j]) of `in` go to member j;
  // `out` receives recv_counts[j] rows from member j, in member order. Counts are in rows; both
  // sides must agree (j's send_counts[me] == my recv_counts[j]). Zero counts are fine.
  virtual WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                             const std::vector<int64_t>& send_counts) = 0;
  virtual WorkPtr send(const at::Tensor& t, int peer, int tag = 0) = 0;  // peer: group rank
  virtual WorkPtr recv(const at::Tensor& t, int peer, int tag = 0) = 0;
  virtual WorkPtr barrier() = 0;

  // Collective over this group (like MPI_Comm_split): members passing the same `color` (>= 0)
  // form one new group named `name`, ranked by (key, current rank). A member passing a negative
  // color still calls it and gets nullptr (MPI_UNDEFINED, NCCL_SPLIT_NOCOLOR).
  virtual std::shared_ptr<ProcessGroup> split(int color, int key, const std::string& name) = 0;

 protected:
  ProcessGroup(std::string name, int rank, std::vector<int> world_ranks)
      : name_(std::move(name)), rank_(rank), world_ranks_(std::move(world_ranks)) {}

 private:
  std::string name_;
  int rank_;
  std::vector<int> world_ranks_;
};
using GroupPtr = std::shared_ptr<ProcessGroup>;

// The group of all processes: MPI when the world was launched by MPI (world.mpi), else a local
// group of one.
GroupPtr make_world_group(const World& world, const CommOptions& opts);

// A NCCL communicator over the same members as `bootstrap` (an MPI or local group), on CUDA device
// `device`. Throws std::runtime_error with the reason when NCCL or a GPU is not usable.
GroupPtr make_nccl_group(ProcessGroup& bootstrap, int device, const CommOptions& opts);

}  // namespace shoestring::parallel
