// Direct broadcast (p2p_collectives.h): the root sends the whole tensor to every other member in
// one step. With Open MPI's single-copy shared-memory transfers (CMA) each receiver copies from
// the root's buffer itself, so the copies run in parallel; a pipelined chain measured no better
// at 4 ranks on 2 cores (docs/parallelism.md) and took n-1+segments steps.
#include <ATen/ATen.h>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

std::vector<CommOp::Phase> direct_broadcast_phases(const at::Tensor& t_, int root, MPI_Comm comm, int rank, int size,
                                                   int tag) {
  const at::Tensor t = t_;  // only its data pointer is used: no detach (a dispatcher trip)
  const int64_t n = t.numel(), esz = int64_t(t.element_size());
  const MPI_Datatype dt = mpi_datatype(t.scalar_type());
  return {[=](std::vector<MPI_Request>& reqs) {
    if (rank != root) return post_exchange(nullptr, 0, -1, t.data_ptr(), n, root, dt, esz, comm, tag, reqs);
    for (int d = 1; d < size; ++d)
      post_exchange(t.data_ptr(), n, (root + d) % size, nullptr, 0, -1, dt, esz, comm, tag, reqs);
  }};
}

}  // namespace shoestring::parallel
