#include "trainer/model/rope.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace shoestring::model {

RotaryTables rotary_tables(int64_t head_dim, int64_t max_seq_len, double theta) {
  // Built in float64 so the angles are exact to double rounding whatever the compute dtype.
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor i = at::arange(0, head_dim / 2, opts);
  const at::Tensor inv_freq = at::pow(theta, -2.0 * i / double(head_dim));
  const at::Tensor angles = at::outer(at::arange(0, max_seq_len, opts), inv_freq);
  return {at::cos(angles), at::sin(angles)};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Rotating pair (x0, x1) by angle a; the backward rotates the gradient back by -a. Autograd's
// graph of the same ops held a dozen nodes per call (selects, a negation, zero-filled select
// gradients summed); this node computes the same products and sums, so the same bits.
struct Rotate : torch::autograd::Function<Rotate> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    const at::Tensor pairs = x.unflatten(-1, {x.size(-1) / 2, 2});
    const at::Tensor x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
    return at::stack({x0 * cos - x1 * sin, x0 * sin + x1 * cos}, -1).flatten(-2);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &cos = saved[0], &sin = saved[1];
    const at::Tensor pairs = grads[0].unflatten(-1, {grads[0].size(-1) / 2, 2});
    const at::Tensor g0 = pairs.select(-1, 0), g1 = pairs.select(-1, 1);
    return {at::stack({g0 * cos + g1 * sin, g1 * cos - g0 * sin}, -1).flatten(-2), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t seq = x.size(2);
  const auto dt = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor cos = tables.cos.narrow(0, 0, seq).to(x.device(), dt);
  const at::Tensor sin = tables.sin.narrow(0, 0, seq).to(x.device(), dt);
  return Rotate::apply(x.to(dt), cos, sin).to(x.scalar_type());
}

}  // namespace shoestring::model
