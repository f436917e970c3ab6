// Direct reduce-scatter (p2p_collectives.h): one exchange, in which every member sends each peer
// that peer's block of its input, then the n-1 blocks received are folded into its own. One step
// where libnbc's MPI_Ireduce_scatter_block measured 0.7-0.8 of the blocking call on 4 ranks
// (docs/parallelism.md). The same shape as an all-reduce (a direct reduce-scatter then a direct
// all-gather: 2 steps instead of the ring's 2(n-1)) measured slower than the ring on 4 ranks of
// the 2-core VM, whose segments overlap the folds with the transfers, so all-reduce stays a ring.
#include <ATen/ATen.h>

#include <memory>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

namespace {

// Block c of the reduction is elements [off[c], off[c] + len[c]) of `in` (flat); this member
// receives its block from every peer into tmp and folds them into `mine` in a fixed peer order,
// so the result does not depend on arrival order.
struct Exchange {
  at::Tensor in, mine, tmp;
  std::vector<int64_t> off, len;
  MPI_Datatype dt;
  int64_t esz = 0;
};

CommOp::Phase scatter_phase(const std::shared_ptr<Exchange>& x, MPI_Comm comm, int rank, int size, int tag) {
  return [=](std::vector<MPI_Request>& reqs) {
    const int64_t mine = x->len[size_t(rank)];
    x->tmp = at::empty({(size - 1) * mine}, x->in.options());
    char* in = static_cast<char*>(x->in.data_ptr());
    char* tmp = static_cast<char*>(x->tmp.data_ptr());
    for (int d = 1; d < size; ++d) {
      const int to = (rank + d) % size, from = (rank + size - d) % size;
      post_exchange(in + x->off[size_t(to)] * x->esz, x->len[size_t(to)], to, tmp + (d - 1) * mine * x->esz, mine, from,
                    x->dt, x->esz, comm, tag, reqs);
    }
  };
}

void fold_received(Exchange& x, int rank, int size, ReduceOp op) {
  const int64_t mine = x.len[size_t(rank)];
  for (int d = size - 1; d >= 1; --d) fold_into(x.mine, x.tmp.narrow(0, (d - 1) * mine, mine), op);
  x.tmp.reset();
}

}  // namespace

std::vector<CommOp::Phase> direct_reduce_scatter_phases(const at::Tensor& out, const at::Tensor& in, ReduceOp op,
                                                        MPI_Comm comm, int rank, int size, int tag) {
  auto x = std::make_shared<Exchange>();
  x->in = in.detach().view(-1);
  x->mine = out.detach().view(-1);
  x->dt = mpi_datatype(in.scalar_type());
  x->esz = int64_t(in.element_size());
  const int64_t block = out.numel();
  for (int c = 0; c < size; ++c) {
    x->off.push_back(c * block);
    x->len.push_back(block);
  }
  return {scatter_phase(x, comm, rank, size, tag), [x, op, rank, size](std::vector<MPI_Request>&) {
            // In place, out is already in's block `rank`.
            const at::Tensor own = x->in.narrow(0, rank * x->len[0], x->len[0]);
            if (own.data_ptr() != x->mine.data_ptr()) x->mine.copy_(own);
            fold_received(*x, rank, size, op);
          }};
}

}  // namespace shoestring::parallel
