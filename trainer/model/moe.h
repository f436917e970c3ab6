#pragma once
// DeepSeekMoE feed-forward (DeepSeek-V3 §2.1.2): n_shared experts applied to every token plus
// n_routed experts of which each token uses its top-k, each a SwiGLU of moe_intermediate_size.
// Tokens are permuted into the expert-sorted layout (ops/moe_permute.h), each expert runs on its
// contiguous slice, and the outputs are scattered back weighted by the gates: no per-token loops.
#include <torch/nn/module.h>

#include <memory>

#include "trainer/config.h"
#include "trainer/model/expert_dispatch.h"
#include "trainer/model/linear.h"
#include "trainer/model/router.h"
#include "trainer/model/swiglu.h"

namespace shoestring::model {

// What one MoE layer saw in one forward pass; the trainer sums it over micro-batches.
struct MoEStats {
  at::Tensor load;          // [E] int64: tokens routed to each expert (before capacity drops)
  int64_t dropped = 0;      // (token, expert) pairs dropped by the capacity factor
  at::Tensor balance_loss;  // scalar: sequence-wise balance loss (unweighted), DeepSeek-V3 eq. 17-20
};

class MoEImpl : public torch::nn::Module, public LinearUser {
 public:
  MoEImpl(const ModelConfig& cfg);
  // x: [B, T, d]. Appends this layer's statistics to *stats when given.
  at::Tensor forward(const at::Tensor& x, std::vector<MoEStats>* stats = nullptr);

  // Keeps only experts [first, first + count) of w1/w2/w3 (the same parameter objects and names,
  // narrowed in place), for expert parallelism: build the whole layer, then shard it. A sharded
  // layer needs a dispatcher that reaches the other shards.
  void shard_experts(int64_t first, int64_t count);
  // nullptr: run every expert in this process (the default).
  void set_dispatcher(std::shared_ptr<ExpertDispatcher> d) { dispatcher_ = std::move(d); }
  int64_t first_expert() const { return first_expert_; }
  int64_t local_experts() const { return w1.size(0); }

  Router router{nullptr};
  at::Tensor w1, w3;  // [E, hidden, d] (E = local experts once sharded)
  at::Tensor w2;      // [E, d, hidden]

 private:
  // rows sorted by local expert, counts[e] rows each; skip_empty leaves idle experts out of the
  // graph (single process), else every expert joins it (see LocalExperts::run).
  at::Tensor run_experts(const at::Tensor& rows, const std::vector<int64_t>& counts, bool skip_empty);

  SwiGLU shared_{nullptr};
  int64_t n_experts_, top_k_;
  double capacity_factor_;
  int64_t first_expert_ = 0;
  std::shared_ptr<ExpertDispatcher> dispatcher_;
};
TORCH_MODULE(MoE);

// Sequence-wise balance loss sum_i f_i P_i averaged over sequences (DeepSeek-V3 eq. 17-20):
// f_i = E / (k T) * (tokens of the sequence choosing expert i), P_i = mean over the sequence of
// the affinities normalised to sum 1 per token. scores: [B, T, E], expert_ids: [B, T, k].
at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& expert_ids);

}  // namespace shoestring::model
