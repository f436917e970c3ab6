#pragma once
// AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient,
//   p <- p - lr * wd * p - lr * m_hat / (sqrt(v_hat) + eps).
// Written out rather than taken from torch::optim so its state is ours to shard (ZeRO-1) and to
// checkpoint, and its arithmetic order is fixed.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "trainer/config.h"

namespace shoestring::optim {

struct NamedParam {
  std::string name;
  at::Tensor param;
};

class AdamW {
 public:
  // `decay[i]` says whether parameter i gets weight decay.
  AdamW(std::vector<NamedParam> params, std::vector<bool> decay, const OptimConfig& cfg);

  void step(double lr);
  int64_t steps_taken() const { return t_; }
  const std::vector<NamedParam>& params() const { return params_; }

 private:
  std::vector<NamedParam> params_;
  std::vector<bool> decay_;
  std::vector<at::Tensor> m_, v_;
  double beta1_, beta2_, eps_, wd_;
  int64_t t_ = 0;
};

// Whether a parameter of this kind (model::parameter_kind) is decayed under cfg.no_decay.
bool decays(const OptimConfig& cfg, const std::string& kind);

// Global L2 norm of all gradients (accumulated in float64); when max_norm > 0 and the norm
// exceeds it, gradients are scaled by max_norm / norm. Returns the norm before clipping.
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm);

}  // namespace shoestring::optim
