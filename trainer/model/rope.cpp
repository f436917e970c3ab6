#include "trainer/model/rope.h"

#include <ATen/ATen.h>

namespace shoestring::model {

RotaryTables rotary_tables(int64_t head_dim, int64_t max_seq_len, double theta) {
  // Built in float64 so the angles are exact to double rounding whatever the compute dtype.
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor i = at::arange(0, head_dim / 2, opts);
  const at::Tensor inv_freq = at::pow(theta, -2.0 * i / double(head_dim));
  const at::Tensor angles = at::outer(at::arange(0, max_seq_len, opts), inv_freq);
  return {at::cos(angles), at::sin(angles)};
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t seq = x.size(2), half = x.size(3) / 2;
  const auto dt = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor cos = tables.cos.narrow(0, 0, seq).to(x.device(), dt);
  const at::Tensor sin = tables.sin.narrow(0, 0, seq).to(x.device(), dt);
  const at::Tensor pairs = x.to(dt).unflatten(-1, {half, 2});
  const at::Tensor x0 = pairs.select(-1, 0), x1 = pairs.select(-1, 1);
  const at::Tensor out = at::stack({x0 * cos - x1 * sin, x0 * sin + x1 * cos}, -1);
  return out.flatten(-2).to(x.scalar_type());
}

}  // namespace shoestring::model
