#include "trainer/model/rms_norm.h"

#include <ATen/ATen.h>

namespace shoestring::model {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  const auto wide = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor xf = x.to(wide);
  const at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (y * weight.to(wide)).to(x.scalar_type());
}

}  // namespace shoestring::model
