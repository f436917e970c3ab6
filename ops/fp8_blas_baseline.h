#pragma once
// Vendor baselines for the FP8 GEMM, measured next to our kernel by the bench and compared with the
// CPU reference by the GPU test:
//  - cuBLASLt's block-scaled FP8 GEMM (CUDA >= 12.9, Hopper): CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
//    for the activation (1x128) and BLK128x128_32F for the weight, i.e. DeepSeek-V3's recipe.
//  - cuBLAS BF16 GEMM (FP32 accumulation): what the FP8 path must beat by >= 1.6x (issue 9).
// Without CUDA these throw std::runtime_error.
#include <ATen/core/Tensor.h>

#include <memory>

#include "ops/fp8_quantize.h"

namespace shoestring::ops {

// A prepared cuBLASLt call for C[M,N] = A . B^T (A 1x128, B 128x128, K % 128 == 0): descriptors,
// heuristic choice and the scale tensors converted to cuBLASLt's layouts are built once, so the
// bench times only cublasLtMatmul. out_dtype: kFloat or kBFloat16.
class CublasLtFp8Gemm {
 public:
  CublasLtFp8Gemm(const Fp8Tensor& a, const Fp8Tensor& b, at::ScalarType out_dtype);
  ~CublasLtFp8Gemm();
  CublasLtFp8Gemm(const CublasLtFp8Gemm&) = delete;
  CublasLtFp8Gemm& operator=(const CublasLtFp8Gemm&) = delete;
  // Runs on the current stream into a fresh [M, N] tensor (or into `out` when defined).
  at::Tensor run(at::Tensor out = at::Tensor());

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One-shot convenience wrapper.
at::Tensor fp8_gemm_cublaslt(const Fp8Tensor& a, const Fp8Tensor& b, at::ScalarType out_dtype = at::kFloat);

// C[M,N] (bf16) = A[M,K] . B[N,K]^T with cuBLAS, bf16 inputs, FP32 compute.
at::Tensor bf16_gemm_cublas(const at::Tensor& a, const at::Tensor& b, at::Tensor out = at::Tensor());

}  // namespace shoestring::ops
