#include "ops/moe_permute.h"

#include <ATen/ATen.h>

#include "ops/cuda_runtime.h"

#include <stdexcept>
#include <string>

namespace shoestring::ops {

Permutation plan_permutation(const at::Tensor& expert_ids, int64_t n_experts, int64_t capacity) {
  if (expert_ids.dim() != 2 || expert_ids.scalar_type() != at::kLong)
    throw std::invalid_argument("plan_permutation: expert_ids must be [tokens, k] int64, got " +
                                std::string(expert_ids.toString()) + " of dim " + std::to_string(expert_ids.dim()));
  const int64_t k = expert_ids.size(1);
  const at::Tensor flat = expert_ids.reshape({-1}).cpu();
  // Stable sort: equal expert ids keep token order, so the layout is deterministic.
  at::Tensor slot = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  const at::Tensor sorted_ids = flat.index_select(0, slot);
  const at::Tensor counts = at::bincount(flat, /*weights=*/{}, n_experts);
  Permutation p;
  p.routed = counts;
  if (capacity >= 0) {
    // Position of each sorted row within its expert: row index minus the expert's first row.
    const at::Tensor starts = counts.cumsum(0) - counts;
    const at::Tensor rank_in_expert = at::arange(slot.numel(), at::kLong) - starts.index_select(0, sorted_ids);
    const at::Tensor keep = rank_in_expert < capacity;
    p.dropped = slot.numel() - keep.sum().item<int64_t>();
    slot = slot.masked_select(keep);
    const at::Tensor kept = at::minimum(counts, at::full_like(counts, capacity));
    p.counts.assign(kept.data_ptr<int64_t>(), kept.data_ptr<int64_t>() + n_experts);
  } else {
    p.counts.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + n_experts);
  }
  p.source_token_host = at::floor_divide(slot, k);
  p.slot = slot.to(expert_ids.device());
  p.source_token = p.source_token_host.to(expert_ids.device());
  return p;
}

at::Tensor long_tensor(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

RowMap make_row_map(const std::vector<int64_t>& row_of, int64_t outputs, at::Device device) {
  std::vector<int64_t> ptr(size_t(outputs) + 1, 0), members(row_of.size());
  for (int64_t o : row_of) ++ptr[size_t(o) + 1];
  for (size_t o = 0; o < size_t(outputs); ++o) ptr[o + 1] += ptr[o];
  std::vector<int64_t> cursor(ptr.begin(), ptr.end() - 1);
  for (size_t i = 0; i < row_of.size(); ++i) members[size_t(cursor[size_t(row_of[i])]++)] = int64_t(i);
  if (device.is_cpu()) return {long_tensor(row_of), long_tensor(ptr), long_tensor(members)};
  // One host-to-device copy for the three.
  std::vector<int64_t> all(row_of);
  all.insert(all.end(), ptr.begin(), ptr.end());
  all.insert(all.end(), members.begin(), members.end());
  const at::Tensor on = long_tensor(all).to(device);
  const auto m = int64_t(row_of.size()), o = int64_t(ptr.size());
  return {on.narrow(0, 0, m), on.narrow(0, m, o), on.narrow(0, m + o, m)};
}

RowMap make_row_map(const at::Tensor& row_of_host, int64_t outputs, at::Device device) {
  if (!row_of_host.device().is_cpu() || row_of_host.scalar_type() != at::kLong)
    throw std::invalid_argument("make_row_map: row_of must be int64 on the CPU, got " + std::string(row_of_host.toString()));
  const at::Tensor c = row_of_host.contiguous();
  return make_row_map(std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()), outputs, device);
}

at::Tensor permute(const at::Tensor& x, const Permutation& p) { return x.index_select(0, p.source_token); }

at::Tensor unpermute(const at::Tensor& rows, const at::Tensor& weights, const Permutation& p, int64_t n_tokens) {
  const at::Tensor weighted = rows * weights.to(rows.scalar_type()).unsqueeze(1);
  return at::zeros({n_tokens, rows.size(1)}, rows.options()).index_add(0, p.source_token, weighted);
}

#ifndef SHOESTRING_WITH_CUDA
at::Tensor gather_rows_cuda(const at::Tensor&, const at::Tensor&) { built_without_cuda("gather_rows_cuda"); }
at::Tensor sum_rows_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  built_without_cuda("sum_rows_cuda");
}
std::pair<at::Tensor, at::Tensor> sum_rows_backward_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&) {
  built_without_cuda("sum_rows_backward_cuda");
}
#endif

}  // namespace shoestring::ops
