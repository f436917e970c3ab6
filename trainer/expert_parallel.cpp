#include "trainer/expert_parallel.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "parallel/all_to_all_v.h"

namespace shoestring {

namespace {

using parallel::BufferPool;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor long_tensor(const std::vector<int64_t>& v) { return at::tensor(v, at::kLong); }

// A many-to-one map of source rows onto output rows, both ways: row_of[i] is the output row of
// source row i; members[ptr[o] .. ptr[o+1]) are the source rows of output row o, ascending. All
// int64 on the CPU.
struct RowMap {
  at::Tensor row_of, ptr, members;
  int64_t outputs() const { return ptr.numel() - 1; }
};

RowMap make_row_map(const std::vector<int64_t>& row_of, int64_t outputs) {
  std::vector<int64_t> ptr(size_t(outputs) + 1, 0), members(row_of.size());
  for (int64_t o : row_of) ++ptr[size_t(o) + 1];
  for (size_t o = 0; o < size_t(outputs); ++o) ptr[o + 1] += ptr[o];
  std::vector<int64_t> cursor(ptr.begin(), ptr.end() - 1);
  for (size_t i = 0; i < row_of.size(); ++i) members[size_t(cursor[size_t(row_of[i])]++)] = int64_t(i);
  return {long_tensor(row_of), long_tensor(ptr), long_tensor(members)};
}

// Holds what autograd contexts need beside tensors (saved_data takes IValues only).
struct PoolHolder : torch::CustomClassHolder {
  explicit PoolHolder(std::shared_ptr<BufferPool> p) : pool(std::move(p)) {}
  std::shared_ptr<BufferPool> pool;
};

c10::IValue hold(const std::shared_ptr<BufferPool>& pool) {
  return c10::IValue::make_capsule(c10::make_intrusive<PoolHolder>(pool));
}
std::shared_ptr<BufferPool> held(AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<PoolHolder>(ctx->saved_data["pool"].toCapsule())->pool;
}

// out[i] = src[index[i]] (rows), into a pooled buffer.
at::Tensor gather_rows(const at::Tensor& src, const at::Tensor& index, BufferPool& pool) {
  const at::Tensor s = src.contiguous();
  const int64_t rows = index.numel(), d = s.size(1);
  at::Tensor out = pool.get({rows, d}, s.options());
  if (!s.is_cpu()) return at::index_select_out(out, s, 0, index.to(s.device()));
  const int64_t* idx = index.data_ptr<int64_t>();
  const size_t row_bytes = size_t(d) * s.element_size();
  const auto* from = static_cast<const char*>(s.const_data_ptr());
  auto* to = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, rows, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memcpy(to + size_t(i) * row_bytes, from + size_t(idx[i]) * row_bytes, row_bytes);
  });
  return out;
}

// out[o] = sum over the source rows i of o (ascending) of w[i] * src[i] (w undefined: 1), summed
// in the op-math type (float for bfloat16). Outputs without sources are 0.
at::Tensor sum_rows(const at::Tensor& src, const at::Tensor& w, const RowMap& map, BufferPool& pool) {
  const at::Tensor s = src.contiguous();
  const int64_t outputs = map.outputs(), d = s.size(1);
  if (!s.is_cpu()) {
    const at::Tensor rows = w.defined() ? s * w.unsqueeze(1) : s;
    return at::zeros({outputs, d}, s.options()).index_add_(0, map.row_of.to(s.device()), rows);
  }
  at::Tensor out = pool.get({outputs, d}, s.options());
  const at::Tensor wc = w.defined() ? w.contiguous() : w;
  const int64_t *ptr = map.ptr.data_ptr<int64_t>(), *members = map.members.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, s.scalar_type(), "sum_rows", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* from = s.const_data_ptr<scalar_t>();
    const scalar_t* weights = wc.defined() ? wc.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* to = out.data_ptr<scalar_t>();
    at::parallel_for(0, outputs, 64, [&](int64_t b, int64_t e) {
      std::vector<acc_t> acc(static_cast<size_t>(d));
      for (int64_t o = b; o < e; ++o) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t j = ptr[o]; j < ptr[o + 1]; ++j) {
          const int64_t i = members[j];
          const scalar_t* row = from + i * d;
          if (weights) {
            const acc_t g = acc_t(weights[i]);
            for (int64_t c = 0; c < d; ++c) acc[size_t(c)] += g * acc_t(row[c]);
          } else {
            for (int64_t c = 0; c < d; ++c) acc[size_t(c)] += acc_t(row[c]);
          }
        }
        scalar_t* dst = to + o * d;
        for (int64_t c = 0; c < d; ++c) dst[c] = scalar_t(acc[size_t(c)]);
      }
    });
  });
  return out;
}

// Backward of the weighted sum: grad_src[i] = w[i] * grad[row_of[i]], grad_w[i] = <src[i], grad[row_of[i]]>.
std::pair<at::Tensor, at::Tensor> sum_rows_backward(const at::Tensor& grad, const at::Tensor& src, const at::Tensor& w,
                                                    const RowMap& map, BufferPool& pool) {
  const at::Tensor g = grad.contiguous(), s = src.contiguous(), wc = w.contiguous();
  if (!g.is_cpu()) {
    const at::Tensor back = g.index_select(0, map.row_of.to(g.device()));
    return {back * wc.unsqueeze(1), (back * s).sum(1)};
  }
  const int64_t rows = s.size(0), d = s.size(1);
  at::Tensor grad_src = pool.get({rows, d}, s.options());
  at::Tensor grad_w = at::empty({rows}, wc.options());
  const int64_t* row_of = map.row_of.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, s.scalar_type(), "sum_rows_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *gp = g.const_data_ptr<scalar_t>(), *sp = s.const_data_ptr<scalar_t>(),
                   *wp = wc.const_data_ptr<scalar_t>();
    scalar_t *gs = grad_src.data_ptr<scalar_t>(), *gw = grad_w.data_ptr<scalar_t>();
    at::parallel_for(0, rows, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const scalar_t* gr = gp + row_of[i] * d;
        const scalar_t* sr = sp + i * d;
        scalar_t* out = gs + i * d;
        const acc_t wi = acc_t(wp[i]);
        acc_t dot = 0;
        for (int64_t c = 0; c < d; ++c) {
          out[c] = scalar_t(wi * acc_t(gr[c]));
          dot += acc_t(sr[c]) * acc_t(gr[c]);
        }
        gw[i] = scalar_t(dot);
      }
    });
  });
  return {grad_src, grad_w};
}

void save_map(AutogradContext* ctx, const RowMap& map, const std::shared_ptr<BufferPool>& pool) {
  ctx->saved_data["row_of"] = map.row_of;
  ctx->saved_data["ptr"] = map.ptr;
  ctx->saved_data["members"] = map.members;
  ctx->saved_data["pool"] = hold(pool);
}
RowMap saved_map(AutogradContext* ctx) {
  return {ctx->saved_data["row_of"].toTensor(), ctx->saved_data["ptr"].toTensor(),
          ctx->saved_data["members"].toTensor()};
}

// rows = src[map.row_of] (one row per source row of the map); backward sums them back.
struct GatherRows : torch::autograd::Function<GatherRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& src, const RowMap& map,
                            const std::shared_ptr<BufferPool>& pool) {
    save_map(ctx, map, pool);
    return gather_rows(src, map.row_of, *pool);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const RowMap map = saved_map(ctx);
    return {sum_rows(grads[0], at::Tensor(), map, *held(ctx)), at::Tensor(), at::Tensor()};
  }
};

// out[o] = sum of w[i] * src[i] over the source rows i of o; backward gathers.
struct WeightedSum : torch::autograd::Function<WeightedSum> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& src, const at::Tensor& w, const RowMap& map,
                            const std::shared_ptr<BufferPool>& pool) {
    save_map(ctx, map, pool);
    ctx->save_for_backward({src, w});
    return sum_rows(src, w, map, *pool);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_src, grad_w] = sum_rows_backward(grads[0], saved[0], saved[1], saved_map(ctx), *held(ctx));
    return {grad_src, grad_w, at::Tensor(), at::Tensor()};
  }
};

// out[o] = sum of src[i] over the source rows i of o; backward gathers.
struct SumRows : torch::autograd::Function<SumRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& src, const RowMap& map,
                            const std::shared_ptr<BufferPool>& pool) {
    save_map(ctx, map, pool);
    return sum_rows(src, at::Tensor(), map, *pool);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const RowMap map = saved_map(ctx);
    return {gather_rows(grads[0], map.row_of, *held(ctx)), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

EpDispatcher::EpDispatcher(parallel::GroupPtr ep) : ep_(std::move(ep)), pool_(std::make_shared<BufferPool>()) {}

at::Tensor EpDispatcher::run(const at::Tensor& tokens, const at::Tensor& gates, const ops::Permutation& perm,
                             const model::LocalExperts& experts) {
  const int64_t n = tokens.size(0), per_rank = experts.count;
  const int ranks = ep_->size();
  if (per_rank * ranks != experts.total)
    throw std::logic_error("EpDispatcher: " + std::to_string(experts.total) + " experts are not sharded evenly over " +
                           std::to_string(ranks) + " ep ranks");
  const at::Device dev = tokens.device();

  // Sender. perm's rows are sorted by expert, so each destination's pairs are contiguous; a token
  // choosing several experts of one rank is sent there once: one send row per unique
  // (destination, token), ordered by destination then token. Index bookkeeping runs on the CPU.
  const at::Tensor pair_token_t = perm.source_token.to(at::kCPU, at::kLong).contiguous();
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
  const RowMap token_map = make_row_map(send_token, n);  // send row -> its token
  const at::Tensor send_x = GatherRows::apply(tokens, token_map, pool_);

  const std::vector<int64_t> recv_counts = parallel::exchange_counts(*ep_, send_counts, dev);
  const at::Tensor recv_x = parallel::all_to_all_v(send_x, ep_, send_counts, recv_counts, pool_);
  const at::Tensor recv_meta = parallel::all_to_all_v(send_meta, ep_, send_counts, recv_counts);
  const int64_t r = recv_x.size(0);

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
  const RowMap row_map = make_row_map(pair_row, r);  // pair -> its received row
  const at::Tensor out = experts.run(GatherRows::apply(recv_x, row_map, pool_), expert_counts);
  const at::Tensor w = recv_meta.narrow(1, 0, per_rank)
                           .reshape({-1})
                           .index_select(0, long_tensor(pair_cell).to(dev))
                           .to(out.scalar_type());
  const at::Tensor partial = WeightedSum::apply(out, w, row_map, pool_);

  // Combine: one row back per received row, summed into its token by the sender.
  const at::Tensor back = parallel::all_to_all_v(partial, ep_, recv_counts, send_counts, pool_);
  if (at::GradMode::is_enabled()) {
    traffic_.sent += s;
    traffic_.received += r;
  }
  return SumRows::apply(back, token_map, pool_);
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
