// Builds without CUDA: the vendor baselines exist as symbols that explain why they cannot run
// (the real implementation is fp8_blas_baseline.cu).
#include "ops/fp8_blas_baseline.h"
#include "ops/cuda_runtime.h"

#include <stdexcept>

namespace shoestring::ops {

#ifndef SHOESTRING_WITH_CUDA
struct CublasLtFp8Gemm::Impl {};
CublasLtFp8Gemm::CublasLtFp8Gemm(const Fp8Tensor&, const Fp8Tensor&, at::ScalarType) { built_without_cuda("CublasLtFp8Gemm"); }
CublasLtFp8Gemm::~CublasLtFp8Gemm() = default;
at::Tensor CublasLtFp8Gemm::run(at::Tensor) { built_without_cuda("CublasLtFp8Gemm::run"); }
at::Tensor fp8_gemm_cublaslt(const Fp8Tensor&, const Fp8Tensor&, at::ScalarType) { built_without_cuda("fp8_gemm_cublaslt"); }
at::Tensor bf16_gemm_cublas(const at::Tensor&, const at::Tensor&, at::Tensor) { built_without_cuda("bf16_gemm_cublas"); }
#endif

}  // namespace shoestring::ops
