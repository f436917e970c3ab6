#pragma once
// The MPI backend: CPU tensors, every call queued to the comm thread (comm_thread.h) as a
// non-blocking MPI operation on the group's own communicator.
#include <mpi.h>

#include <atomic>

#include "parallel/process_group.h"

namespace shoestring::parallel {

class MpiGroup final : public ProcessGroup {
 public:
  // Takes ownership of comm and ring_comm (a duplicate of comm that only the point-to-point
  // collectives of p2p_collectives.h use).
  MpiGroup(std::string name, MPI_Comm comm, MPI_Comm ring_comm, int rank, std::vector<int> world_ranks, uint64_t id,
           const CommOptions& opts);
  ~MpiGroup() override;

  std::string backend() const override { return "mpi"; }
  WorkPtr all_reduce(const at::Tensor& t, ReduceOp op) override;
  WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) override;
  WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in) override;
  WorkPtr broadcast(const at::Tensor& t, int root) override;
  WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                     const std::vector<int64_t>& send_counts) override;
  WorkPtr send(const at::Tensor& t, int peer, int tag) override;
  WorkPtr recv(const at::Tensor& t, int peer, int tag) override;
  WorkPtr barrier() override;
  // color < 0: this member joins no group and gets nullptr.
  std::shared_ptr<ProcessGroup> split(int color, int key, const std::string& name) override;

  // The group's communicator, for code that runs on the comm thread (CommEngine::run), such as
  // the raw MPI baselines of `bench comm`. Never use it from another thread.
  MPI_Comm comm() const { return comm_; }
  const CommOptions& options() const { return opts_; }

 private:
  WorkPtr submit(const char* op, bool collective, std::vector<std::function<void(std::vector<MPI_Request>&)>> phases);
  void check(const char* op, const at::Tensor& t, const char* what) const;
  // A tag for one point-to-point collective on ring_comm_: unique among those in flight.
  int next_ring_tag() { return int(rings_++ % 32768); }

  MPI_Comm comm_, ring_comm_;
  uint64_t id_;
  CommOptions opts_;
  int64_t seq_ = 0, p2p_seq_ = 0, splits_ = 0, rings_ = 0;  // issued from the user thread
};

// The world over a duplicate of MPI_COMM_WORLD (MPI must be initialised). Collective.
GroupPtr make_mpi_world_group(const CommOptions& opts);

// Largest element count one MPI call carries; all_reduce, all_gather and broadcast split longer
// messages into chunks of this size. INT_MAX, or SHOESTRING_MPI_CHUNK_ELEMS (tests use it to exercise chunking).
int64_t mpi_chunk_elems();

}  // namespace shoestring::parallel
