#pragma once
#include <ATen/core/Tensor.h>

namespace shoestring::model {

// x @ w^T with w cast to x's dtype: master weights stay fp32, matmuls run in the compute dtype.
// The single place the model multiplies by a weight, so the FP8 conversion has one seam to swap.
at::Tensor project(const at::Tensor& x, const at::Tensor& w);

// A fresh [out, in] weight drawn from Normal(0, std) with the global generator.
at::Tensor normal_weight(int64_t out, int64_t in, double std);

}  // namespace shoestring::model
