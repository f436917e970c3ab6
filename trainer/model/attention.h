#pragma once
#include <torch/nn/module.h>

#include "trainer/config.h"
#include "trainer/model/linear.h"
#include "trainer/model/rope.h"

namespace shoestring::model {

// Causal self-attention with rotary embeddings and grouped-query heads (Ainslie et al. 2023):
// n_kv_heads key/value heads are shared by n_heads / n_kv_heads query heads each.
class AttentionImpl : public torch::nn::Module, public LinearUser {
 public:
  AttentionImpl(const ModelConfig& cfg, int64_t n_layers_for_init);
  at::Tensor forward(const at::Tensor& x, const RotaryTables& rope);

  at::Tensor wq, wk, wv, wo;  // [out, in]

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

}  // namespace shoestring::model
