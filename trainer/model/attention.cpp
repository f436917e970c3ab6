#include "trainer/model/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "trainer/model/linear.h"

namespace shoestring::model {

AttentionImpl::AttentionImpl(const ModelConfig& cfg, int64_t n_layers_for_init)
    : n_heads_(cfg.n_heads), n_kv_heads_(cfg.n_kv_heads), head_dim_(cfg.d_model / cfg.n_heads) {
  const int64_t d = cfg.d_model;
  wq = register_parameter("wq", normal_weight(n_heads_ * head_dim_, d, cfg.init_std));
  wk = register_parameter("wk", normal_weight(n_kv_heads_ * head_dim_, d, cfg.init_std));
  wv = register_parameter("wv", normal_weight(n_kv_heads_ * head_dim_, d, cfg.init_std));
  // Residual-branch outputs are scaled down so the residual stream's variance does not grow with
  // depth (GPT-2, Radford et al. 2019, §2.3).
  wo = register_parameter("wo", normal_weight(d, n_heads_ * head_dim_, cfg.init_std / std::sqrt(2.0 * n_layers_for_init)));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const RotaryTables& rope) {
  const int64_t b = x.size(0), t = x.size(1);
  auto heads = [&](const at::Tensor& w, int64_t n) {
    return project(x, w).view({b, t, n, head_dim_}).transpose(1, 2);
  };
  at::Tensor q = apply_rotary(heads(wq, n_heads_), rope);
  at::Tensor k = apply_rotary(heads(wk, n_kv_heads_), rope);
  at::Tensor v = heads(wv, n_kv_heads_);
  if (n_kv_heads_ != n_heads_) {
    k = k.repeat_interleave(n_heads_ / n_kv_heads_, 1);
    v = v.repeat_interleave(n_heads_ / n_kv_heads_, 1);
  }
  const at::Tensor y = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                        /*is_causal=*/true);
  return project(y.transpose(1, 2).reshape({b, t, n_heads_ * head_dim_}), wo);
}

}  // namespace shoestring::model
