// Ring all-gather (p2p_collectives.h): n-1 steps; at step s each member passes block r-s on to
// its right neighbour and receives block r-s-1 from its left one, straight into the output.
#include <ATen/ATen.h>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

std::vector<CommOp::Phase> ring_all_gather_phases(const at::Tensor& out_, const at::Tensor& in_, MPI_Comm comm,
                                                  int rank, int size, int tag) {
  const at::Tensor out = out_.detach(), in = in_.detach();
  const int64_t block = in.numel(), esz = int64_t(in.element_size());
  const MPI_Datatype dt = mpi_datatype(in.scalar_type());
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  auto mod = [size](int x) { return ((x % size) + size) % size; };
  auto at_block = [out, block, esz](int c) { return static_cast<char*>(out.data_ptr()) + int64_t(c) * block * esz; };
  std::vector<CommOp::Phase> phases;
  // Our own block first, on the comm thread: operations queued before this one may still write
  // out (or in), and they finish in order only there.
  phases.push_back([out, in, rank, block](std::vector<MPI_Request>&) {
    at::Tensor mine = out.narrow(0, int64_t(rank) * block, block);
    if (block > 0 && mine.data_ptr() != in.data_ptr()) mine.copy_(in);
  });
  for (int s = 0; s < size - 1; ++s)
    phases.push_back([=](std::vector<MPI_Request>& reqs) {
      post_exchange(at_block(mod(rank - s)), block, right, at_block(mod(rank - s - 1)), block, left, dt, esz, comm, tag,
                    reqs);
    });
  return phases;
}

}  // namespace shoestring::parallel
