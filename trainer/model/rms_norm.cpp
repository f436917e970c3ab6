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

// The row loops work in blocks of kLanes with restrict pointers, a shape the compiler
// vectorises at -O2; the tails (d not a multiple of kLanes) run scalar.
constexpr int64_t kLanes = 16;

// sum_k a[k] * b[k] in a fixed order (lanes, then the lanes in turn): the same bits on every
// thread count.
float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float part[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += a[k + l] * b[k + l];
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += part[l];
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

// out[k] = a[k] * s * b[k]
void scaled_product(float* __restrict out, const float* __restrict a, const float* __restrict b, float s, int64_t n) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) out[k + l] = a[k + l] * s * b[k + l];
  for (; k < n; ++k) out[k] = a[k] * s * b[k];
}

// out[k] = s * a[k] - t * b[k]
void scaled_difference(float* __restrict out, const float* __restrict a, float s, const float* __restrict b, float t,
                       int64_t n) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) out[k + l] = s * a[k + l] - t * b[k + l];
  for (; k < n; ++k) out[k] = s * a[k] - t * b[k];
}

// acc[k] += g[k] * (x[k] * r)
void accumulate_product(float* __restrict acc, const float* __restrict g, const float* __restrict x, float r,
                        int64_t n) {
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[k + l] += g[k + l] * (x[k + l] * r);
  for (; k < n; ++k) acc[k] += g[k] * (x[k] * r);
}

// fp32 RMSNorm with a hand-written backward: one pass over x forward (the op-by-op form ran
// five kernels and autograd kept their intermediates), two backward. Rows are independent, so
// they split over threads; the weight gradient sums rows in order on one thread, so results do
// not depend on the thread count.
struct FusedRMSNorm : torch::autograd::Function<FusedRMSNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w_in, double eps) {
    const at::Tensor x = x_in.contiguous(), weight = w_in.contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor y = at::empty_like(x), rstd = at::empty({rows}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* xi = xp + i * d;
        const float r = 1.0f / std::sqrt(dot(xi, xi, d) / float(d) + float(eps));
        rp[i] = r;
        scaled_product(yp + i * d, xi, wp, r, d);
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
        std::vector<float> gw_row(static_cast<size_t>(d));  // g * w of one row
        for (int64_t i = begin; i < end; ++i) {
          const float *xi = xp + i * d, *gi = gp + i * d;
          scaled_product(gw_row.data(), gi, wp, 1.0f, d);
          const float r = rp[i], c = dot(gw_row.data(), xi, d) * r * r * r / float(d);
          scaled_difference(gxp + i * d, gw_row.data(), r, xi, c, d);
        }
      });
    }
    if (ctx->needs_input_grad(1)) {
      std::vector<float> acc(size_t(d), 0.0f);
      for (int64_t i = 0; i < rows; ++i) accumulate_product(acc.data(), gp + i * d, xp + i * d, rp[i], d);
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
