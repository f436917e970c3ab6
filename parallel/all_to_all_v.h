#pragma once
// A differentiable all-to-all-v: the forward exchange of ProcessGroup::all_to_all whose backward
// sends each row's gradient back where the row came from (the same exchange with the counts
// swapped). Expert parallelism dispatches tokens and combines expert outputs with it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "parallel/buffer_pool.h"
#include "parallel/process_group.h"

namespace shoestring::parallel {

// x: [sum(send_counts), ...] rows for member j in block j -> [sum(recv_counts), ...] rows from
// each member in member order. Blocks until the exchange is done. Collective over `group`, in the
// forward and, when x requires grad, in the backward pass: every member must run both. `group`
// is kept alive by the autograd graph. With `pool`, the received rows of both passes live in its
// reused buffers (no fresh pages per call).
at::Tensor all_to_all_v(const at::Tensor& x, const GroupPtr& group, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& recv_counts, const std::shared_ptr<BufferPool>& pool = nullptr);

// The forward exchange of all_to_all_v started and not yet waited for, so that the caller can
// compute while the rows travel (the split MoE forward, trainer/model/moe.h). It holds x and the
// receive buffer until wait(). all_to_all_v is start + wait.
// The received payload rows -> the rows wait() returns (x's dtype and width): see
// all_to_all_v_start_encoded.
using RowDecoder = std::function<at::Tensor(const at::Tensor& received)>;

class AllToAllVInFlight {
 public:
  AllToAllVInFlight() = default;
  // The received rows, attached to x's graph as all_to_all_v's result is (the backward exchange
  // runs when backward reaches it, blocking, as all_to_all_v's). Grad mode is the one of start.
  // Call once.
  // With `backward_wait_at` (from reserve_backward_slot) the backward is split in two: the reverse
  // exchange starts where backward reaches the result, and is waited for only at that earlier
  // slot, so that autograd first runs the other ready work created after the slot (the MoE
  // layer's shared experts) while the gradients travel.
  at::Tensor wait(std::optional<uint64_t> backward_wait_at = std::nullopt);
  bool done() const;  // has the exchange completed? never blocks
  const WorkPtr& work() const { return work_; }

 private:
  friend AllToAllVInFlight all_to_all_v_start(const at::Tensor&, const GroupPtr&, const std::vector<int64_t>&,
                                              const std::vector<int64_t>&, const std::shared_ptr<BufferPool>&);
  friend AllToAllVInFlight all_to_all_v_start_encoded(const at::Tensor&, const at::Tensor&, RowDecoder,
                                                      const GroupPtr&, const std::vector<int64_t>&,
                                                      const std::vector<int64_t>&, const std::shared_ptr<BufferPool>&);
  at::Tensor x_, out_, sent_;  // sent_: what travels (x, or the payload), alive until the wait
  RowDecoder decode_;
  GroupPtr group_;
  std::vector<int64_t> send_, recv_;
  std::shared_ptr<BufferPool> pool_;
  WorkPtr work_;
  bool grad_ = false;
};

// A place in autograd's backward order, taken now: of two nodes ready at once, autograd's engine
// runs the one created later first (higher sequence number), so a node given this slot runs after
// every ready node created after this call. Sequence numbers are per thread: call it on the thread
// that builds the graph. For AllToAllVInFlight::wait.
uint64_t reserve_backward_slot();

// Starts the exchange (queued on the group like any collective, so it is issued now in this
// rank's collective order) and returns without waiting for it.
AllToAllVInFlight all_to_all_v_start(const at::Tensor& x, const GroupPtr& group,
                                     const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
                                     const std::shared_ptr<BufferPool>& pool = nullptr);

// all_to_all_v_start where `payload` travels in x's place: one payload row per row of x, an
// encoding of it (FP8 codes and scales, ops/fp8_rows.h). wait() returns decode(the received
// payload), attached to x's graph as if x itself had travelled: the encoding counts as the identity
// (straight-through, as FP8 training treats activation quantization), so backward is all_to_all_v's,
// the reverse exchange of the gradient in x's dtype. The payload is not differentiated.
AllToAllVInFlight all_to_all_v_start_encoded(const at::Tensor& x, const at::Tensor& payload, RowDecoder decode,
                                             const GroupPtr& group, const std::vector<int64_t>& send_counts,
                                             const std::vector<int64_t>& recv_counts,
                                             const std::shared_ptr<BufferPool>& pool = nullptr);

// Each member's per-destination counts -> the counts every member will send to this one (an
// all_to_all of one int64 per pair; zeros fine), through tensors on `device` (the group's).
// Collective over `group`.
std::vector<int64_t> exchange_counts(ProcessGroup& group, const std::vector<int64_t>& send_counts,
                                     const at::Device& device);

}  // namespace shoestring::parallel
