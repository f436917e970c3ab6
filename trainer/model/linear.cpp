#include "trainer/model/linear.h"

#include <ATen/ATen.h>

namespace shoestring::model {

at::Tensor project(const at::Tensor& x, const at::Tensor& w) {
  return at::linear(x, w.scalar_type() == x.scalar_type() ? w : w.to(x.scalar_type()));
}

at::Tensor normal_weight(int64_t out, int64_t in, double std) { return at::randn({out, in}) * std; }

}  // namespace shoestring::model
