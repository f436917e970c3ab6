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
// A whole SwiGLU MLP, (silu(x w1^T) * (x w3^T)) w2^T, so that a conversion can fuse across its
// three linears (FP8: x quantized once for both up projections, the activation fused into the
// down projection's quantization); per matrix, and grouped as GroupedLinearFn.
using SwigluMlpFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2);
using GroupedSwigluMlpFn = at::Tensor (*)(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3,
                                          const at::Tensor& w2, const std::vector<int64_t>& counts);

class LinearUser {
 public:
  virtual ~LinearUser() = default;
  void set_linear_fn(LinearFn fn) { fn_ = fn; }
  LinearFn linear_fn() const { return fn_; }
  void set_grouped_linear_fn(GroupedLinearFn fn) { grouped_fn_ = fn; }
  GroupedLinearFn grouped_linear_fn() const { return grouped_fn_; }
  void set_swiglu_mlp_fns(SwigluMlpFn fn, GroupedSwigluMlpFn grouped) {
    mlp_fn_ = fn;
    grouped_mlp_fn_ = grouped;
  }
  GroupedSwigluMlpFn grouped_swiglu_mlp_fn() const { return grouped_mlp_fn_; }

 protected:
  at::Tensor project(const at::Tensor& x, const at::Tensor& w) const { return fn_ ? fn_(x, w) : model::project(x, w); }
  // project(silu(project(x, w1)) * project(x, w3), w2), or the swapped-in fused form.
  at::Tensor swiglu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2) const;

 private:
  LinearFn fn_ = nullptr;
  GroupedLinearFn grouped_fn_ = nullptr;
  SwigluMlpFn mlp_fn_ = nullptr;
  GroupedSwigluMlpFn grouped_mlp_fn_ = nullptr;
};

}  // namespace shoestring::model
