#include "trainer/model/rms_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

namespace shoestring::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr int64_t kLanes = 16;  // independent partial sums, so the row reductions vectorise

// sum_k a[k] * b[k] in a fixed order (lanes, then the lanes in turn): the same bits on every
// thread count.
float dot(const float* a, const float* b, int64_t n) {
  float part[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += a[k + l] * b[k + l];
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += part[l];
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

// fp32 RMSNorm with a hand-written backward: one pass over x forward (the op-by-op form ran
// five kernels and autograd kept their intermediates), two backward. Rows are independent, so
// they split over threads; the weight gradient sums rows in order on one thread, so results do
// not depend on the thread count.
struct FusedRMSNorm : torch::autograd::Function<FusedRMSNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& weight, double eps) {
    const at::Tensor x = x_in.contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor y = at::empty_like(x), rstd = at::empty({rows}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* xi = xp + i * d;
        const float r = 1.0f / std::sqrt(dot(xi, xi, d) / float(d) + float(eps));
        rp[i] = r;
        float* yi = yp + i * d;
        for (int64_t k = 0; k < d; ++k) yi[k] = xi[k] * r * wp[k];
      }
    });
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }

  // With xhat = x * r: dL/dw = sum_rows g * xhat; dL/dx = r * (g w - xhat * mean(g w xhat)).
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &rstd = saved[2];
    const at::Tensor g = grads[0].contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    at::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) {
      gx = at::empty_like(x);
      float* gxp = gx.data_ptr<float>();
      at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
        std::vector<float> gw_row(size_t(d), 0.0f);
        for (int64_t i = begin; i < end; ++i) {
          const float *xi = xp + i * d, *gi = gp + i * d;
          for (int64_t k = 0; k < d; ++k) gw_row[size_t(k)] = gi[k] * wp[k];
          const float r = rp[i], c = dot(gw_row.data(), xi, d) * r * r * r / float(d);
          float* gxi = gxp + i * d;
          for (int64_t k = 0; k < d; ++k) gxi[k] = r * gw_row[size_t(k)] - c * xi[k];
        }
      });
    }
    if (ctx->needs_input_grad(1)) {
      std::vector<float> acc(size_t(d), 0.0f);
      for (int64_t i = 0; i < rows; ++i) {
        const float *xi = xp + i * d, *gi = gp + i * d, r = rp[i];
        for (int64_t k = 0; k < d; ++k) acc[size_t(k)] += gi[k] * (xi[k] * r);
      }
      gw = at::from_blob(acc.data(), {d}, weight.options()).clone();
    }
    return {gx, gw, at::Tensor()};
  }
};

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  if (x.device().is_cpu() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && x.numel() > 0)
    return FusedRMSNorm::apply(x, weight, eps_);
  const auto wide = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor xf = x.to(wide);
  const at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (y * weight.to(wide)).to(x.scalar_type());
}

}  // namespace shoestring::model
