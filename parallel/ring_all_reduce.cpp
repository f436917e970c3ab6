// Ring all-reduce (p2p_collectives.h). The reduce-scatter steps are cut into segments: a phase
// starts the transfer of segment k, then folds in segment k-1 (received by the previous phase)
// while it travels, so each member's reduction hides behind its own communication. The
// all-gather steps have nothing to overlap and stay whole (fewer steps, less latency).
//
// Everything here works on raw pointers into the caller's tensor (which the ring keeps alive):
// at 1 MiB on two ranks the whole operation takes about 200 us, and the tensor calls this
// replaced (a detach, a narrow and an at::empty per step, each a trip through the dispatcher)
// cost several of them on the critical path (docs/parallelism.md).
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

namespace {

struct Range {
  int64_t begin = 0, len = 0;
  bool overlaps(const Range& o) const { return begin < o.begin + o.len && o.begin < begin + len; }
};

class Ring {
 public:
  Ring(const at::Tensor& t, ReduceOp op, MPI_Comm comm, int rank, int size, int tag)
      : t_(t), base_(static_cast<char*>(t.data_ptr())), dtype_(t.scalar_type()), dt_(mpi_datatype(dtype_)),
        esz_(int64_t(t.element_size())), op_(op), comm_(comm), rank_(rank), size_(size), tag_(tag) {
    const int64_t n = t.numel();
    off_.resize(size_t(size));
    len_.resize(size_t(size));
    for (int c = 0; c < size; ++c) {  // the first n % size chunks are one longer
      len_[size_t(c)] = n / size + (c < n % size ? 1 : 0);
      off_[size_t(c)] = c == 0 ? 0 : off_[size_t(c - 1)] + len_[size_t(c - 1)];
    }
    const int64_t seg_elems = std::max<int64_t>(1, segment_bytes() / esz_);
    nseg_ = std::max<int64_t>(1, (len_[0] + seg_elems - 1) / seg_elems);
  }

  int mod(int x) const { return ((x % size_) + size_) % size_; }

  // Segment k of chunk c; every member computes the same split of every chunk.
  Range seg(int c, int64_t k) const {
    const int64_t len = len_[size_t(c)], q = len / nseg_, rem = len % nseg_;
    return Range{off_[size_t(c)] + k * q + std::min(k, rem), q + (k < rem ? 1 : 0)};
  }
  Range whole(int c) const { return Range{off_[size_t(c)], len_[size_t(c)]}; }
  int64_t nseg() const { return nseg_; }

  // Reduce-scatter phase `phase` (step s, segment k): send segment k of chunk r-s, receive the
  // same segment of chunk r-s-1 to fold it in next phase. After n-1 steps chunk r+1 holds every
  // member's sum.
  void reduce_scatter_step(int s, int64_t k, int phase, std::vector<MPI_Request>& reqs) {
    const int slot = phase % 2;  // one buffer fills while the other's contents are folded in
    if (!tmp_[slot]) tmp_[slot].emplace(size_t(seg(0, 0).len * esz_));
    const Range in = seg(mod(rank_ - s - 1), k);
    step(seg(mod(rank_ - s), k), tmp_[slot]->data(), Range{}, in.len, reqs);  // tmp is not part of t
    pending_ = true;
    pending_dst_ = in;
    pending_slot_ = slot;
  }

  // All-gather step s: pass on chunk r+1-s and receive chunk r-s in place.
  void all_gather_step(int s, std::vector<MPI_Request>& reqs) {
    const Range in = whole(mod(rank_ - s));
    step(whole(mod(rank_ + 1 - s)), base_ + in.begin * esz_, in, in.len, reqs);
  }

  void finish() {
    reduce_pending();  // none with two or more members; kept so the ring ends folded whatever its shape
    tmp_[0].reset();
    tmp_[1].reset();
    t_.reset();
  }

 private:
  void reduce_pending() {
    if (!pending_) return;
    fold_into(base_ + pending_dst_.begin * esz_, tmp_[pending_slot_]->data(), pending_dst_.len, dtype_, op_);
    pending_ = false;
  }

  // One step: fold in the previous segment first only where this step touches it, else while the
  // transfer just started travels.
  void step(Range send, void* recv, Range recv_range, int64_t recv_len, std::vector<MPI_Request>& reqs) {
    if (pending_ && (pending_dst_.overlaps(send) || pending_dst_.overlaps(recv_range))) reduce_pending();
    const int right = (rank_ + 1) % size_, left = (rank_ + size_ - 1) % size_;
    post_exchange(base_ + send.begin * esz_, send.len, right, recv, recv_len, left, dt_, esz_, comm_, tag_, reqs);
    reduce_pending();
  }

  at::Tensor t_;  // keeps the caller's storage alive until the last step
  char* base_;
  at::ScalarType dtype_;
  MPI_Datatype dt_;
  int64_t esz_;
  ReduceOp op_;
  MPI_Comm comm_;
  int rank_, size_, tag_;
  std::vector<int64_t> off_, len_;  // chunk c: elements [off[c], off[c] + len[c])
  int64_t nseg_ = 1;
  std::optional<Scratch> tmp_[2];
  bool pending_ = false;  // a received segment waits in tmp[pending_slot_] to be folded into pending_dst_
  Range pending_dst_;
  int pending_slot_ = 0;
};

}  // namespace

std::vector<CommOp::Phase> ring_all_reduce_phases(const at::Tensor& tensor, ReduceOp op, MPI_Comm comm, int rank,
                                                  int size, int tag) {
  auto ring = std::make_shared<Ring>(tensor, op, comm, rank, size, tag);
  std::vector<CommOp::Phase> phases;
  phases.reserve(size_t((size - 1) * (ring->nseg() + 1) + 1));
  int phase = 0;
  for (int s = 0; s < size - 1; ++s)
    for (int64_t k = 0; k < ring->nseg(); ++k, ++phase)
      phases.push_back([ring, s, k, phase](std::vector<MPI_Request>& reqs) { ring->reduce_scatter_step(s, k, phase, reqs); });
  for (int s = 0; s < size - 1; ++s)
    phases.push_back([ring, s](std::vector<MPI_Request>& reqs) { ring->all_gather_step(s, reqs); });
  phases.push_back([ring](std::vector<MPI_Request>&) { ring->finish(); });
  return phases;
}

}  // namespace shoestring::parallel
