#pragma once
// convert_to_fp8: runs the eligible linears of a built model through ops::fp8_linear.
// Eligible (DeepSeek-V3 §3.3.1): attention projections (GQA and MLA), dense SwiGLU and shared and
// routed experts, in the main model and in MTP modules. Kept in high precision: the embedding, the
// output head, the MoE router (gate), normalisations, the attention core (softmax), and the MTP
// projection, as the paper keeps "the embedding module, the output head, MoE gating modules,
// normalization operators, and attention operators" in BF16/FP32.
#include <torch/nn/module.h>

namespace shoestring::model {

// Returns the number of modules converted.
int64_t convert_to_fp8(torch::nn::Module& model);

}  // namespace shoestring::model
