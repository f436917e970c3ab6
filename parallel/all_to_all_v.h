#pragma once
// A differentiable all-to-all-v: the forward exchange of ProcessGroup::all_to_all whose backward
// sends each row's gradient back where the row came from (the same exchange with the counts
// swapped). Expert parallelism dispatches tokens and combines expert outputs with it.
#include <ATen/core/Tensor.h>

#include <memory>
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

// Each member's per-destination counts -> the counts every member will send to this one (an
// all_to_all of one int64 per pair; zeros fine), through tensors on `device` (the group's).
// Collective over `group`.
std::vector<int64_t> exchange_counts(ProcessGroup& group, const std::vector<int64_t>& send_counts,
                                     const at::Device& device);

}  // namespace shoestring::parallel
