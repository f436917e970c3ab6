// Pipelined chain broadcast (p2p_collectives.h): member v (counted from the root) receives
// segment k from v-1 while it forwards segment k-1 to v+1. With s segments the last member has
// everything after about (n-2+s) segment times instead of (n-1) whole-tensor times. On two
// members there is nothing to pipeline: one message (split only at mpi_chunk_elems()).
#include <ATen/ATen.h>

#include <algorithm>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

std::vector<CommOp::Phase> chain_broadcast_phases(const at::Tensor& t_, int root, MPI_Comm comm, int rank, int size,
                                                  int tag) {
  const at::Tensor t = t_.detach();
  const int64_t n = t.numel(), esz = int64_t(t.element_size());
  const MPI_Datatype dt = mpi_datatype(t.scalar_type());
  const int v = (rank - root + size) % size;
  const int prev = v == 0 ? -1 : (rank + size - 1) % size;
  const int next = v == size - 1 ? -1 : (rank + 1) % size;
  const int64_t seg_elems = std::max<int64_t>(1, segment_bytes() / esz);
  const int64_t nseg = size == 2 ? 1 : std::max<int64_t>(1, (n + seg_elems - 1) / seg_elems);
  // Segment k: the same near-equal split on every member.
  auto seg = [n, nseg](int64_t k) {
    const int64_t q = n / nseg, rem = n % nseg;
    return std::pair<int64_t, int64_t>{k * q + std::min(k, rem), q + (k < rem ? 1 : 0)};
  };
  auto ptr = [t, esz](int64_t off) { return static_cast<char*>(t.data_ptr()) + off * esz; };
  std::vector<CommOp::Phase> phases;
  // Phase p receives segment p (not on the root) and forwards segment p-1 (the root, which has
  // them all, sends segment p). The last member only receives.
  for (int64_t p = 0; p <= nseg; ++p) {
    const int64_t send_k = v == 0 ? p : p - 1;
    const bool do_send = next >= 0 && send_k >= 0 && send_k < nseg;
    const bool do_recv = prev >= 0 && p < nseg;
    if (!do_send && !do_recv) continue;
    const auto s = seg(do_send ? send_k : 0), r = seg(do_recv ? p : 0);
    phases.push_back([=](std::vector<MPI_Request>& reqs) {
      post_exchange(ptr(s.first), s.second, do_send ? next : -1, ptr(r.first), r.second, do_recv ? prev : -1, dt, esz,
                    comm, tag, reqs);
    });
  }
  return phases;
}

}  // namespace shoestring::parallel
