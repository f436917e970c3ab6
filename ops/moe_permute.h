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

#include <utility>
#include <vector>

namespace shoestring::ops {

struct Permutation {
  at::Tensor source_token;      // [M] int64: token index of each permuted row
  at::Tensor source_token_host; // the same on the CPU, for row maps built on the host
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

at::Tensor long_tensor(const std::vector<int64_t>& v);  // int64, CPU

// A many-to-one map of source rows onto output rows, both ways: row_of[i] is the output row of
// source row i; members[ptr[o] .. ptr[o+1]) are the source rows of output row o, ascending. All
// int64, on the device of the rows they map (built on the host, copied there once).
struct RowMap {
  at::Tensor row_of, ptr, members;
  int64_t outputs() const { return ptr.numel() - 1; }
};
RowMap make_row_map(const std::vector<int64_t>& row_of, int64_t outputs, at::Device device = at::kCPU);
// The same from an int64 CPU tensor (e.g. Permutation::source_token_host).
RowMap make_row_map(const at::Tensor& row_of_host, int64_t outputs, at::Device device = at::kCPU);

// The same row movements on CUDA as deterministic kernels (moe_permute.cu; without CUDA they
// throw). The CPU forms and the autograd functions over both are trainer/model/moe_rows.h; these
// give bit-identical results, grad_w excepted (a fixed tree order where the CPU sums in sequence).
// Index tensors are contiguous int64 on src's device; float, double, bfloat16 and half, summed in
// float for the 16-bit types.
// out[r] = src[index[r]]
at::Tensor gather_rows_cuda(const at::Tensor& src, const at::Tensor& index);
// out[o] = sum over j in [ptr[o], ptr[o+1]), ascending, of w[members[j]] * src[members[j]]; w
// undefined: weights of 1. Outputs with no rows are 0. No atomics: the same bits every run.
at::Tensor sum_rows_cuda(const at::Tensor& src, const at::Tensor& w, const at::Tensor& ptr, const at::Tensor& members);
// The weighted sum's backward: grad_src[i] = w[i] * grad[row_of[i]], grad_w[i] = <src[i], grad[row_of[i]]>.
std::pair<at::Tensor, at::Tensor> sum_rows_backward_cuda(const at::Tensor& grad, const at::Tensor& src,
                                                         const at::Tensor& w, const at::Tensor& row_of);

}  // namespace shoestring::ops
