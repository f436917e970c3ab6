#include "trainer/model/mla.h"

#include <ATen/ATen.h>

#include <cmath>

#include "trainer/model/linear.h"

namespace shoestring::model {

MLAImpl::MLAImpl(const ModelConfig& cfg)
    : n_heads_(cfg.n_heads), dn_(cfg.qk_nope_head_dim), dr_(cfg.qk_rope_head_dim), dv_(cfg.v_head_dim),
      kv_rank_(cfg.kv_lora_rank) {
  const int64_t d = cfg.d_model, h = n_heads_;
  const double init = cfg.init_std;
  if (cfg.q_lora_rank == 0) {
    wq = register_parameter("wq", normal_weight(h * (dn_ + dr_), d, init));
  } else {
    wq_a = register_parameter("wq_a", normal_weight(cfg.q_lora_rank, d, init));
    q_norm = register_module("q_norm", RMSNorm(cfg.q_lora_rank, cfg.norm_eps));
    wq_b = register_parameter("wq_b", normal_weight(h * (dn_ + dr_), cfg.q_lora_rank, init));
  }
  wkv_a = register_parameter("wkv_a", normal_weight(kv_rank_ + dr_, d, init));
  kv_norm = register_module("kv_norm", RMSNorm(kv_rank_, cfg.norm_eps));
  wkv_b = register_parameter("wkv_b", normal_weight(h * (dn_ + dv_), kv_rank_, init));
  wo = register_parameter("wo", normal_weight(d, h * dv_, init / std::sqrt(2.0 * cfg.n_layers)));
}

at::Tensor MLAImpl::forward(const at::Tensor& x, const RotaryTables& rope) {
  const int64_t b = x.size(0), t = x.size(1), h = n_heads_;
  const at::Tensor q_flat = wq.defined() ? project(x, wq) : project(q_norm->forward(project(x, wq_a)), wq_b);
  const at::Tensor q = q_flat.view({b, t, h, dn_ + dr_}).transpose(1, 2);  // [B, H, T, dn+dr]
  const at::Tensor q_nope = q.narrow(-1, 0, dn_), q_rope = apply_rotary(q.narrow(-1, dn_, dr_), rope);

  const at::Tensor kv_a = project(x, wkv_a);  // [B, T, kv_rank + dr]
  const at::Tensor k_rope = apply_rotary(kv_a.narrow(-1, kv_rank_, dr_).unsqueeze(1), rope);  // [B, 1, T, dr]
  const at::Tensor kv = project(kv_norm->forward(kv_a.narrow(-1, 0, kv_rank_)), wkv_b)
                            .view({b, t, h, dn_ + dv_})
                            .transpose(1, 2);  // [B, H, T, dn+dv]
  const at::Tensor k = at::cat({kv.narrow(-1, 0, dn_), k_rope.expand({b, h, t, dr_})}, -1);
  at::Tensor v = kv.narrow(-1, dn_, dv_);
  // SDPA's CPU flash kernel needs one head size for q, k and v; with v narrower (DeepSeek-V3:
  // 128 against 192) it falls back to the math path, which materialises scores, mask and
  // softmax. Zero columns appended to v only add zero output columns, dropped again below, so
  // padding is exact up to the kernel's rounding; DeepSeek's and vLLM's MLA pad v the same way
  // for FlashAttention. CPU only: the GPU kernels were not measured with it.
  const int64_t pad = x.device().is_cpu() ? dn_ + dr_ - dv_ : 0;
  if (pad > 0) v = at::constant_pad_nd(v, {0, pad});
  at::Tensor y = at::scaled_dot_product_attention(at::cat({q_nope, q_rope}, -1), k, v, {}, 0.0,
                                                  /*is_causal=*/true, 1.0 / std::sqrt(double(dn_ + dr_)));
  if (pad > 0) y = y.narrow(-1, 0, dv_);
  return project(y.transpose(1, 2).reshape({b, t, h * dv_}), wo);
}

}  // namespace shoestring::model
