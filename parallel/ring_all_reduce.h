#pragma once
// All-reduce as a ring of point-to-point messages (reduce-scatter then all-gather, 2(n-1) steps,
// each rank sending 2(n-1)/n of the tensor: bandwidth-optimal, as in NCCL and Baidu's ring
// all-reduce). Why not MPI_Iallreduce: Open MPI 4.1 serves non-blocking collectives from libnbc,
// whose all-reduce reached only ~60% of blocking MPI_Allreduce's bandwidth at 1-16 MiB here
// (measured on 2 ranks; docs in the commit). Each ring step is one comm-thread phase, so many
// all-reduces progress side by side and the watchdog keeps running.
#include <ATen/core/Tensor.h>
#include <mpi.h>

#include "parallel/comm_thread.h"
#include "parallel/process_group.h"

namespace shoestring::parallel {

// The phases of one ring all-reduce of `t` on `comm` (a communicator used only by rings, tag
// unique among the rings in flight on it).
std::vector<CommOp::Phase> ring_all_reduce_phases(const at::Tensor& t, ReduceOp op, MPI_Comm comm, int rank, int size,
                                                  int tag);

// Tensors at least this large go round the ring (smaller ones: MPI_Iallreduce, fewer steps).
// SHOESTRING_MPI_RING_MIN_BYTES overrides it (tests use 1 to send everything round the ring).
int64_t ring_min_bytes();

}  // namespace shoestring::parallel
