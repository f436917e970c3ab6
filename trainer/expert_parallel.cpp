#include "trainer/expert_parallel.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "parallel/all_to_all_v.h"

namespace shoestring {

namespace {

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

at::Tensor EpDispatcher::run(const at::Tensor& tokens, const at::Tensor& gates, const ops::Permutation& perm,
                             const model::LocalExperts& experts) {
  const int64_t n = tokens.size(0), d = tokens.size(1), per_rank = experts.count;
  const int ranks = ep_->size();
  if (per_rank * ranks != experts.total)
    throw std::logic_error("EpDispatcher: " + std::to_string(experts.total) + " experts are not sharded evenly over " +
                           std::to_string(ranks) + " ep ranks");
  const at::Device dev = tokens.device();

  // Sender. perm's rows are sorted by expert, so each destination's pairs are contiguous; a token
  // choosing several experts of one rank is sent there once: one send row per unique
  // (destination, token), ordered by destination then token.
  const at::Tensor expert = at::repeat_interleave(at::tensor(perm.counts, at::kLong)).to(dev);  // [M]
  const at::Tensor dest = at::floor_divide(expert, per_rank);
  const int64_t stride = std::max<int64_t>(n, 1);
  const auto [keys, inverse, unused] = at::_unique2(dest * stride + perm.source_token, /*sorted=*/true,
                                                    /*return_inverse=*/true, /*return_counts=*/false);
  (void)unused;
  const int64_t s = keys.size(0);
  const at::Tensor send_token = keys.remainder(stride), send_dest = at::floor_divide(keys, stride);
  const std::vector<int64_t> send_counts = to_vector(at::bincount(send_dest.cpu(), {}, ranks));
  // Per send row: the gate of each of the destination's local experts (0 where not chosen) and,
  // beside it, a 0/1 mask of which were chosen (gates alone cannot say: one may round to 0).
  const at::Tensor cell = inverse * per_rank + (expert - dest * per_rank);
  const at::Tensor pair_gate = gates.reshape({-1}).index_select(0, perm.slot);
  const at::Tensor gate_rows = at::zeros({s * per_rank}, gates.options()).index_add(0, cell, pair_gate);
  const at::Tensor mask_rows = at::zeros({s * per_rank}, gates.options()).index_fill_(0, cell, 1.0);
  const at::Tensor send_meta = at::cat({gate_rows.view({s, per_rank}), mask_rows.view({s, per_rank})}, 1);
  const at::Tensor send_x = tokens.index_select(0, send_token);

  const std::vector<int64_t> recv_counts = parallel::exchange_counts(*ep_, send_counts, dev);
  const at::Tensor recv_x = parallel::all_to_all_v(send_x, ep_, send_counts, recv_counts);
  const at::Tensor recv_meta = parallel::all_to_all_v(send_meta, ep_, send_counts, recv_counts);
  const int64_t r = recv_x.size(0);

  // Receiver: each local expert runs on the contiguous slice of the rows that chose it.
  const at::Tensor chosen = recv_meta.narrow(1, per_rank, per_rank).detach() > 0.5;  // [R, per_rank]
  const at::Tensor pairs = chosen.t().nonzero();  // (local expert, row), sorted by expert then row
  const at::Tensor pair_expert = pairs.select(1, 0), pair_row = pairs.select(1, 1);
  const at::Tensor out = experts.run(recv_x.index_select(0, pair_row), to_vector(chosen.sum(0)));
  const at::Tensor w = recv_meta.narrow(1, 0, per_rank).reshape({-1}).index_select(0, pair_row * per_rank + pair_expert);
  const at::Tensor weighted = out * w.to(out.scalar_type()).unsqueeze(1);
  const at::Tensor partial = at::zeros({r, d}, out.options()).index_add(0, pair_row, weighted);

  // Combine: one row back per received row, summed into its token by the sender.
  const at::Tensor back = parallel::all_to_all_v(partial, ep_, recv_counts, send_counts);
  if (at::GradMode::is_enabled()) {
    traffic_.sent += s;
    traffic_.received += r;
  }
  return at::zeros({n, d}, back.options()).index_add(0, send_token, back);
}

EpTraffic EpDispatcher::take_traffic() {
  const EpTraffic t = traffic_;
  traffic_ = {};
  return t;
}

std::shared_ptr<EpDispatcher> shard_experts(model::Transformer& net, const parallel::GroupPtr& ep) {
  auto dispatcher = std::make_shared<EpDispatcher>(ep);
  for (auto& layer : net->moe_layers()) {
    const int64_t total = layer->local_experts();
    if (total % ep->size() != 0)
      throw std::invalid_argument("cannot shard " + std::to_string(total) + " experts over " +
                                  std::to_string(ep->size()) + " ep ranks");
    const int64_t per_rank = total / ep->size();
    layer->shard_experts(ep->rank() * per_rank, per_rank);
    layer->set_dispatcher(dispatcher);
  }
  return dispatcher;
}

int64_t ep_nodes(const std::vector<int>& world_ranks, int ranks_per_node) {
  if (ranks_per_node < 1 || world_ranks.empty()) throw std::invalid_argument("ep_nodes: no ranks");
  std::vector<int64_t> members;  // per node, in order
  int last = -1;
  for (int r : world_ranks) {
    const int node = r / ranks_per_node;
    if (node != last) members.push_back(0), last = node;
    ++members.back();
  }
  for (int64_t m : members)
    if (m != members.front())
      throw std::invalid_argument("parallel.ep_max_nodes: the ep group (" + std::to_string(world_ranks.size()) +
                                  " ranks) does not split into equal per-node blocks of " +
                                  std::to_string(ranks_per_node) + " ranks per node");
  return int64_t(members.size());
}

}  // namespace shoestring
