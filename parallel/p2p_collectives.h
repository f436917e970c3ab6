#pragma once
// Collectives built from point-to-point messages, one comm-thread phase per step, so that many of
// them progress side by side and the watchdog (and the roll call) keeps running between steps.
//
// Why not Open MPI's non-blocking collectives: Open MPI 4.1 serves them from libnbc, which was
// clearly slower than the blocking calls here (MPI_Iallreduce ~60% of MPI_Allreduce at 1-16 MiB,
// MPI_Iallgather and MPI_Ibcast 62-90% at 1-4 MiB; docs/parallelism.md). The blocking calls
// cannot be used: they would stop the comm thread, and with it overlap and timeouts.
//
// - all-reduce: a ring (reduce-scatter then all-gather, 2(n-1) steps, each rank sending
//   2(n-1)/n of the tensor: bandwidth-optimal, as in NCCL). The reduce-scatter steps are cut into
//   segments so that folding in one received segment overlaps the transfer of the next.
// - reduce-scatter: direct, one exchange and the folds.
// - all-gather, broadcast and all-to-all-v: direct, every message of the collective in one step. Open MPI's
//   shared-memory transport makes large messages a single copy by the receiver (CMA), so the
//   receivers copy in parallel, and one step waits for the scheduler once where a ring or chain
//   waits n-1 times (which dominated on oversubscribed cores). A ring would suit a network, where
//   each link's bandwidth is what counts; the MPI backend runs on one node today.
//
// Every builder takes a communicator used only by these collectives and a tag unique among them
// while in flight; messages longer than mpi_chunk_elems() are split (MPI counts are ints).
#include <ATen/core/Tensor.h>
#include <mpi.h>

#include "parallel/comm_thread.h"
#include "parallel/process_group.h"

namespace shoestring::parallel {

std::vector<CommOp::Phase> ring_all_reduce_phases(const at::Tensor& t, ReduceOp op, MPI_Comm comm, int rank, int size,
                                                  int tag);
// out holds size blocks of in's length; in may be out's block `rank` (in place).
std::vector<CommOp::Phase> direct_all_gather_phases(const at::Tensor& out, const at::Tensor& in, MPI_Comm comm,
                                                    int rank, int size, int tag);
// Counts and the blocks' order are in bytes; blocks lie back to back in member order. Every
// all_to_all takes this path whatever its size: members know only their own counts, so a size
// threshold could send two members down different paths.
std::vector<CommOp::Phase> direct_all_to_all_phases(const at::Tensor& out, const at::Tensor& in,
                                                    std::vector<int64_t> send_bytes, std::vector<int64_t> recv_bytes,
                                                    MPI_Comm comm, int rank, int size, int tag);
std::vector<CommOp::Phase> direct_broadcast_phases(const at::Tensor& t, int root, MPI_Comm comm, int rank, int size,
                                                   int tag);

// One exchange of each member's blocks, then the received blocks folded in (in place: out is
// in's block `rank`).
std::vector<CommOp::Phase> direct_reduce_scatter_phases(const at::Tensor& out, const at::Tensor& in, ReduceOp op,
                                                        MPI_Comm comm, int rank, int size, int tag);
// dst op= src elementwise (the reduction of every point-to-point collective).
void fold_into(const at::Tensor& dst, const at::Tensor& src, ReduceOp op);
// The same on n contiguous elements of dt that do not overlap; no tensor is made for a float or
// double sum, so it costs no dispatch and touches no autograd state.
void fold_into(void* dst, const void* src, int64_t n, at::ScalarType dt, ReduceOp op);

// A receive buffer of at least `bytes`, 64-byte aligned, taken from a small process-wide cache and
// given back on destruction (buffers over 16 MiB are not kept). The ring all-reduce needs one per
// operation in flight; a fresh malloc of its segment each time (and the free that consolidates
// glibc's heap) was a visible part of a 1 MiB all-reduce's fixed cost.
class Scratch {
 public:
  explicit Scratch(size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  char* data() const { return data_; }

 private:
  char* data_ = nullptr;
  size_t bytes_ = 0;
};

// Tensors at least this large (all_gather: its output) take these paths; smaller ones use Open
// MPI's non-blocking collectives, which need fewer steps. SHOESTRING_MPI_RING_MIN_BYTES
// overrides it (tests use 1 to send everything through them).
int64_t ring_min_bytes();

// Bytes per segment of the ring all-reduce's reduce-scatter steps (default 1 MiB: on the 2-core
// VM 64-256 KiB segments measured slower at 1-4 MiB, each step's fixed cost outweighing the
// overlap, which has no idle core to run on there).
// SHOESTRING_MPI_SEGMENT_BYTES overrides it (tests use tiny segments to exercise odd splits).
int64_t segment_bytes();

// Appends the receive from `from` and the send to `to` of one step, each split into messages of
// at most mpi_chunk_elems() elements (the two sides split the same lengths the same way, and
// MPI does not reorder messages of one tag between two ranks). A null side (peer < 0) is skipped.
void post_exchange(void* send, int64_t send_elems, int to, void* recv, int64_t recv_elems, int from, MPI_Datatype dt,
                   int64_t elem_bytes, MPI_Comm comm, int tag, std::vector<MPI_Request>& reqs);

}  // namespace shoestring::parallel
