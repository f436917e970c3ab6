// Direct all-gather (p2p_collectives.h): one step in which every member sends its block to every
// other member and receives theirs straight into the output. On shared memory Open MPI moves
// large messages with one copy made by the receiver (CMA), so the copies run in parallel on the
// receivers and a ring's n-1 store-and-forward steps (each waiting for its slowest member, which
// on oversubscribed cores means for the scheduler) only add latency; measured in
// docs/parallelism.md.
#include <ATen/ATen.h>

#include <cstring>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

std::vector<CommOp::Phase> direct_all_gather_phases(const at::Tensor& out_, const at::Tensor& in_, MPI_Comm comm,
                                                    int rank, int size, int tag) {
  // Plain handles, not detach(): only the data pointers are used, and a detach is a dispatcher trip.
  const at::Tensor out = out_, in = in_;
  const int64_t block = in.numel(), esz = int64_t(in.element_size());
  const MPI_Datatype dt = mpi_datatype(in.scalar_type());
  auto at_block = [out, block, esz](int c) { return static_cast<char*>(out.data_ptr()) + int64_t(c) * block * esz; };
  const bool in_place = block == 0 || in.data_ptr() == at_block(rank);
  return {[=](std::vector<MPI_Request>& reqs) {
    // Sends go straight from `in`, so copying our own block into `out` overlaps the transfers.
    // (Started on the comm thread, not at submit: operations queued before this one may still
    // write out or in, and they finish in order only there.)
    for (int d = 1; d < size; ++d) {
      const int to = (rank + d) % size, from = (rank + size - d) % size;
      post_exchange(in.data_ptr(), block, to, at_block(from), block, from, dt, esz, comm, tag, reqs);
    }
    // A plain copy: ATen's copy_ costs a few microseconds of dispatch, 10% of a 1 MiB gather.
    if (!in_place) std::memcpy(at_block(rank), in.data_ptr(), size_t(block * esz));
  }};
}

}  // namespace shoestring::parallel
