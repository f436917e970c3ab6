#include "trainer/model/swiglu.h"

#include <ATen/ATen.h>

#include <cmath>

#include "trainer/model/linear.h"

namespace shoestring::model {

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden, double init_std, int64_t n_layers_for_init) {
  w1 = register_parameter("w1", normal_weight(hidden, dim, init_std));
  w3 = register_parameter("w3", normal_weight(hidden, dim, init_std));
  w2 = register_parameter("w2", normal_weight(dim, hidden, init_std / std::sqrt(2.0 * n_layers_for_init)));
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x) {
  return swiglu_mlp(x, w1, w3, w2);
}

}  // namespace shoestring::model
