#pragma once
// The decoder-only model as plain single-device code: it never mentions ranks or devices beyond
// the tensors it is given. Parallelism is applied from outside (parallel/, later issues).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "trainer/config.h"
#include "trainer/model/attention.h"
#include "trainer/model/rms_norm.h"
#include "trainer/model/swiglu.h"

namespace shoestring::model {

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& cfg);
  at::Tensor forward(const at::Tensor& x, const RotaryTables& rope);

 private:
  RMSNorm attn_norm_{nullptr}, mlp_norm_{nullptr};
  Attention attn_{nullptr};
  SwiGLU mlp_{nullptr};
};
TORCH_MODULE(Block);

class TransformerImpl : public torch::nn::Module {
 public:
  // compute_dtype: dtype of activations and matmuls (kFloat, kBFloat16, or kDouble for tests).
  TransformerImpl(const ModelConfig& cfg, at::ScalarType compute_dtype = at::kFloat);

  // tokens [batch, seq] int64 -> logits [batch, seq, vocab] in fp32 (fp64 for kDouble).
  at::Tensor forward(const at::Tensor& tokens);
  // Mean next-token cross entropy of logits(tokens) against targets [batch, seq].
  at::Tensor loss(const at::Tensor& tokens, const at::Tensor& targets);

  int64_t parameter_count() const;
  void set_compute_dtype(at::ScalarType dt) { compute_dtype_ = dt; }

 private:
  ModelConfig cfg_;
  at::ScalarType compute_dtype_;
  RotaryTables rope_;
  at::Tensor tok_embed_, head_;
  torch::nn::ModuleList blocks_;
  RMSNorm final_norm_{nullptr};
};
TORCH_MODULE(Transformer);

// Parameter kind for weight-decay grouping: "norm", "bias", "embedding", "head" or "weight".
std::string parameter_kind(const std::string& name);

}  // namespace shoestring::model
