#include "trainer/expert_parallel.h"

#include <ATen/ATen.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "ops/fp8_rows.h"
#include "ops/weight_grad_slot.h"
#include "parallel/all_to_all_v.h"
#include "trainer/model/moe_rows.h"

namespace shoestring {

EpDispatchDtype parse_ep_dispatch_dtype(const std::string& name) {
  if (name == "auto") return EpDispatchDtype::kAuto;
  if (name == "fp8") return EpDispatchDtype::kFp8;
  throw std::invalid_argument("parallel.ep_dispatch_dtype: expected auto or fp8, got \"" + name + "\"");
}

EpDispatcher::EpDispatcher(parallel::GroupPtr ep, EpDispatchDtype dispatch_dtype)
    : ep_(std::move(ep)), dispatch_dtype_(dispatch_dtype), pool_(std::make_shared<parallel::BufferPool>()) {}

namespace {

// One dispatch between its steps: the maps both sides need for the combine, and the exchanges
// in flight (the step's wait turns each into its autograd node, or, cut, into leaves).
struct EpInFlight final : model::DispatchInFlight {
  model::LocalExperts experts;
  bool cut = false;  // exchanges out of autograd (EpDispatcher::begin); each cut's `received` is
                     // filled in by the step that waits for it
  RowMap token_map;  // send row -> its token
  std::vector<int64_t> send_counts, recv_counts;
  parallel::AllToAllVInFlight rows, meta;  // dispatch: token rows; gates and chosen mask
  parallel::AllToAllVInFlight combined;    // combine: gate-weighted expert outputs
  // Where backward waits for the combine's reverse exchange (none when cut): after the work created
  // after begin (the MoE layer's shared experts), which runs while the gradients travel, as the
  // dispatch travels while their forward runs.
  std::optional<uint64_t> combine_wait_at;
  int64_t sent = 0, received = 0;
  int64_t row_bytes = 0;  // bytes of one token row as it travels
  bool ready() const override { return steps == 1 ? rows.done() && meta.done() : combined.done(); }
};

// A backward slot for one of d's waits (parallel::reserve_backward_slot); none for a cut dispatch,
// whose exchanges are out of autograd.
std::optional<uint64_t> backward_slot(const EpInFlight& d) {
  if (d.cut) return std::nullopt;
  return parallel::reserve_backward_slot();
}

}  // namespace

std::unique_ptr<model::DispatchInFlight> EpDispatcher::begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                             const ops::Permutation& perm,
                                                             const model::LocalExperts& experts, bool cut) {
  const int64_t n = tokens.size(0), per_rank = experts.count;
  const int ranks = ep_->size();
  if (per_rank * ranks != experts.total)
    throw std::logic_error("EpDispatcher: " + std::to_string(experts.total) + " experts are not sharded evenly over " +
                           std::to_string(ranks) + " ep ranks");
  const at::Device dev = tokens.device();

  // Sender. perm's rows are sorted by expert, so each destination's pairs are contiguous; a token
  // choosing several experts of one rank is sent there once: one send row per unique
  // (destination, token), ordered by destination then token. Index bookkeeping runs on the CPU.
  const at::Tensor pair_token_t = perm.source_token_host.contiguous();
  const int64_t* pair_token = pair_token_t.data_ptr<int64_t>();
  const int64_t m = pair_token_t.numel();
  std::vector<int64_t> send_row(size_t(ranks) * size_t(n), -1);  // [dest][token] -> send row
  {
    int64_t p = 0;
    for (size_t e = 0; e < perm.counts.size(); ++e)
      for (int64_t c = 0; c < perm.counts[e]; ++c, ++p)
        send_row[size_t(int64_t(e) / per_rank) * size_t(n) + size_t(pair_token[p])] = 0;
  }
  std::vector<int64_t> send_counts(size_t(ranks), 0), send_token;
  send_token.reserve(size_t(m));
  for (int64_t dst = 0; dst < ranks; ++dst)
    for (int64_t t = 0; t < n; ++t)
      if (int64_t& row = send_row[size_t(dst * n + t)]; row >= 0) {
        row = int64_t(send_token.size());
        send_token.push_back(t);
        ++send_counts[size_t(dst)];
      }
  const int64_t s = int64_t(send_token.size());
  // Per send row: the gate of each of the destination's local experts (0 where not chosen) and,
  // beside it, a 0/1 mask of which were chosen (gates alone cannot say: one may round to 0).
  std::vector<int64_t> cell(static_cast<size_t>(m));
  at::Tensor mask_rows = at::zeros({s, per_rank}, gates.options().device(at::kCPU).dtype(at::kFloat));
  {
    float* mask = mask_rows.data_ptr<float>();
    int64_t p = 0;
    for (size_t e = 0; e < perm.counts.size(); ++e) {
      const int64_t dst = int64_t(e) / per_rank, local = int64_t(e) - dst * per_rank;
      for (int64_t c = 0; c < perm.counts[e]; ++c, ++p) {
        cell[size_t(p)] = send_row[size_t(dst * n + pair_token[p])] * per_rank + local;
        mask[cell[size_t(p)]] = 1.0f;
      }
    }
  }
  const at::Tensor pair_gate = gates.reshape({-1}).index_select(0, perm.slot);
  const at::Tensor gate_rows =
      at::zeros({s * per_rank}, gates.options()).index_add(0, long_tensor(cell).to(dev), pair_gate);
  const at::Tensor send_meta =
      at::cat({gate_rows.view({s, per_rank}), mask_rows.to(dev, gates.scalar_type())}, 1);
  auto d = std::make_unique<EpInFlight>();
  d->experts = experts;
  d->cut = cut && at::GradMode::is_enabled();
  d->token_map = make_row_map(send_token, n, dev);
  const at::Tensor send_x = gather_rows(tokens, d->token_map, pool_);

  auto travel = [&d](const at::Tensor& t) { return d->cut ? t.detach() : t; };  // what the exchange sees
  // The counts size the receive buffers, so they are waited for; the rows are not.
  d->send_counts = std::move(send_counts);
  d->recv_counts = parallel::exchange_counts(*ep_, d->send_counts, dev);
  if (dispatch_dtype_ == EpDispatchDtype::kFp8) {
    // Codes and scales travel packed in one byte row per send row (ops/fp8_rows.h) rather than as
    // two exchanges: one collective per dispatch as with auto (a second, tiny all-to-all-v would
    // add its latency to every MoE layer), at the price of one copy of ~d bytes per row into the
    // packed buffer. The receiver decodes to the compute dtype; gradients come back unquantized
    // (straight-through, all_to_all_v_start_encoded).
    const int64_t width = send_x.size(1);
    const at::ScalarType dtype = send_x.scalar_type();
    const at::Tensor payload = ops::pack_fp8_rows(send_x);
    d->row_bytes = payload.size(1);
    d->rows = parallel::all_to_all_v_start_encoded(
        travel(send_x), payload,
        [width, dtype](const at::Tensor& got) { return ops::unpack_fp8_rows(got, width, dtype); }, ep_,
        d->send_counts, d->recv_counts, pool_);
  } else {
    d->row_bytes = send_x.size(1) * int64_t(send_x.element_size());
    d->rows = parallel::all_to_all_v_start(travel(send_x), ep_, d->send_counts, d->recv_counts, pool_);
  }
  d->meta = parallel::all_to_all_v_start(travel(send_meta), ep_, d->send_counts, d->recv_counts);
  if (d->cut) d->cuts.push_back({{send_x, send_meta}, {}, reverse_exchange(d->send_counts, d->recv_counts)});
  d->sent = s;
  d->combine_wait_at = backward_slot(*d);
  return d;
}

void EpDispatcher::run_experts(model::DispatchInFlight& in_flight) {
  EpInFlight& d = model::next_step<EpInFlight>(in_flight, 1, "EpDispatcher::run_experts");
  // Not cut, backward starts the reverse of both (the meta's first, then the rows') before it
  // waits for either, so the two travel together: the slots come before both exchanges' nodes.
  // The experts' weight gradients run between (their slot, after the waits' and before the
  // exchanges' nodes): the rows' gradients need only the experts' input gradients.
  const std::optional<uint64_t> rows_wait_at = backward_slot(d), meta_wait_at = backward_slot(d),
                                expert_weights_at = backward_slot(d);
  at::Tensor recv_x = d.rows.wait(rows_wait_at);
  at::Tensor recv_meta = d.meta.wait(meta_wait_at);
  if (d.cut) {
    recv_x = recv_x.detach().requires_grad_(true);
    recv_meta = recv_meta.detach().requires_grad_(true);
    d.cuts.back().received = {recv_x, recv_meta};
  }
  const int64_t r = recv_x.size(0), per_rank = d.experts.count;
  const at::Device dev = recv_x.device();

  // Receiver: each local expert runs on the contiguous slice of the (row, local expert) pairs
  // that chose it, sorted by expert then row.
  const at::Tensor chosen_t = recv_meta.narrow(1, per_rank, per_rank).detach().to(at::kCPU, at::kFloat).contiguous();
  const float* chosen = chosen_t.data_ptr<float>();
  std::vector<int64_t> expert_counts(size_t(per_rank), 0);
  for (int64_t i = 0; i < r * per_rank; ++i)
    if (chosen[i] > 0.5f) ++expert_counts[size_t(i % per_rank)];
  std::vector<int64_t> cursor(size_t(per_rank), 0);
  for (int64_t e = 1; e < per_rank; ++e) cursor[size_t(e)] = cursor[size_t(e - 1)] + expert_counts[size_t(e - 1)];
  const int64_t pairs = cursor.empty() ? 0 : cursor.back() + expert_counts.back();
  std::vector<int64_t> pair_row(static_cast<size_t>(pairs)), pair_cell(static_cast<size_t>(pairs));
  for (int64_t row = 0; row < r; ++row)
    for (int64_t e = 0; e < per_rank; ++e)
      if (chosen[row * per_rank + e] > 0.5f) {
        const int64_t p = cursor[size_t(e)]++;
        pair_row[size_t(p)] = row;
        pair_cell[size_t(p)] = row * per_rank + e;
      }
  const RowMap row_map = make_row_map(pair_row, r, dev);  // pair -> its received row
  at::Tensor out;
  {
    const ops::WeightGradSlot weights_at(expert_weights_at);
    out = d.experts.run(gather_rows(recv_x, row_map, pool_), expert_counts);
  }
  const at::Tensor w = recv_meta.narrow(1, 0, per_rank)
                           .reshape({-1})
                           .index_select(0, long_tensor(pair_cell).to(dev))
                           .to(out.scalar_type());
  const at::Tensor partial = weighted_sum_rows(out, w, row_map, pool_);

  // Combine: one row back per received row, summed into its token by the sender (end).
  d.combined = parallel::all_to_all_v_start(d.cut ? partial.detach() : partial, ep_, d.recv_counts, d.send_counts, pool_);
  if (d.cut) d.cuts.push_back({{partial}, {}, reverse_exchange(d.recv_counts, d.send_counts)});
  d.received = r;
}

at::Tensor EpDispatcher::end(model::DispatchInFlight& in_flight) {
  EpInFlight& d = model::next_step<EpInFlight>(in_flight, 2, "EpDispatcher::end");
  at::Tensor back = d.combined.wait(d.combine_wait_at);
  if (d.cut) {
    back = back.detach().requires_grad_(true);
    d.cuts.back().received = {back};
  }
  if (at::GradMode::is_enabled()) {
    traffic_.sent += d.sent;
    traffic_.received += d.received;
    traffic_.sent_bytes += d.sent * d.row_bytes;
    traffic_.received_bytes += d.received * d.row_bytes;
  }
  return sum_rows(back, d.token_map, pool_);
}

parallel::SegmentLink EpDispatcher::reverse_exchange(std::vector<int64_t> sent_counts,
                                                     std::vector<int64_t> received_counts) const {
  // The forward sent sent_counts[j] rows to member j and received received_counts[j] from it: the
  // gradients go back the other way, every tensor of the exchange in its order.
  return [group = ep_, pool = pool_, sent_counts = std::move(sent_counts),
          received_counts = std::move(received_counts)](std::vector<at::Tensor> grads) -> parallel::GradsFuture {
    auto back = std::make_shared<std::vector<parallel::AllToAllVInFlight>>();
    for (const at::Tensor& g : grads)
      back->push_back(parallel::all_to_all_v_start(g.contiguous(), group, received_counts, sent_counts, pool));
    return [back] {
      std::vector<at::Tensor> out;
      for (auto& x : *back) out.push_back(x.wait());
      return out;
    };
  };
}

EpTraffic EpDispatcher::take_traffic() {
  const EpTraffic t = traffic_;
  traffic_ = {};
  return t;
}

std::shared_ptr<EpDispatcher> shard_experts(model::Transformer& net, const parallel::GroupPtr& ep,
                                            EpDispatchDtype dispatch_dtype) {
  auto dispatcher = std::make_shared<EpDispatcher>(ep, dispatch_dtype);
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
