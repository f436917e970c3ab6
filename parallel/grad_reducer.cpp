#include "parallel/grad_reducer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <stdexcept>

namespace shoestring::parallel {

// Runs after AccumulateGrad has added this backward's gradient into param.grad().
class GradReducer::Hook : public torch::autograd::FunctionPostHook {
 public:
  Hook(GradReducer* owner, size_t param) : owner_(owner), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    owner_->on_grad_ready(param_);
    return outputs;
  }

 private:
  GradReducer* owner_;
  size_t param_;
};

GradReducer::GradReducer(std::vector<ReducedParam> params, std::vector<GroupPtr> groups, const ReducerOptions& opts)
    : params_(std::move(params)), groups_(std::move(groups)), opts_(opts) {
  const int64_t cap_bytes = std::max<int64_t>(1, int64_t(opts_.bucket_mb * 1024 * 1024));
  // One open bucket per group; a bucket is closed when full. Buckets are numbered when opened,
  // which fixes the issue order identically on every rank.
  std::vector<long> open(groups_.size(), -1);
  std::vector<int64_t> open_bytes(groups_.size(), 0);
  where_.resize(params_.size());
  for (size_t k = params_.size(); k-- > 0;) {
    const ReducedParam& p = params_[k];
    if (p.group < 0 || size_t(p.group) >= groups_.size())
      throw std::invalid_argument("GradReducer: parameter " + p.name + " names group " + std::to_string(p.group));
    if (!p.param.is_contiguous() || !p.param.requires_grad())
      throw std::invalid_argument("GradReducer: parameter " + p.name + " must be contiguous and require grad");
    const int64_t bytes = p.param.numel() * int64_t(p.param.element_size());
    long& b = open[size_t(p.group)];
    if (b >= 0 && (open_bytes[size_t(p.group)] + bytes > cap_bytes ||
                   buckets_[size_t(b)].flat.scalar_type() != p.param.scalar_type()))
      b = -1;
    if (b < 0) {
      b = long(buckets_.size());
      buckets_.emplace_back();
      buckets_.back().group = p.group;
      buckets_.back().flat = at::empty({0}, p.param.options().requires_grad(false));
      open_bytes[size_t(p.group)] = 0;
    }
    Bucket& bucket = buckets_[size_t(b)];
    where_[k] = {size_t(b), bucket.params.size()};
    bucket.offsets.push_back(bucket.params.empty() ? 0 : bucket.offsets.back() + params_[bucket.params.back()].param.numel());
    bucket.params.push_back(k);
    open_bytes[size_t(p.group)] += bytes;
  }

  for (Bucket& b : buckets_) {
    const int64_t used = b.offsets.back() + params_[b.params.back()].param.numel();
    const int64_t n = groups_[size_t(b.group)]->size();
    const int64_t padded = opts_.zero1 ? (used + n - 1) / n * n : used;
    b.flat = at::zeros({padded}, b.flat.options());
    if (!opts_.zero1) continue;
    const int64_t shard = padded / n, lo = groups_[size_t(b.group)]->rank() * shard, hi = lo + shard;
    b.shard = b.flat.narrow(0, lo, shard);  // reduced in place: no second copy of the gradients
    for (size_t s = 0; s < b.params.size(); ++s) {
      const at::Tensor& p = params_[b.params[s]].param;
      const int64_t a = std::max(lo, b.offsets[s]), e = std::min(hi, b.offsets[s] + p.numel());
      if (a >= e) continue;
      owned_.push_back({b.params[s], a - b.offsets[s], p.detach().view({-1}).narrow(0, a - b.offsets[s], e - a),
                        b.shard.narrow(0, a - lo, e - a)});
    }
  }
  if (!opts_.zero1)
    for (size_t k = 0; k < params_.size(); ++k) {
      const auto [b, s] = where_[k];
      owned_.push_back({k, 0, params_[k].param.detach().view({-1}),
                        buckets_[b].flat.narrow(0, buckets_[b].offsets[s], params_[k].param.numel())});
    }

  ready_.assign(params_.size(), 0);
  trace_.resize(buckets_.size());
  zero_grad();
  for (size_t k = 0; k < params_.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[k].param);
    const uintptr_t key = acc->add_post_hook(std::make_unique<Hook>(this, k));
    hooks_.emplace_back(std::move(acc), key);
  }
}

GradReducer::~GradReducer() {
  for (auto& [acc, key] : hooks_) acc->del_post_hook(key);
}

at::Tensor GradReducer::grad_view(size_t k) const {
  const auto [b, s] = where_[k];
  const at::Tensor& p = params_[k].param;
  return buckets_[b].flat.narrow(0, buckets_[b].offsets[s], p.numel()).view(p.sizes());
}

void GradReducer::zero_grad() {
  for (Bucket& b : buckets_) b.flat.zero_();
  for (size_t k = 0; k < params_.size(); ++k) params_[k].param.mutable_grad() = grad_view(k);
}

void GradReducer::prepare_backward(bool last) {
  std::lock_guard<std::mutex> lock(mu_);
  syncing_ = last;
  if (!last) return;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (Bucket& b : buckets_) {
    b.pending = int(b.params.size());
    b.issued = false;
    b.work.reset();
  }
  for (BucketTrace& t : trace_) t = BucketTrace{};
  next_issue_ = 0;
}

// AccumulateGrad adds into the view .grad already is; only a caller that replaced .grad (or set
// it to undefined) leaves the gradient elsewhere, and then it is copied in.
void GradReducer::adopt_grad(Bucket& b, size_t slot) {
  const at::Tensor& p = params_[b.params[slot]].param;
  at::Tensor dst = b.flat.narrow(0, b.offsets[slot], p.numel());
  const at::Tensor& g = p.grad();
  if (g.defined() && g.data_ptr() == dst.data_ptr()) return;
  if (g.defined()) dst.copy_(g.reshape({-1}));
  else dst.zero_();
  p.mutable_grad() = dst.view(p.sizes());
}

void GradReducer::on_grad_ready(size_t k) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!syncing_ || ready_[k]) return;
  ready_[k] = 1;
  const auto [bi, slot] = where_[k];
  Bucket& b = buckets_[bi];
  at::NoGradGuard no_grad;
  adopt_grad(b, slot);
  last_hook_at_ = steady_seconds();
  if (--b.pending == 0) {
    trace_[bi].ready_at = last_hook_at_;
    issue_ready_buckets();
  }
}

void GradReducer::issue_ready_buckets() {
  while (next_issue_ < buckets_.size() && buckets_[next_issue_].pending == 0) issue(next_issue_++);
}

void GradReducer::issue(size_t bi) {
  Bucket& b = buckets_[bi];
  ProcessGroup& g = *groups_[size_t(b.group)];
  trace_[bi].bytes = b.flat.numel() * int64_t(b.flat.element_size());
  if (opts_.grad_scale != 1.0) b.flat.mul_(opts_.grad_scale);
  b.work = opts_.zero1 ? g.reduce_scatter(b.shard, b.flat) : g.all_reduce(b.flat);
  b.work->start();  // overlaps the rest of the backward pass
  b.issued = true;
}

void GradReducer::finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!syncing_) throw std::logic_error("GradReducer::finish without prepare_backward(true)");
    at::NoGradGuard no_grad;
    for (size_t bi = next_issue_; bi < buckets_.size(); ++bi) {
      Bucket& b = buckets_[bi];
      for (size_t s = 0; s < b.params.size(); ++s)
        if (!ready_[b.params[s]]) {
          ready_[b.params[s]] = 1;
          adopt_grad(b, s);
        }
      b.pending = 0;
      if (trace_[bi].ready_at == 0) trace_[bi].ready_at = steady_seconds();
    }
    issue_ready_buckets();
    syncing_ = false;
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    buckets_[bi].work->wait();
    trace_[bi].issued_at = buckets_[bi].work->issued_at();
    trace_[bi].started_at = buckets_[bi].work->started_at();
    trace_[bi].done_at = steady_seconds();
  }
}

double GradReducer::global_grad_sq(ProcessGroup& norm_group, const std::vector<char>& skip) const {
  double sq = 0;
  for (const OwnedSlice& o : owned_) {
    if (!skip.empty() && skip[o.param]) continue;
    // Without ZeRO-1 every member of a parameter's group holds the same reduced gradient: the
    // group's rank 0 counts it.
    if (!opts_.zero1 && groups_[size_t(params_[o.param].group)]->rank() != 0) continue;
    sq += o.grad.to(at::kDouble).pow(2).sum().item<double>();
  }
  at::Tensor t = at::full({1}, sq, at::TensorOptions().dtype(at::kDouble));
  norm_group.all_reduce(t)->wait();
  return t.item<double>();
}

void GradReducer::scale_grads(double s) {
  at::NoGradGuard no_grad;
  for (OwnedSlice& o : owned_) o.grad.mul_(s);
}

void GradReducer::all_gather_params() {
  if (!opts_.zero1) return;
  at::NoGradGuard no_grad;
  std::vector<WorkPtr> works;
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = buckets_[bi];
    ProcessGroup& g = *groups_[size_t(b.group)];
    const int64_t shard = b.flat.numel() / g.size();
    at::Tensor mine = b.flat.narrow(0, g.rank() * shard, shard);
    // The owned slices of this bucket are exactly the used part of this rank's block.
    for (const OwnedSlice& o : owned_)
      if (where_[o.param].first == bi)
        b.flat.narrow(0, b.offsets[where_[o.param].second] + o.offset, o.value.numel()).copy_(o.value);
    works.push_back(g.all_gather(b.flat, mine));
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    works[bi]->wait();
    const Bucket& b = buckets_[bi];
    for (size_t s = 0; s < b.params.size(); ++s) {
      at::Tensor p = params_[b.params[s]].param;
      p.view({-1}).copy_(b.flat.narrow(0, b.offsets[s], p.numel()));
    }
  }
}

}  // namespace shoestring::parallel
