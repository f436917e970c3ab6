#pragma once
// Top-k expert routing of DeepSeek-V3 (§2.1.2): sigmoid affinities s = sigmoid(x W^T); experts are
// *selected* by s + b, where b is a per-expert bias used for selection only; the *gates* are the
// selected s, normalised to sum to 1 and multiplied by route_scale. Optional group-limited
// routing (DeepSeek-V3 §2.1.2 / V2 §2.1.3): experts form n_groups groups, each group scores the
// sum of its top-2 biased affinities, and a token may use only its best topk_groups groups.
#include <torch/nn/module.h>

#include "trainer/config.h"

namespace shoestring::model {

struct Routing {
  at::Tensor expert_ids;  // [N, k] int64
  at::Tensor gates;       // [N, k] float, normalised and scaled
  at::Tensor scores;      // [N, E] float sigmoid affinities (for the balance loss)
};

class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(const ModelConfig& cfg);
  Routing forward(const at::Tensor& x);  // x: [N, d]

  // Auxiliary-loss-free update: bias += gamma * sign(mean load - load); overloaded experts become
  // less likely to be selected, underloaded ones more. `load`: [E] tokens per expert.
  void update_bias(const at::Tensor& load, double gamma);

  // Node-limited routing (DeepSeek-V3 §2.1.2): experts form n_nodes equal contiguous blocks (the
  // nodes their ep ranks live on); each token scores a node by the sum of its ceil(k / max_nodes)
  // highest biased affinities there and may use experts of its best max_nodes nodes only, so it
  // crosses at most max_nodes node boundaries. Off when n_nodes <= max_nodes or max_nodes is 0.
  void limit_nodes(int64_t n_nodes, int64_t max_nodes);

  at::Tensor weight;  // [E, d], kept and applied in fp32 (the gate stays high precision, §3.3.1)
  at::Tensor bias;    // [E] buffer, not trained by the optimiser

 private:
  int64_t n_experts_, top_k_, n_groups_, topk_groups_;
  int64_t n_nodes_ = 1, max_nodes_ = 0;
  double route_scale_;
};
TORCH_MODULE(Router);

}  // namespace shoestring::model
