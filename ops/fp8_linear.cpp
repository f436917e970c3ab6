#include "ops/fp8_linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ops/fp8_gemm.h"

namespace shoestring::ops {

namespace {

// Each operand on its own device: CUDA kernels for CUDA tensors, the CPU reference quantizers and
// the emulated GEMM otherwise.
Fp8Tensor q_1x128(const at::Tensor& x) { return x.is_cuda() ? quantize_1x128_cuda(x) : quantize_1x128(x); }
Fp8Tensor q_1x128_t(const at::Tensor& x) {
  return x.is_cuda() ? quantize_1x128_transposed_cuda(x) : quantize_1x128_transposed(x);
}
Fp8Tensor q_128x128(const at::Tensor& w) { return w.is_cuda() ? quantize_128x128_cuda(w) : quantize_128x128(w); }
Fp8Tensor q_128x128_t(const at::Tensor& w) {
  return w.is_cuda() ? quantize_128x128_transposed_cuda(w) : quantize_128x128_transposed(w);
}
at::Tensor gemm(const Fp8Tensor& a, const Fp8Tensor& b) {
  return a.data.is_cuda() ? fp8_gemm_cuda(a, b) : fp8_gemm_emulated(a, b);
}

struct Fp8LinearFunction : public torch::autograd::Function<Fp8LinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
    ctx->save_for_backward({x2, w});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = w.size(0);
    return gemm(q_1x128(x2), q_128x128(w.contiguous())).to(x.scalar_type()).view(out_shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x2 = saved[0];
    const at::Tensor& w = saved[1];
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    const at::Tensor g = grads[0].reshape({-1, w.size(0)}).contiguous();
    const at::Tensor dx = gemm(q_1x128(g), q_128x128_t(w.contiguous()));  // [M, K]
    const at::Tensor dw = gemm(q_1x128_t(g), q_1x128_t(x2));               // [N, K]
    std::vector<int64_t> x_shape = grads[0].sizes().vec();
    x_shape.back() = w.size(1);
    return {dx.to(x_dtype).view(x_shape), dw.to(w.scalar_type())};
  }
};

}  // namespace

at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& w) { return Fp8LinearFunction::apply(x, w); }

at::Tensor fp8_gemm_emulated(const Fp8Tensor& a, const Fp8Tensor& b) {
  const int64_t K = a.cols(), KB = ceil_div(K, kFp8Block), N = b.rows();
  const at::Tensor ad = a.data.to(at::kFloat), bd = b.data.to(at::kFloat);  // exact decode
  // Scales of B per row of B: 128x128 blocks repeat each block-row scale over its 128 rows.
  const at::Tensor sb = b.block_rows == 1 ? b.scale : b.scale.repeat_interleave(b.block_rows, 0).narrow(0, 0, N);
  at::Tensor acc = at::zeros({a.rows(), N}, at::kFloat);
  for (int64_t kb = 0; kb < KB; ++kb) {
    const int64_t k0 = kb * kFp8Block, len = std::min(kFp8Block, K - k0);
    const at::Tensor partial = at::mm(ad.narrow(1, k0, len), bd.narrow(1, k0, len).t());
    // Promotion: acc += partial * (scale_a[m, kb] * scale_b[n, kb]), as in the reference.
    acc.add_(partial * (a.scale.select(1, kb).unsqueeze(1) * sb.select(1, kb).unsqueeze(0)));
  }
  return acc;
}

}  // namespace shoestring::ops
