#pragma once
#include <torch/nn/module.h>

#include "trainer/config.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

// SwiGLU feed-forward (Shazeer 2020): w2(silu(w1 x) * w3 x).
class SwiGLUImpl : public torch::nn::Module, public LinearUser {
 public:
  SwiGLUImpl(int64_t dim, int64_t hidden, double init_std, int64_t n_layers_for_init);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor w1, w2, w3;
};
TORCH_MODULE(SwiGLU);

}  // namespace shoestring::model
