#include "trainer/optim/adamw.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace shoestring::optim {

namespace {

bool fusable(const at::Tensor& p, const at::Tensor& g) {
  const auto dt = p.scalar_type();
  return p.device().is_cpu() && g.device().is_cpu() && (dt == at::kFloat || dt == at::kDouble) &&
         g.scalar_type() == dt && p.is_contiguous() && g.is_contiguous() && p.sizes() == g.sizes();
}

}  // namespace

AdamW::AdamW(std::vector<Slot> slots, const OptimConfig& cfg)
    : slots_(std::move(slots)), beta1_(cfg.beta1), beta2_(cfg.beta2), eps_(cfg.eps), wd_(cfg.weight_decay) {
  for (const auto& s : slots_) {
    m_.push_back(at::zeros_like(s.value, at::MemoryFormat::Contiguous));
    v_.push_back(at::zeros_like(s.value, at::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr, const std::vector<at::Tensor>& grads) {
  if (grads.size() != slots_.size())
    throw std::invalid_argument("AdamW::step: " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(slots_.size()) + " slots");
  ++t_;
  const double bc1 = 1.0 - std::pow(beta1_, double(t_));
  const double bc2 = 1.0 - std::pow(beta2_, double(t_));
  at::NoGradGuard no_grad;
  // Dense CPU slots go to ATen's fused AdamW kernel (one pass over each tensor instead of seven
  // op-by-op kernels; torch.optim.AdamW(fused=True)'s arithmetic), one call per decay group.
  // Anything else (strided views, mixed dtypes, other devices) takes the op-by-op form.
  std::vector<at::Tensor> fused[2][4];  // [decayed][param, grad, m, v]
  for (size_t i = 0; i < slots_.size(); ++i) {
    at::Tensor p = slots_[i].value;
    const at::Tensor& g = grads[i];
    if (!g.defined()) continue;
    const bool decay = slots_[i].decay && wd_ > 0;
    if (fusable(p, g)) {
      for (int k = 0; k < 4; ++k) fused[decay][k].push_back(k == 0 ? p : k == 1 ? g : k == 2 ? m_[i] : v_[i]);
      continue;
    }
    m_[i].mul_(beta1_).add_(g, 1.0 - beta1_);
    v_[i].mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
    if (decay) p.mul_(1.0 - lr * wd_);
    const at::Tensor denom = (v_[i] / bc2).sqrt_().add_(eps_);
    p.addcdiv_(m_[i], denom, -lr / bc1);
  }
  for (int decay = 0; decay < 2; ++decay) {
    auto& f = fused[decay];
    if (f[0].empty()) continue;
    const std::vector<at::Tensor> steps(f[0].size(), at::full({}, double(t_), at::kFloat));  // read, not advanced
    at::_fused_adamw_(f[0], f[1], f[2], f[3], {}, steps, lr, beta1_, beta2_, decay ? wd_ : 0.0, eps_,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < m_.size(); ++i) n += int64_t(m_[i].nbytes() + v_[i].nbytes());
  return n;
}

bool decays(const OptimConfig& cfg, const std::string& kind) {
  return std::find(cfg.no_decay.begin(), cfg.no_decay.end(), kind) == cfg.no_decay.end();
}

double clip_scale(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

}  // namespace shoestring::optim
