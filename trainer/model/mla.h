#pragma once
// Multi-head latent attention (DeepSeek-V2 §2.1, used unchanged by DeepSeek-V3 §2.1.1).
// Keys and values come from one low-rank latent c_kv = W_dkv x (kv_lora_rank wide, RMSNorm'ed);
// queries optionally from their own latent (q_lora_rank). Rotary position is carried by a separate
// qk_rope_head_dim slice: per head for queries, one shared by all heads for keys ("decoupled
// RoPE"). Softmax scale 1/sqrt(qk_nope_head_dim + qk_rope_head_dim).
#include <torch/nn/module.h>

#include "trainer/config.h"
#include "trainer/model/linear.h"
#include "trainer/model/rms_norm.h"
#include "trainer/model/rope.h"

namespace shoestring::model {

class MLAImpl : public torch::nn::Module, public LinearUser {
 public:
  MLAImpl(const ModelConfig& cfg);
  at::Tensor forward(const at::Tensor& x, const RotaryTables& rope);  // rope over qk_rope_head_dim

  at::Tensor wq;            // [H*(dn+dr), d] when q_lora_rank == 0
  at::Tensor wq_a, wq_b;    // [q_lora, d], [H*(dn+dr), q_lora] otherwise
  RMSNorm q_norm{nullptr};
  at::Tensor wkv_a;         // [kv_lora + dr, d]
  RMSNorm kv_norm{nullptr};
  at::Tensor wkv_b;         // [H*(dn+dv), kv_lora]
  at::Tensor wo;            // [d, H*dv]

 private:
  int64_t n_heads_, dn_, dr_, dv_, kv_rank_;
};
TORCH_MODULE(MLA);

}  // namespace shoestring::model
