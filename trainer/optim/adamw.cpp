#include "trainer/optim/adamw.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace shoestring::optim {

AdamW::AdamW(std::vector<NamedParam> params, std::vector<bool> decay, const OptimConfig& cfg)
    : params_(std::move(params)), decay_(std::move(decay)), beta1_(cfg.beta1), beta2_(cfg.beta2),
      eps_(cfg.eps), wd_(cfg.weight_decay) {
  for (const auto& p : params_) {
    m_.push_back(at::zeros_like(p.param, at::MemoryFormat::Contiguous));
    v_.push_back(at::zeros_like(p.param, at::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(beta1_, double(t_));
  const double bc2 = 1.0 - std::pow(beta2_, double(t_));
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].param;
    const at::Tensor g = p.grad();
    if (!g.defined()) continue;
    m_[i].mul_(beta1_).add_(g, 1.0 - beta1_);
    v_[i].mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
    if (decay_[i] && wd_ > 0) p.mul_(1.0 - lr * wd_);
    const at::Tensor denom = (v_[i] / bc2).sqrt_().add_(eps_);
    p.addcdiv_(m_[i], denom, -lr / bc1);
  }
}

bool decays(const OptimConfig& cfg, const std::string& kind) {
  return std::find(cfg.no_decay.begin(), cfg.no_decay.end(), kind) == cfg.no_decay.end();
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  double sq = 0;
  for (const auto& p : params)
    if (p.param.grad().defined()) sq += p.param.grad().to(at::kDouble).pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    at::NoGradGuard no_grad;
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params)
      if (p.param.grad().defined()) p.param.mutable_grad().mul_(scale);
  }
  return norm;
}

}  // namespace shoestring::optim
