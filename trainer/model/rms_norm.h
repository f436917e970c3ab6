#pragma once
#include <torch/nn/module.h>

namespace shoestring::model {

// RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * weight. Computed in at least
// fp32 whatever the compute dtype, as DeepSeek-V3 §3.3.1 keeps normalisations in high precision.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace shoestring::model
