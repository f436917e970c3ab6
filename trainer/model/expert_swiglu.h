#pragma once
// The routed experts of one MoE layer as a single autograd node: SwiGLU of each expert's slice
// of the expert-sorted rows, with a hand-written backward. Built from autograd's own ops per
// expert (w[e] selects, linears, silu, mul, cat) the step spent much of its non-GEMM time on
// graph bookkeeping and on full-size zero gradients for every w[e] select; this node runs the
// same GEMMs and elementwise kernels in the same orientations, and writes each expert's weight
// gradient straight into its slice. Its results are the per-op graph's bit for bit when the
// hidden size is a multiple of ATen's vector loop (32 floats; tiny-moe's 64 is): otherwise the
// per-expert silu ran some elements in a scalar tail that rounds an ulp differently.
#include <ATen/core/Tensor.h>

#include <vector>

namespace shoestring::model {

// rows: [sum(counts), d] sorted by expert, counts[e] rows for expert e (zeros allowed);
// w1, w3: [E, hidden, d]; w2: [E, d, hidden]. Returns [sum(counts), d]:
// silu(rows_e w1[e]^T) * (rows_e w3[e]^T) w2[e]^T per expert. Weights are cast to rows' dtype
// for the matmuls, gradients come back in the weights' dtype.
// Backward computes the input gradient first and then the weight gradients: those go to the
// weight-gradient slot open in forward, if any (ops/weight_grad_slot.h), or, while a zero-bubble
// pipeline captures (ops/weight_grad_store.h), to its W like model::project's (the stacked weights
// are leaf parameters).
at::Tensor expert_swiglu(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2,
                         const std::vector<int64_t>& counts);

}  // namespace shoestring::model
