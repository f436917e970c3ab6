#include "trainer/model/moe.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "ops/moe_permute.h"
#include "trainer/model/expert_swiglu.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

namespace {

at::Tensor stacked_weight(int64_t e, int64_t out, int64_t in, double std) { return at::randn({e, out, in}) * std; }

}  // namespace

MoEImpl::MoEImpl(const ModelConfig& cfg)
    : n_experts_(cfg.n_routed_experts), top_k_(cfg.n_activated_experts), capacity_factor_(cfg.capacity_factor) {
  const int64_t d = cfg.d_model, h = cfg.moe_intermediate_size;
  router = register_module("router", Router(cfg));
  w1 = register_parameter("w1", stacked_weight(n_experts_, h, d, cfg.init_std));
  w3 = register_parameter("w3", stacked_weight(n_experts_, h, d, cfg.init_std));
  w2 = register_parameter("w2", stacked_weight(n_experts_, d, h, cfg.init_std / std::sqrt(2.0 * cfg.n_layers)));
  if (cfg.n_shared_experts > 0)
    shared_ = register_module("shared", SwiGLU(d, cfg.n_shared_experts * h, cfg.init_std, cfg.n_layers));
}

at::Tensor MoEImpl::forward(const at::Tensor& x, std::vector<MoEStats>* stats) {
  MoEInFlight s = forward_begin(x, stats);
  forward_experts(s);
  return forward_end(s);
}

void MoEImpl::check_step(const MoEInFlight& s, int done, const char* what) const {
  if (s.layer_ != this || s.step_ != done)
    throw std::logic_error(std::string("MoE::") + what + ": the forward in flight was not begun by this layer or " +
                           "is not at this step (each goes begin, experts, end once)");
}

MoEInFlight MoEImpl::forward_begin(const at::Tensor& x, std::vector<MoEStats>* stats, bool cut) {
  MoEInFlight s;
  s.layer_ = this;
  s.stats_ = stats;
  s.b_ = x.size(0), s.t_ = x.size(1), s.d_ = x.size(2);
  const int64_t n = s.b_ * s.t_;
  s.flat_ = x.reshape({n, s.d_});
  s.routing_ = router->forward(s.flat_);
  const int64_t capacity =
      capacity_factor_ > 0 ? int64_t(std::ceil(capacity_factor_ * double(n * top_k_) / double(n_experts_))) : -1;
  s.perm_ = ops::plan_permutation(s.routing_.expert_ids, n_experts_, capacity);
  // Idle experts stay out of a local graph; a dispatcher over ranks needs them all in (see
  // LocalExperts::run).
  const bool skip_empty = !dispatcher_;
  LocalExperts local{first_expert_, local_experts(), n_experts_,
                     [this, skip_empty](const at::Tensor& rows, const std::vector<int64_t>& counts) {
                       return run_experts(rows, counts, skip_empty);
                     }};
  s.dispatch_ = dispatcher().begin(s.flat_, s.routing_.gates, s.perm_, local, cut);
  // While the tokens travel; and, being created after begin (where an EpDispatcher takes the
  // combine's backward wait slot), their backward runs while the combine's gradients travel back.
  // Autograd still reaches the input through the shared experts before the routed path, as when
  // they ran last, so its gradient is summed in the same order.
  if (shared_) s.shared_ = shared_->forward(s.flat_);
  s.step_ = 1;
  return s;
}

void MoEImpl::forward_experts(MoEInFlight& s) {
  check_step(s, 1, "forward_experts");
  dispatcher().run_experts(*s.dispatch_);
  s.step_ = 2;
}

at::Tensor MoEImpl::forward_end(MoEInFlight& s) {
  check_step(s, 2, "forward_end");
  at::Tensor y = dispatcher().end(*s.dispatch_);
  s.cuts_ = std::move(s.dispatch_->cuts);
  s.dispatch_.reset();
  s.step_ = 3;
  // A cut forward's pieces after the combine read the shared output as a leaf of their own.
  if (s.shared_.defined())
    y = y + (s.cuts_.empty() ? s.shared_ : (s.shared_leaf_ = s.shared_.detach().requires_grad_(true)));

  if (s.stats_) {
    MoEStats st;
    st.load = s.perm_.routed;
    st.dropped = s.perm_.dropped;
    st.balance_loss = sequence_balance_loss(s.routing_.scores.view({s.b_, s.t_, n_experts_}),
                                            s.routing_.expert_ids.view({s.b_, s.t_, top_k_}));
    s.stats_->push_back(std::move(st));
  }
  return y.view({s.b_, s.t_, s.d_});
}

at::Tensor MoEImpl::run_experts(const at::Tensor& rows, const std::vector<int64_t>& counts, bool skip_empty) {
  // The fused node keeps every expert in the graph (an idle one gets a zero gradient), which is
  // what both skip_empty modes need; so does a swapped-in grouped MLP or grouped linear (FP8: one
  // grouped GEMM for all experts). A swapped-in per-matrix linear alone needs the per-op path.
  if (const GroupedSwigluMlpFn mlp = grouped_swiglu_mlp_fn()) return mlp(rows, w1, w3, w2, counts);
  if (const GroupedLinearFn grouped = grouped_linear_fn())
    return grouped(at::silu(grouped(rows, w1, counts)) * grouped(rows, w3, counts), w2, counts);
  if (!linear_fn()) return expert_swiglu(rows, w1, w3, w2, counts);
  std::vector<at::Tensor> outs;
  int64_t offset = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t count = counts[e];
    if (count == 0 && skip_empty) continue;  // an idle expert costs nothing and gets a zero gradient
    const at::Tensor slice = rows.narrow(0, offset, count);
    const auto i = int64_t(e);
    outs.push_back(swiglu_mlp(slice, w1[i], w3[i], w2[i]));
    offset += count;
  }
  return outs.empty() ? at::zeros({0, rows.size(1)}, rows.options()) : at::cat(outs);
}

void MoEImpl::shard_experts(int64_t first, int64_t count) {
  if (first < 0 || count <= 0 || first + count > local_experts() || first_expert_ != 0 || local_experts() != n_experts_)
    throw std::invalid_argument("MoE::shard_experts: bad range [" + std::to_string(first) + ", " +
                                std::to_string(first + count) + ") of " + std::to_string(local_experts()) +
                                " experts (shard a whole layer once)");
  at::NoGradGuard no_grad;
  // set_data keeps the registered parameter objects (names, optimiser slots built later) and
  // gives them the slice's own storage, so the other experts' memory is freed.
  for (at::Tensor* w : {&w1, &w2, &w3}) w->set_data(w->narrow(0, first, count).clone());
  first_expert_ = first;
}

at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& expert_ids) {
  const int64_t t = scores.size(1), e = scores.size(2), k = expert_ids.size(2);
  const at::Tensor chosen = at::zeros_like(scores).scatter(2, expert_ids, 1.0);
  const at::Tensor f = chosen.sum(1) * (double(e) / double(k * t));            // [B, E], no gradient
  const at::Tensor p = (scores / scores.sum(-1, /*keepdim=*/true)).mean(1);  // [B, E]
  return (f * p).sum(-1).mean();
}

}  // namespace shoestring::model
