#include "trainer/model/convert_fp8.h"

#include <ATen/ATen.h>

#include <atomic>
#include <iostream>

#include "ops/fp8_linear.h"
#include "ops/fp8_quantize.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

namespace {

int64_t padding(int64_t n) { return ops::ceil_div(n, ops::kFp8Block) * ops::kFp8Block - n; }

}  // namespace

at::Tensor fp8_linear_padded(const at::Tensor& x, const at::Tensor& w) {
  const int64_t k = x.size(-1), n = w.size(0);
  const at::Tensor x2 = x.reshape({-1, k});
  const int64_t m = x2.size(0), pm = padding(m), pk = padding(k), pn = padding(n);
  const at::Tensor xp = pm || pk ? at::constant_pad_nd(x2, {0, pk, 0, pm}) : x2;
  const at::Tensor wp = pk || pn ? at::constant_pad_nd(w, {0, pk, 0, pn}) : w;
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = n;
  return ops::fp8_linear(xp, wp).narrow(0, 0, m).narrow(1, 0, n).reshape(out_shape);
}

at::Tensor fp8_linear_any_shape(const at::Tensor& x, const at::Tensor& w) {
  const int64_t k = x.size(-1), n = w.size(0), m = k > 0 ? x.numel() / k : 0;
  if (!x.is_cuda() || (padding(m) == 0 && padding(k) == 0 && padding(n) == 0 && m > 0)) return ops::fp8_linear(x, w);
  // No tokens: the Wgrad GEMM would have K = 0, which the CUDA GEMM does not special-case (its
  // output is allocated, not zeroed). The high-precision linear gives the empty output and a zero dW.
  if (m == 0) return project(x, w);
  static std::atomic<bool> said{false};
  if (!said.exchange(true))
    std::cerr << "fp8: a linear of " << m << " tokens x [" << n << " x " << k
              << "] (and any like it) is zero-padded to multiples of 128 for the GPU FP8 GEMM (exact; costs the "
                 "padded work)\n";
  return fp8_linear_padded(x, w);
}

at::Tensor fp8_grouped_linear_any_shape(const at::Tensor& rows, const at::Tensor& w, const std::vector<int64_t>& counts) {
  if (!rows.is_cuda() || (padding(w.size(1)) == 0 && padding(w.size(2)) == 0)) return ops::fp8_grouped_linear(rows, w, counts);
  std::vector<at::Tensor> outs;
  int64_t r0 = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    outs.push_back(fp8_linear_any_shape(rows.narrow(0, r0, counts[g]), w[int64_t(g)]));
    r0 += counts[g];
  }
  return outs.empty() ? at::zeros({0, w.size(1)}, rows.options()) : at::cat(outs);
}

at::Tensor fp8_swiglu_mlp_any_shape(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2) {
  const int64_t d = x.size(-1), h = w1.size(0), m = d > 0 ? x.numel() / d : 0;
  if (!x.is_cuda() || (padding(m) == 0 && padding(d) == 0 && padding(h) == 0 && m > 0)) {
    const auto [h1, h3] = ops::fp8_linear_pair(x, w1, w3);
    return ops::fp8_swiglu_linear(h1, h3, w2);
  }
  // Padded (or empty) on the GPU: the unfused form, each linear padded as it needs.
  return fp8_linear_any_shape(at::silu(fp8_linear_any_shape(x, w1)) * fp8_linear_any_shape(x, w3), w2);
}

at::Tensor fp8_grouped_swiglu_mlp_any_shape(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3,
                                            const at::Tensor& w2, const std::vector<int64_t>& counts) {
  if (!rows.is_cuda() || (padding(w1.size(1)) == 0 && padding(w1.size(2)) == 0)) {
    const auto [h1, h3] = ops::fp8_grouped_linear_pair(rows, w1, w3, counts);
    return ops::fp8_grouped_swiglu_linear(h1, h3, w2, counts);
  }
  return fp8_grouped_linear_any_shape(
      at::silu(fp8_grouped_linear_any_shape(rows, w1, counts)) * fp8_grouped_linear_any_shape(rows, w3, counts), w2,
      counts);
}

int64_t convert_to_fp8(torch::nn::Module& model) {
  int64_t converted = 0;
  for (const auto& m : model.modules(/*include_self=*/true)) {
    if (auto* user = dynamic_cast<LinearUser*>(m.get())) {
      user->set_linear_fn(&fp8_linear_any_shape);
      user->set_grouped_linear_fn(&fp8_grouped_linear_any_shape);
      user->set_swiglu_mlp_fns(&fp8_swiglu_mlp_any_shape, &fp8_grouped_swiglu_mlp_any_shape);
      ++converted;
    }
  }
  return converted;
}

}  // namespace shoestring::model
