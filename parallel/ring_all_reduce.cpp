#include "parallel/ring_all_reduce.h"

#include <ATen/ATen.h>

#include <cstdlib>

#include "parallel/mpi_types.h"

namespace shoestring::parallel {

int64_t ring_min_bytes() {
  static const int64_t n = [] {
    const char* v = std::getenv("SHOESTRING_MPI_RING_MIN_BYTES");
    return v && std::atoll(v) > 0 ? int64_t(std::atoll(v)) : int64_t(256) << 10;
  }();
  return n;
}

std::vector<CommOp::Phase> ring_all_reduce_phases(const at::Tensor& tensor, ReduceOp op, MPI_Comm comm, int rank,
                                                  int size, int tag) {
  struct Ring {
    at::Tensor t, tmp;
    std::vector<int64_t> off, len;  // chunk c: elements [off[c], off[c] + len[c])
    MPI_Datatype dt;
    int pending_reduce = -1;  // chunk whose received partial sum sits in tmp
  };
  auto ring = std::make_shared<Ring>();
  ring->t = tensor.detach();  // the in-place reductions below must not touch autograd state
  ring->dt = mpi_datatype(tensor.scalar_type());
  const int64_t n = tensor.numel();
  for (int c = 0; c < size; ++c) {  // the first n % size chunks are one longer
    ring->len.push_back(n / size + (c < n % size ? 1 : 0));
    ring->off.push_back(c == 0 ? 0 : ring->off.back() + ring->len[size_t(c - 1)]);
  }
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  auto chunk = [ring](int c) { return ring->t.narrow(0, ring->off[size_t(c)], ring->len[size_t(c)]); };
  auto mod = [size](int x) { return ((x % size) + size) % size; };
  auto reduce_pending = [ring, chunk, op] {
    if (ring->pending_reduce < 0) return;
    at::Tensor dst = chunk(ring->pending_reduce);
    const at::Tensor src = ring->tmp.narrow(0, 0, dst.numel());
    if (op == ReduceOp::Sum) dst.add_(src);
    else if (op == ReduceOp::Max) at::maximum_out(dst, dst, src);
    else at::minimum_out(dst, dst, src);
    ring->pending_reduce = -1;
  };
  auto exchange = [ring, comm, tag, right, left](void* send, int64_t send_len, void* recv, int64_t recv_len,
                                                 std::vector<MPI_Request>& reqs) {
    reqs.emplace_back();
    MPI_Irecv(recv, int(recv_len), ring->dt, left, tag, comm, &reqs.back());
    reqs.emplace_back();
    MPI_Isend(send, int(send_len), ring->dt, right, tag, comm, &reqs.back());
  };

  std::vector<CommOp::Phase> phases;
  // Reduce-scatter: at step s send chunk r-s, receive chunk r-s-1 and fold it in; after n-1
  // steps chunk r+1 holds every member's sum.
  for (int s = 0; s < size - 1; ++s)
    phases.push_back([=](std::vector<MPI_Request>& reqs) {
      reduce_pending();
      if (!ring->tmp.defined()) ring->tmp = at::empty({ring->len[0]}, ring->t.options());
      const int send_c = mod(rank - s), recv_c = mod(rank - s - 1);
      ring->pending_reduce = recv_c;
      exchange(chunk(send_c).data_ptr(), ring->len[size_t(send_c)], ring->tmp.data_ptr(), ring->len[size_t(recv_c)],
               reqs);
    });
  // All-gather: at step s pass on chunk r+1-s and receive chunk r-s in place.
  for (int s = 0; s < size - 1; ++s)
    phases.push_back([=](std::vector<MPI_Request>& reqs) {
      reduce_pending();
      const int send_c = mod(rank + 1 - s), recv_c = mod(rank - s);
      exchange(chunk(send_c).data_ptr(), ring->len[size_t(send_c)], chunk(recv_c).data_ptr(),
               ring->len[size_t(recv_c)], reqs);
    });
  phases.push_back([ring](std::vector<MPI_Request>&) { ring->tmp.reset(); });
  return phases;
}

}  // namespace shoestring::parallel
