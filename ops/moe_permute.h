#pragma once
// Permute/unpermute for mixture-of-experts: the contiguous, expert-sorted token layout.
//
// Routing gives each of N tokens k expert ids. `plan_permutation` orders the N*k (token, expert)
// pairs by expert (stably, so tokens keep their order inside an expert), which puts each expert's
// tokens in one contiguous slice: experts run as dense GEMMs on slices, and expert parallelism
// sends exactly these slices over all-to-all. `permute` gathers rows into that layout and
// `unpermute` scatters expert outputs back, weighted by their gates, summing a token's k rows.
// Both are differentiable (built on index_select / index_add, whose gradients are each other).
#include <ATen/core/Tensor.h>

#include <vector>

namespace shoestring::ops {

struct Permutation {
  at::Tensor source_token;      // [M] int64: token index of each permuted row
  at::Tensor slot;              // [M] int64: index into the flattened [N*k] routing of each row
  std::vector<int64_t> counts;  // [E] rows per expert after capacity (sum = M)
  at::Tensor routed;            // [E] int64 (CPU): pairs routed to each expert, before capacity
  int64_t dropped = 0;          // (token, expert) pairs dropped by the capacity limit
};

// expert_ids: [N, k] int64 in [0, n_experts). capacity < 0: dropless; else each expert keeps at
// most `capacity` rows, the earliest tokens first.
Permutation plan_permutation(const at::Tensor& expert_ids, int64_t n_experts, int64_t capacity = -1);

// x: [N, d] -> [M, d] in expert-sorted order.
at::Tensor permute(const at::Tensor& x, const Permutation& p);

// rows: [M, d] expert outputs, weights: [M] gates of those rows -> [n_tokens, d] with
// out[t] = sum of weights[r] * rows[r] over rows r of token t (dropped pairs contribute 0).
at::Tensor unpermute(const at::Tensor& rows, const at::Tensor& weights, const Permutation& p, int64_t n_tokens);

}  // namespace shoestring::ops
