#pragma once
// convert_to_fp8: runs the eligible linears of a built model through ops::fp8_linear.
// Eligible (DeepSeek-V3 §3.3.1): attention projections (GQA and MLA), dense SwiGLU and shared and
// routed experts, in the main model and in MTP modules. Kept in high precision: the embedding, the
// output head, the MoE router (gate), normalisations, the attention core (softmax), and the MTP
// projection, as the paper keeps "the embedding module, the output head, MoE gating modules,
// normalization operators, and attention operators" in BF16/FP32.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <vector>

namespace shoestring::model {

// Returns the number of modules converted.
int64_t convert_to_fp8(torch::nn::Module& model);

// The linear that convert_to_fp8 installs: ops::fp8_linear, except on the GPU when a dimension of
// one of its three GEMMs is not a multiple of 128 (the CUDA GEMM's K: in_features for Fprop,
// out_features for Dgrad, the token count for Wgrad, e.g. MLA's kv_lora_rank + rope dim or a routed
// expert's share of the tokens). Those go through fp8_linear_padded, saying so once on stderr.
at::Tensor fp8_linear_any_shape(const at::Tensor& x, const at::Tensor& w);

// The grouped linear convert_to_fp8 installs for routed experts: ops::fp8_grouped_linear (one
// grouped GEMM for Fprop and for Dgrad over all local experts), except on the GPU when the experts'
// in or out features are not multiples of 128: then fp8_linear_any_shape per expert.
at::Tensor fp8_grouped_linear_any_shape(const at::Tensor& rows, const at::Tensor& w, const std::vector<int64_t>& counts);

// The SwiGLU MLPs convert_to_fp8 installs (dense MLPs and shared experts; routed experts): the two
// up projections as one ops::fp8_[grouped_]linear_pair (the input quantized once), then
// ops::fp8_[grouped_]swiglu_linear (the activation fused into the down projection's
// quantization, the product silu(h1) * h3 never stored); except where the linears above fall
// back on the GPU (a dimension not a multiple of 128): there the unfused form through them.
at::Tensor fp8_swiglu_mlp_any_shape(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2);
at::Tensor fp8_grouped_swiglu_mlp_any_shape(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3,
                                            const at::Tensor& w2, const std::vector<int64_t>& counts);

// ops::fp8_linear on x and w zero-padded to multiples of 128 in tokens, in_features and
// out_features, cut back afterwards. Exact: zeros change no 1x128 or 128x128 block's amax, so
// every scale, every quantized value and every block sum is the unpadded one's; gradients of the
// padding are dropped by the pad's own backward.
at::Tensor fp8_linear_padded(const at::Tensor& x, const at::Tensor& w);

}  // namespace shoestring::model
