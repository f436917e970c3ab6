#include "trainer/model/router.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "trainer/model/linear.h"

namespace shoestring::model {

RouterImpl::RouterImpl(const ModelConfig& cfg)
    : n_experts_(cfg.n_routed_experts), top_k_(cfg.n_activated_experts), n_groups_(cfg.n_expert_groups),
      topk_groups_(cfg.n_limited_groups), route_scale_(cfg.route_scale) {
  weight = register_parameter("weight", normal_weight(n_experts_, cfg.d_model, cfg.init_std));
  bias = register_buffer("bias", at::zeros({n_experts_}));
}

Routing RouterImpl::forward(const at::Tensor& x) {
  const auto wide = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor scores = at::sigmoid(project(x.to(wide), weight));
  at::Tensor choice = scores.detach() + bias.to(wide);  // selection only: no gradient, no gate change
  if (n_groups_ > 1) {
    const int64_t n = x.size(0), per_group = n_experts_ / n_groups_;
    const at::Tensor grouped = choice.view({n, n_groups_, per_group});
    const at::Tensor group_score = std::get<0>(grouped.topk(std::min<int64_t>(2, per_group), -1)).sum(-1);
    const at::Tensor best_groups = std::get<1>(group_score.topk(topk_groups_, -1));
    const at::Tensor allowed = at::zeros({n, n_groups_}, x.options().dtype(at::kBool)).scatter(1, best_groups, true);
    choice = grouped.masked_fill(allowed.logical_not().unsqueeze(-1), -std::numeric_limits<double>::infinity())
                 .view({n, n_experts_});
  }
  if (max_nodes_ > 0 && n_nodes_ > max_nodes_) {
    const int64_t n = x.size(0), per_node = n_experts_ / n_nodes_;
    const int64_t top = std::min<int64_t>((top_k_ + max_nodes_ - 1) / max_nodes_, per_node);
    const at::Tensor by_node = choice.view({n, n_nodes_, per_node});
    // Experts already excluded by group limiting score -inf and must not make a node look good:
    // their -inf sums make a node eligible only when no node has enough finite experts.
    const at::Tensor node_score = std::get<0>(by_node.topk(top, -1)).sum(-1);
    const at::Tensor best_nodes = std::get<1>(node_score.topk(max_nodes_, -1));
    const at::Tensor allowed = at::zeros({n, n_nodes_}, x.options().dtype(at::kBool)).scatter(1, best_nodes, true);
    choice = by_node.masked_fill(allowed.logical_not().unsqueeze(-1), -std::numeric_limits<double>::infinity())
                 .view({n, n_experts_});
  }
  Routing r;
  r.expert_ids = std::get<1>(choice.topk(top_k_, -1));
  const at::Tensor picked = scores.gather(1, r.expert_ids);
  r.gates = picked / picked.sum(-1, /*keepdim=*/true) * route_scale_;
  r.scores = scores;
  return r;
}

void RouterImpl::limit_nodes(int64_t n_nodes, int64_t max_nodes) {
  if (n_nodes < 1 || n_experts_ % n_nodes != 0 || max_nodes < 0)
    throw std::invalid_argument("Router::limit_nodes: " + std::to_string(n_experts_) + " experts cannot be split over " +
                                std::to_string(n_nodes) + " nodes (max_nodes " + std::to_string(max_nodes) + ")");
  if (max_nodes > 0 && max_nodes * (n_experts_ / n_nodes) < top_k_)
    throw std::invalid_argument("Router::limit_nodes: " + std::to_string(max_nodes) + " nodes of " +
                                std::to_string(n_experts_ / n_nodes) + " experts hold fewer than the " +
                                std::to_string(top_k_) + " experts a token uses");
  n_nodes_ = n_nodes;
  max_nodes_ = max_nodes;
}

void RouterImpl::update_bias(const at::Tensor& load, double gamma) {
  if (gamma == 0) return;
  at::NoGradGuard no_grad;
  const at::Tensor l = load.to(bias.device(), at::kFloat);
  bias.add_(at::sign(l.mean() - l), gamma);
}

}  // namespace shoestring::model
