#include "trainer/model/transformer.h"

#include <ATen/ATen.h>

#include "trainer/model/linear.h"

namespace shoestring::model {

BlockImpl::BlockImpl(const ModelConfig& cfg) {
  attn_norm_ = register_module("attn_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  attn_ = register_module("attn", Attention(cfg, cfg.n_layers));
  mlp_norm_ = register_module("mlp_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  mlp_ = register_module("mlp", SwiGLU(cfg.d_model, cfg.intermediate_size, cfg.init_std, cfg.n_layers));
}

at::Tensor BlockImpl::forward(const at::Tensor& x, const RotaryTables& rope) {
  const at::Tensor h = x + attn_->forward(attn_norm_->forward(x), rope);
  return h + mlp_->forward(mlp_norm_->forward(h));
}

TransformerImpl::TransformerImpl(const ModelConfig& cfg, at::ScalarType compute_dtype)
    : cfg_(cfg), compute_dtype_(compute_dtype) {
  // Construction order fixes the order of random draws, so the seed alone determines the init.
  tok_embed_ = register_parameter("tok_embed", at::randn({cfg.vocab_size, cfg.d_model}) * cfg.init_std);
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.n_layers; ++i) blocks_->push_back(Block(cfg));
  final_norm_ = register_module("final_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  if (!cfg.tie_embeddings)
    head_ = register_parameter("head", normal_weight(cfg.vocab_size, cfg.d_model, cfg.init_std));
  rope_ = rotary_tables(cfg.d_model / cfg.n_heads, cfg.max_seq_len, cfg.rope_theta);
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens) {
  at::Tensor x = at::embedding(tok_embed_, tokens).to(compute_dtype_);
  for (const auto& block : *blocks_) x = block->as<BlockImpl>()->forward(x, rope_);
  const at::Tensor logits = project(final_norm_->forward(x), cfg_.tie_embeddings ? tok_embed_ : head_);
  return logits.to(at::promote_types(logits.scalar_type(), at::kFloat));
}

at::Tensor TransformerImpl::loss(const at::Tensor& tokens, const at::Tensor& targets) {
  const at::Tensor logits = forward(tokens);
  return at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), targets.reshape({-1}));
}

int64_t TransformerImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

std::string parameter_kind(const std::string& name) {
  if (name.find("norm") != std::string::npos) return "norm";
  if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) return "bias";
  if (name == "tok_embed") return "embedding";
  if (name == "head") return "head";
  return "weight";
}

}  // namespace shoestring::model
