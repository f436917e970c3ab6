#pragma once
// DeepSeekMoE feed-forward (DeepSeek-V3 §2.1.2): n_shared experts applied to every token plus
// n_routed experts of which each token uses its top-k, each a SwiGLU of moe_intermediate_size.
// Tokens are permuted into the expert-sorted layout (ops/moe_permute.h), each expert runs on its
// contiguous slice, and the outputs are scattered back weighted by the gates: no per-token loops.
#include <torch/nn/module.h>

#include "trainer/config.h"
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

  Router router{nullptr};
  at::Tensor w1, w3;  // [E, hidden, d]
  at::Tensor w2;      // [E, d, hidden]

 private:
  SwiGLU shared_{nullptr};
  int64_t n_experts_, top_k_;
  double capacity_factor_;
};
TORCH_MODULE(MoE);

// Sequence-wise balance loss sum_i f_i P_i averaged over sequences (DeepSeek-V3 eq. 17-20):
// f_i = E / (k T) * (tokens of the sequence choosing expert i), P_i = mean over the sequence of
// the affinities normalised to sum 1 per token. scores: [B, T, E], expert_ids: [B, T, k].
at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& expert_ids);

}  // namespace shoestring::model
