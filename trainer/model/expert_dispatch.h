#pragma once
// Where a MoE layer's routed experts run. The model stays single-device code: MoEImpl plans the
// (token, expert) pairs and hands them to an ExpertDispatcher, which may run them in this process
// or ship them to the ranks holding the experts (trainer/expert_parallel.h). Without a dispatcher
// MoEImpl runs every expert itself, the single-process path.
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "ops/moe_permute.h"

namespace shoestring::model {

// The experts this process holds: global ids [first, first + count) of `total`.
struct LocalExperts {
  int64_t first = 0, count = 0, total = 0;
  // rows: [sum(counts), d] sorted by local expert, counts[e] rows for local expert e (zeros
  // allowed) -> [sum(counts), d] expert outputs. Every expert joins the graph even with no rows,
  // so the backward pass reaches the same nodes on every rank.
  std::function<at::Tensor(const at::Tensor& rows, const std::vector<int64_t>& counts)> run;
};

class ExpertDispatcher {
 public:
  virtual ~ExpertDispatcher() = default;
  // tokens: [N, d]; gates: [N, k] (differentiable); perm: the plan over all `experts.total`
  // experts, capacity already applied. Returns [N, d]: for each token the sum over its kept
  // pairs of gate * expert(token). Collective over the dispatcher's group: every member calls it
  // for every MoE forward, whatever its token counts.
  virtual at::Tensor run(const at::Tensor& tokens, const at::Tensor& gates, const ops::Permutation& perm,
                         const LocalExperts& experts) = 0;
};

}  // namespace shoestring::model
