// Direct reduce-scatter and all-reduce (p2p_collectives.h). Reduce-scatter is one exchange: every
// member sends each peer that peer's block of its input and folds the n-1 blocks it receives into
// its own. All-reduce is that over n chunks followed by a direct all-gather of the reduced chunks:
// 2 steps where a ring takes 2(n-1), each rank sending the same 2(n-1)/n of the tensor. On one
// node's shared memory the steps, not the bytes, are what cost: each waits for the slowest member,
// which on oversubscribed cores means the scheduler (docs/parallelism.md).
#include <ATen/ATen.h>

#include <memory>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

void fold_into(const at::Tensor& dst, const at::Tensor& src, ReduceOp op) {
  if (op == ReduceOp::Sum) dst.add_(src);
  else if (op == ReduceOp::Max) at::maximum_out(const_cast<at::Tensor&>(dst), dst, src);
  else at::minimum_out(const_cast<at::Tensor&>(dst), dst, src);
}

namespace {

// Chunk c of the reduction is elements [off[c], off[c] + len[c]) of `in` (flat); this member
// receives its chunk from every peer into tmp and folds them into `mine`, in peer order
// rank+1, rank+2, ... so the result does not depend on arrival order.
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

std::vector<CommOp::Phase> direct_all_reduce_phases(const at::Tensor& t, ReduceOp op, MPI_Comm comm, int rank,
                                                    int size, int tag) {
  auto x = std::make_shared<Exchange>();
  x->in = t.detach().view(-1);  // reduced in place: the in-place folds must not touch autograd state
  x->dt = mpi_datatype(t.scalar_type());
  x->esz = int64_t(t.element_size());
  const int64_t n = t.numel();
  for (int c = 0; c < size; ++c) {  // the first n % size chunks are one longer, as in the ring
    x->len.push_back(n / size + (c < n % size ? 1 : 0));
    x->off.push_back(c == 0 ? 0 : x->off.back() + x->len[size_t(c - 1)]);
  }
  x->mine = x->in.narrow(0, x->off[size_t(rank)], x->len[size_t(rank)]);
  return {scatter_phase(x, comm, rank, size, tag), [x, op, comm, rank, size, tag](std::vector<MPI_Request>& reqs) {
            fold_received(*x, rank, size, op);
            char* base = static_cast<char*>(x->in.data_ptr());
            for (int d = 1; d < size; ++d) {
              const int to = (rank + d) % size, from = (rank + size - d) % size;
              post_exchange(x->mine.data_ptr(), x->len[size_t(rank)], to, base + x->off[size_t(from)] * x->esz,
                            x->len[size_t(from)], from, x->dt, x->esz, comm, tag, reqs);
            }
          }};
}

}  // namespace shoestring::parallel
