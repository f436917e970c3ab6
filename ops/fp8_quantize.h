#pragma once
// Fine-grained FP8 quantization as in DeepSeek-V3 §3.3.2 ("Fine-Grained Quantization"):
//   activations: one scale per 1x128 tile (one token, 128 channels)      -> quantize_1x128
//   weights:     one scale per 128x128 block (128 output x 128 input ch.) -> quantize_128x128
// scale = max(amax, 1e-4) / 448 and code = e4m3(x * (448 / max(amax, 1e-4))), the formula of
// DeepSeek's reference (DeepGEMM per_token_cast_to_fp8 / per_block_cast_to_fp8): the epsilon keeps an
// all-zero tile from dividing by zero; dequantized value = decode(code) * scale.
//
// Layout choices (docs/fp8.md):
// - data is an at::kFloat8_e4m3fn tensor (1 byte per element, the codes of fp8_format.h; a
//   .view(at::kByte) gives the raw codes). It has the logical shape of the input, row-major.
// - scale is float32, row-major: [M, ceil(K/128)] for 1x128, [ceil(N/128), ceil(K/128)] for
//   128x128 (with a leading group dimension for [G, N, K] weights).
// - Shapes not divisible by 128 are *implicitly zero-padded*: the last tile of a row (or the last
//   block) covers the remaining elements only. Zero padding changes neither amax nor any dot product,
//   so this is exactly "pad to 128 with zeros" without materialising the padding. The GPU GEMM
//   launchers have their own (stricter) alignment rules, checked with clear errors.
//
// The backward pass reads the same tensors along the other dimension (DeepSeek-V3 Figure 6):
//   Dgrad dX[M,K] = dY[M,N] . W[N,K]   needs W^T as a [K,N] operand blocked 128x128
//   Wgrad dW[N,K] = dY^T[N,M] . X[M,K] needs dY^T and X^T as operands grouped 1x128 along M
// hence the *_transposed variants, which quantize x^T without materialising it on the GPU.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "ops/fp8_format.h"

namespace shoestring::ops {

inline constexpr int64_t kFp8Block = 128;  // DeepSeek-V3 §3.3.2: N_C = 128
inline constexpr float kFp8AmaxEps = 1e-4f;

// A quantized operand of the block-scaled GEMM: C = A . B^T with both operands stored K-contiguous.
struct Fp8Tensor {
  at::Tensor data;         // kFloat8_e4m3fn, [rows, K] (or [G, rows, K] for grouped weights)
  at::Tensor scale;        // float32, [ceil(rows / block_rows), ceil(K/128)] (leading G if grouped)
  int64_t block_rows = 1;  // 1 = 1x128 tiles (activations), 128 = 128x128 blocks (weights)

  int64_t rows() const { return data.size(-2); }
  int64_t cols() const { return data.size(-1); }
};

SHOESTRING_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-token-group: x [M, K] (float/bf16/half) -> data [M, K], scale [M, ceil(K/128)].
Fp8Tensor quantize_1x128(const at::Tensor& x);
// Per-token-group of x^T: data [K, M], scale [K, ceil(M/128)]. Equals quantize_1x128(x.t()).
Fp8Tensor quantize_1x128_transposed(const at::Tensor& x);
// Per-block: w [N, K] or [G, N, K] -> data same shape, scale [ceil(N/128), ceil(K/128)] (+G).
Fp8Tensor quantize_128x128(const at::Tensor& w);
// Per-block of w^T: data [K, N], scale [ceil(K/128), ceil(N/128)]. A 128x128 block of w^T is a
// transposed block of w, so this is quantize_128x128(w) with data and scale transposed.
Fp8Tensor quantize_128x128_transposed(const at::Tensor& w);

// The input of an MLP's down projection, quantized in one pass (DeepSeek-V3 §3.3: the SwiGLU output
// is quantized for the next FP8 GEMM): quantize_1x128 of p = silu(h1) * h3, with p formed in the
// dtype of h1 as ATen forms it (silu rounded to that dtype, then the product rounded), so the codes
// and scales are those of the unfused quantize_1x128(at::silu(h1) * h3). h1, h3: [M, H], same
// shape and dtype. The CUDA kernel reads h1 and h3 and writes only codes and scales: p is never
// stored.
Fp8Tensor quantize_swiglu_1x128(const at::Tensor& h1, const at::Tensor& h3);

// decode(code) * scale, float32, same shape as q.data.
at::Tensor dequantize(const Fp8Tensor& q);
// float32 values of E4M3 codes (data: float8_e4m3fn or uint8, any shape and device), exact. On CPU
// through the 256-entry decode table: ATen's float8 conversion goes one element at a time and was
// most of the CPU FP8 dispatch's unpacking.
at::Tensor decode_codes(const at::Tensor& data);

// Validates the invariants above (dtypes, contiguity, scale shape); throws std::invalid_argument
// naming `what` and the offending shapes.
void check_fp8_tensor(const Fp8Tensor& q, const char* what);

// ---- CUDA kernels (ops/fp8_quantize.cu), bit-identical to the functions above. They take a CUDA
// float/bf16 tensor and run on the current stream. Without CUDA they throw std::runtime_error.
Fp8Tensor quantize_1x128_cuda(const at::Tensor& x);
Fp8Tensor quantize_1x128_transposed_cuda(const at::Tensor& x);
Fp8Tensor quantize_128x128_cuda(const at::Tensor& w);  // 2-D or [G, N, K]
Fp8Tensor quantize_128x128_transposed_cuda(const at::Tensor& w);
// Not bit-identical: its silu uses the device's expf, ATen's CPU silu its own vectorised exp, and
// the two may differ in the last bit; a differing p changes its code, and, when it is a tile's
// amax, the tile's scale (ops/fp8_quantize_swiglu.cu; tests/ops/test_fp8_gpu.cpp bounds it).
Fp8Tensor quantize_swiglu_1x128_cuda(const at::Tensor& h1, const at::Tensor& h3);

// The per-tile scale formula shared by the CPU reference and the CUDA kernels (see top).
struct Fp8TileScale {
  float inv;    // multiply x by this before encoding: 448 / max(amax, eps)
  float scale;  // store this: max(amax, eps) / 448
};
SHOESTRING_HD Fp8TileScale fp8_tile_scale(float amax) {
  const float a = amax > kFp8AmaxEps ? amax : kFp8AmaxEps;
  return {448.0f / a, a / 448.0f};
}

}  // namespace shoestring::ops
