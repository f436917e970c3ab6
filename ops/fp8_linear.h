#pragma once
// FP8 Linear: y = x W^T with all three GEMMs of a linear layer in FP8 (DeepSeek-V3 §3.3, Fig. 6):
//   Fprop  y  = x  . W^T   x 1x128 tiles,            W 128x128 blocks
//   Dgrad  dx = dy . W     dy 1x128 tiles (along N), W^T 128x128 blocks
//   Wgrad  dW = dy^T . x   dy^T and x^T 1x128 tiles along the token axis M
// Master weights and their gradients stay in the weight's dtype (fp32); outputs and input
// gradients come back in the dtype of x. On CPU the GEMMs are emulated (fp8_gemm_emulated) so CI
// can train in fp8; on CUDA tensors the CUDA quantizers and GEMM run.
#include <ATen/core/Tensor.h>

#include <array>
#include <vector>

#include "ops/fp8_quantize.h"

namespace shoestring::ops {

// x: [..., K], w: [N, K] -> [..., N]. Differentiable in x and w.
at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& w);

// The routed experts' linears as one grouped FP8 linear: rows [M, K] sorted by group with counts[g]
// rows for group g (zeros allowed, sum M), w [G, N, K] -> [M, N], row i multiplied by its group's
// weight. Differentiable in rows and w. The rows are laid out in DeepGEMM's contiguous layout (each
// group padded to 128 rows) so that Fprop and Dgrad are one grouped GEMM each
// (fp8_grouped_gemm_cuda) instead of one GEMM per group, and Wgrad one k-grouped GEMM
// (fp8_k_grouped_gemm_cuda: each group's K is its padded tokens). The padding rows are zeros, which change no tile's amax: codes, scales and
// results are fp8_linear's on each group's rows (tests/ops/test_fp8_linear.cpp). On CUDA the GPU
// GEMM needs N and K multiples of 128; other shapes throw std::invalid_argument (callers pad).
at::Tensor fp8_grouped_linear(const at::Tensor& rows, const at::Tensor& w, const std::vector<int64_t>& counts);

// {fp8_linear(x, wa), fp8_linear(x, wb)} and the grouped {fp8_grouped_linear(rows, wa, counts),
// fp8_grouped_linear(rows, wb, counts)}: a SwiGLU MLP's two up projections, which read the same
// input, with that input quantized once (and, grouped, laid out once) for both Fprops, and once
// transposed for both Wgrads; the input gradient is the sum of the two Dgrads. Equal to the two
// separate calls bit for bit on the CPU (tests/ops/test_fp8_linear.cpp).
std::array<at::Tensor, 2> fp8_linear_pair(const at::Tensor& x, const at::Tensor& wa, const at::Tensor& wb);
std::array<at::Tensor, 2> fp8_grouped_linear_pair(const at::Tensor& rows, const at::Tensor& wa, const at::Tensor& wb,
                                                  const std::vector<int64_t>& counts);

// fp8_linear(at::silu(h1) * h3, w) and fp8_grouped_linear(at::silu(h1) * h3, w, counts), the down
// projection of a SwiGLU MLP, with the product never stored: forward quantizes it from h1 and h3 in
// one pass (quantize_swiglu_1x128), autograd keeps h1 and h3 instead of silu(h1) and the product,
// and backward recomputes both (elementwise) for the weight gradient and the SwiGLU gradient. On
// the CPU the results equal the unfused composition bit for bit (tests/ops/test_fp8_linear.cpp);
// on CUDA the fused quantizer's silu may round differently in the last bit (fp8_quantize.h).
// h1, h3: [..., H] (grouped: [M, H]); w: [N, H] (grouped: [G, N, H]).
at::Tensor fp8_swiglu_linear(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w);
at::Tensor fp8_grouped_swiglu_linear(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w,
                                     const std::vector<int64_t>& counts);

// The block-scaled GEMM of fp8_gemm_reference computed with one float BLAS GEMM per 128-wide K
// block and the FP32 promotion after each block: the same formula, only the summation order inside
// a block differs (calc_diff against the reference ~1e-14, tests/ops/test_fp8_linear.cpp). The
// loop reference is the oracle for kernels; this is the fast CPU path for training.
at::Tensor fp8_gemm_emulated(const Fp8Tensor& a, const Fp8Tensor& b);

}  // namespace shoestring::ops
