#pragma once
// Block-scaled FP8 GEMM, DeepSeek-V3 §3.3.2 ("Increasing Accumulation Precision"):
//
//   C[m, n] = sum_kb  scale_a[m, kb] * scale_b[n / 128, kb] * P[m, n, kb],
//   P[m, n, kb] = sum_{k in block kb} decode(A[m, k]) * decode(B[n, k])    (128 products)
//
// Hopper's FP8 tensor cores keep only ~14 bits of the accumulator, so DeepSeek-V3 accumulates each
// 128-long K block (N_C = 128, four WGMMAs) in the tensor core and then *promotes* the partial sum to
// an FP32 accumulator on the CUDA cores, multiplying by the two dequantization scales there. The CPU
// reference does exactly that in float: P in a float register, then acc += P * (sa * sb). It is the
// oracle every GPU kernel is compared with (calc_diff table in ops/calc_diff.h).
//
// Operands are both K-contiguous ("TN"): A [M, K] with 1x128 scales, B [N, K] with 128x128 scales
// (Fprop/Dgrad) or 1x128 scales (Wgrad, where both operands are activations/gradients). C is float32.
#include <ATen/core/Tensor.h>

#include "ops/fp8_gemm_config.h"
#include "ops/fp8_quantize.h"

namespace shoestring::ops {

// C[M, N] = A . B^T with block scales. A.block_rows must be 1; B.block_rows 1 or 128.
// Any M, N, K (ragged tiles are implicitly zero-padded, see fp8_quantize.h).
at::Tensor fp8_gemm_reference(const Fp8Tensor& a, const Fp8Tensor& b);

// Grouped GEMM, "contiguous" layout of DeepGEMM's m_grouped_gemm_fp8_fp8_bf16_nt_contiguous: the
// rows of A are the tokens of all local experts concatenated, each expert's segment padded to a
// multiple of 128 rows so that a 128-row M tile never straddles two experts. group_of_row [M] (int32)
// gives each row's expert, -1 for padding rows (their output rows are 0). B is [G, N, K] with
// 128x128 scales [G, ceil(N/128), ceil(K/128)].
at::Tensor fp8_grouped_gemm_reference(const Fp8Tensor& a, const Fp8Tensor& b, const at::Tensor& group_of_row);

// Validates the grouped layout (every aligned 128-row tile holds one group or padding); throws
// std::invalid_argument naming the first offending tile. Shared by the CPU and CUDA launchers.
void check_grouped_layout(const at::Tensor& group_of_row, int64_t num_groups, int64_t M);

// Builds group_of_row for the given per-group row counts, padding each group to 128 rows; the
// total is sum(ceil(count/128)*128). Helper for tests, benchmarks and the MoE layer.
at::Tensor make_contiguous_group_layout(const std::vector<int64_t>& rows_per_group);

// K-grouped GEMM, the grouped Wgrad (DeepGEMM's k-grouped contiguous layout): A [M, Kt] and B [N, Kt],
// both 1x128-scaled along K, whose K axis holds G groups back to back, k_rows[g] columns each (the
// tokens of expert g, padded: each a multiple of 128, summing to Kt). C[g] = A_g . B_g^T over the
// group's columns only, promoted every 128 as above: [G, M, N] float32, zeros for an empty group.
// Because every group starts on a 128 boundary, the 1x128 quantization of all groups at once has
// exactly the codes and scales of quantizing each group alone, so one transposed quantization pass
// serves all experts and C[g] equals fp8_gemm_reference on group g's columns.
at::Tensor fp8_k_grouped_gemm_reference(const Fp8Tensor& a, const Fp8Tensor& b, const std::vector<int64_t>& k_rows);

// Validates a k-grouped layout against the operands' K; throws std::invalid_argument naming the group.
void check_k_groups(const char* what, const std::vector<int64_t>& k_rows, int64_t K);

// ---- CUDA launchers (ops/fp8_gemm.cu). Without CUDA they throw std::runtime_error. ----
// All take CUDA tensors, validate shapes -> choose a config (fp8_gemm_config.h) -> launch on the
// current stream, and return float32 C. `kernel` forces a variant (tests run each); kAuto lets the
// heuristic choose.
at::Tensor fp8_gemm_cuda(const Fp8Tensor& a, const Fp8Tensor& b, Fp8GemmKernel kernel = Fp8GemmKernel::kAuto);
at::Tensor fp8_grouped_gemm_cuda(const Fp8Tensor& a, const Fp8Tensor& b, const at::Tensor& group_of_row,
                                 Fp8GemmKernel kernel = Fp8GemmKernel::kAuto);
// One launch for all groups (grid z = group; each block walks its group's K blocks only).
at::Tensor fp8_k_grouped_gemm_cuda(const Fp8Tensor& a, const Fp8Tensor& b, const std::vector<int64_t>& k_rows,
                                   Fp8GemmKernel kernel = Fp8GemmKernel::kAuto);

}  // namespace shoestring::ops
