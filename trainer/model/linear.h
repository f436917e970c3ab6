#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace shoestring::model {

// w in x's dtype (master weights stay fp32; matmuls run in the compute dtype).
inline at::Tensor cast_like(const at::Tensor& w, const at::Tensor& x) {
  return w.scalar_type() == x.scalar_type() ? w : w.to(x.scalar_type());
}

// x @ w^T with w cast to x's dtype: master weights stay fp32, matmuls run in the compute dtype.
// When w needs a gradient, a zero-bubble pipeline may defer it past the backward pass
// (ops/weight_grad_store.h); otherwise the gradients are at::linear's, bit for bit.
at::Tensor project(const at::Tensor& x, const at::Tensor& w);

// A fresh [out, in] weight drawn from Normal(0, std) with the global generator.
at::Tensor normal_weight(int64_t out, int64_t in, double std);

// How a module multiplies activations by its weights. Modules whose linears may run in lower
// precision (attention projections, dense and expert MLPs: DeepSeek-V3 §3.3.1) inherit this and
// call project(); a conversion pass (trainer/model/convert_fp8.h) swaps the function from outside,
// so the model code itself never mentions FP8.
using LinearFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& w);
// The same for a stack of weights, one per group of rows: rows [M, in] sorted by group with
// counts[g] rows each, w [G, out, in] -> [M, out] (the routed experts of an MoE layer).
using GroupedLinearFn = at::Tensor (*)(const at::Tensor& rows, const at::Tensor& w, const std::vector<int64_t>& counts);
// A SwiGLU MLP's down projection from its two up projections: (silu(h1) * h3) @ w^T, so that a
// conversion can fuse the activation into the next linear (FP8: quantized in one pass, the
// product never stored), per matrix and grouped.
using SwigluLinearFn = at::Tensor (*)(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w);
using GroupedSwigluLinearFn = at::Tensor (*)(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w,
                                             const std::vector<int64_t>& counts);

class LinearUser {
 public:
  virtual ~LinearUser() = default;
  void set_linear_fn(LinearFn fn) { fn_ = fn; }
  LinearFn linear_fn() const { return fn_; }
  void set_grouped_linear_fn(GroupedLinearFn fn) { grouped_fn_ = fn; }
  GroupedLinearFn grouped_linear_fn() const { return grouped_fn_; }
  void set_swiglu_linear_fns(SwigluLinearFn fn, GroupedSwigluLinearFn grouped) {
    swiglu_fn_ = fn;
    grouped_swiglu_fn_ = grouped;
  }
  GroupedSwigluLinearFn grouped_swiglu_linear_fn() const { return grouped_swiglu_fn_; }

 protected:
  at::Tensor project(const at::Tensor& x, const at::Tensor& w) const { return fn_ ? fn_(x, w) : model::project(x, w); }
  // project(silu(h1) * h3, w), or the swapped-in fused form.
  at::Tensor swiglu_project(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w) const;

 private:
  LinearFn fn_ = nullptr;
  GroupedLinearFn grouped_fn_ = nullptr;
  SwigluLinearFn swiglu_fn_ = nullptr;
  GroupedSwigluLinearFn grouped_swiglu_fn_ = nullptr;
};

}  // namespace shoestring::model
