#pragma once
// The row gathers and sums of MoE dispatch: the single-process dispatcher's permute and
// gate-weighted unpermute (expert_dispatch.h) and the expert-parallel dispatcher's send, expand
// and combine (trainer/expert_parallel.h). Each is an autograd node whose backward is the other: a token row copied to several destinations gets the
// sum of their gradients back, a weighted sum hands each source row its weighted share. On the CPU
// they run as row memcpys and per-output sums in a fixed (ascending) order, into pooled buffers,
// summing bfloat16 in float (ATen's index_add would sum bfloat16 in bfloat16). On CUDA the kernels
// of ops/moe_permute.h do the same sums in the same order (ATen's CUDA index_add would sum with
// atomics, in a different order every run).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ops/moe_permute.h"
#include "parallel/buffer_pool.h"

namespace shoestring {

// The maps (RowMap, make_row_map) live with the CUDA kernels in ops/moe_permute.h.
using ops::long_tensor;
using ops::make_row_map;
using ops::RowMap;

// rows[i] = src[map.row_of[i]]: one row per source row of the map.
at::Tensor gather_rows(const at::Tensor& src, const RowMap& map, const std::shared_ptr<parallel::BufferPool>& pool);
// out[o] = sum over the source rows i of o (ascending) of w[i] * src[i], in the op-math type
// (float for bfloat16); outputs without sources are 0.
at::Tensor weighted_sum_rows(const at::Tensor& src, const at::Tensor& w, const RowMap& map,
                             const std::shared_ptr<parallel::BufferPool>& pool);
// out[o] = sum over the source rows i of o of src[i].
at::Tensor sum_rows(const at::Tensor& src, const RowMap& map, const std::shared_ptr<parallel::BufferPool>& pool);

}  // namespace shoestring
