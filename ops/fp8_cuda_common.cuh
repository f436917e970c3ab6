#pragma once
// Small helpers shared by the FP8 .cu files (CUDA only).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace shoestring::ops::cuda_detail {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline void require_cuda(const at::Tensor& t, const char* what, const char* name) {
  if (!t.defined() || !t.is_cuda())
    throw std::invalid_argument(std::string(what) + ": " + name + " must be a CUDA tensor");
}

}  // namespace shoestring::ops::cuda_detail
