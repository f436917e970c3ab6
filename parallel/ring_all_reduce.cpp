// Ring all-reduce (p2p_collectives.h). The reduce-scatter steps are cut into segments: a phase
// starts the transfer of segment k, then folds in segment k-1 (received by the previous phase)
// while it travels, so each member's reduction hides behind its own communication. The
// all-gather steps have nothing to overlap and stay whole (fewer steps, less latency).
#include <ATen/ATen.h>

#include <algorithm>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

namespace {

struct Range {
  int64_t begin = 0, len = 0;
  bool overlaps(const Range& o) const { return begin < o.begin + o.len && o.begin < begin + len; }
};

}  // namespace

std::vector<CommOp::Phase> ring_all_reduce_phases(const at::Tensor& tensor, ReduceOp op, MPI_Comm comm, int rank,
                                                  int size, int tag) {
  struct Ring {
    at::Tensor t;
    at::Tensor tmp[2];  // receive buffers of alternate phases: one fills while the other is folded in
    std::vector<int64_t> off, len;  // chunk c: elements [off[c], off[c] + len[c])
    int64_t nseg = 1;
    MPI_Datatype dt;
    int64_t esz = 0;
    bool pending = false;  // a received segment waits in tmp[pending_slot] to be folded into pending_dst
    Range pending_dst;
    int pending_slot = 0;
  };
  auto ring = std::make_shared<Ring>();
  ring->t = tensor.detach();  // the in-place reductions below must not touch autograd state
  ring->dt = mpi_datatype(tensor.scalar_type());
  ring->esz = int64_t(tensor.element_size());
  const int64_t n = tensor.numel();
  for (int c = 0; c < size; ++c) {  // the first n % size chunks are one longer
    ring->len.push_back(n / size + (c < n % size ? 1 : 0));
    ring->off.push_back(c == 0 ? 0 : ring->off.back() + ring->len[size_t(c - 1)]);
  }
  const int64_t seg_elems = std::max<int64_t>(1, segment_bytes() / ring->esz);
  ring->nseg = std::max<int64_t>(1, (ring->len[0] + seg_elems - 1) / seg_elems);
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  auto mod = [size](int x) { return ((x % size) + size) % size; };
  // Segment k of chunk c; every member computes the same split of every chunk.
  auto seg = [ring](int c, int64_t k) {
    const int64_t len = ring->len[size_t(c)], q = len / ring->nseg, rem = len % ring->nseg;
    const int64_t b = k * q + std::min(k, rem);
    return Range{ring->off[size_t(c)] + b, q + (k < rem ? 1 : 0)};
  };
  auto whole = [ring](int c) { return Range{ring->off[size_t(c)], ring->len[size_t(c)]}; };
  auto reduce_pending = [ring, op] {
    if (!ring->pending) return;
    at::Tensor dst = ring->t.narrow(0, ring->pending_dst.begin, ring->pending_dst.len);
    const at::Tensor src = ring->tmp[ring->pending_slot].narrow(0, 0, dst.numel());
    fold_into(dst, src, op);
    ring->pending = false;
  };
  // One step: fold in the previous segment first only where this step touches it.
  auto step = [ring, reduce_pending, comm, tag, right, left](Range send, void* recv, Range recv_range, int64_t recv_len,
                                                             std::vector<MPI_Request>& reqs) {
    if (ring->pending && (ring->pending_dst.overlaps(send) || ring->pending_dst.overlaps(recv_range))) reduce_pending();
    char* base = static_cast<char*>(ring->t.data_ptr());
    post_exchange(base + send.begin * ring->esz, send.len, right, recv, recv_len, left, ring->dt, ring->esz, comm, tag,
                  reqs);
    reduce_pending();  // overlaps the transfer just started
  };

  std::vector<CommOp::Phase> phases;
  // Reduce-scatter: at step s send chunk r-s, receive chunk r-s-1 and fold it in; after n-1
  // steps chunk r+1 holds every member's sum.
  int phase = 0;
  for (int s = 0; s < size - 1; ++s)
    for (int64_t k = 0; k < ring->nseg; ++k, ++phase)
      phases.push_back([=](std::vector<MPI_Request>& reqs) {
        const int slot = phase % 2;
        if (!ring->tmp[slot].defined()) ring->tmp[slot] = at::empty({seg(0, 0).len}, ring->t.options());
        const Range in = seg(mod(rank - s - 1), k);
        // The tmp buffer is not part of t: an empty range never overlaps.
        step(seg(mod(rank - s), k), ring->tmp[slot].data_ptr(), Range{}, in.len, reqs);
        // step() folded the previous segment in (or will have, before anything reads it).
        ring->pending = true;
        ring->pending_dst = in;
        ring->pending_slot = slot;
      });
  // All-gather: at step s pass on chunk r+1-s and receive chunk r-s in place.
  for (int s = 0; s < size - 1; ++s)
    phases.push_back([=](std::vector<MPI_Request>& reqs) {
      const Range in = whole(mod(rank - s));
      step(whole(mod(rank + 1 - s)), static_cast<char*>(ring->t.data_ptr()) + in.begin * ring->esz, in, in.len, reqs);
    });
  phases.push_back([ring](std::vector<MPI_Request>&) {
    ring->tmp[0].reset();
    ring->tmp[1].reset();
  });
  return phases;
}

}  // namespace shoestring::parallel
