#pragma once
// AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient,
//   p <- p - lr * wd * p - lr * m_hat / (sqrt(v_hat) + eps).
// Written out rather than taken from torch::optim so its state is ours to shard (ZeRO-1) and to
// checkpoint, and its arithmetic order is fixed. It updates "slots": whole parameters, or with
// ZeRO-1 the slices of parameters this rank owns (parallel::GradReducer::owned()).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "trainer/config.h"

namespace shoestring::optim {

struct Slot {
  std::string name;  // the parameter's name (for checkpoints and messages)
  at::Tensor value;  // updated in place; a parameter or a view of part of one
  bool decay = true;
};

class AdamW {
 public:
  AdamW(std::vector<Slot> slots, const OptimConfig& cfg);

  // grads[i] has slots[i].value's shape; an undefined gradient leaves that slot (and its moments)
  // untouched.
  void step(double lr, const std::vector<at::Tensor>& grads);
  int64_t steps_taken() const { return t_; }
  const std::vector<Slot>& slots() const { return slots_; }
  int64_t state_bytes() const;  // the two moments held by this rank
  // Checkpoints save and restore the moments in place (slot i's are first[i], second[i]) and t.
  std::vector<at::Tensor>& first_moments() { return m_; }
  std::vector<at::Tensor>& second_moments() { return v_; }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  std::vector<Slot> slots_;
  std::vector<at::Tensor> m_, v_;
  double beta1_, beta2_, eps_, wd_;
  int64_t t_ = 0;
};

// Whether a parameter of this kind (model::parameter_kind) is decayed under cfg.no_decay.
bool decays(const OptimConfig& cfg, const std::string& kind);

// The factor gradients are multiplied by to clip a global norm `norm` to `max_norm` (0 = no
// clipping): max_norm / (norm + 1e-6) when the norm is larger, else 1.
double clip_scale(double norm, double max_norm);

}  // namespace shoestring::optim
