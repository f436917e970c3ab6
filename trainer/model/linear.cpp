#include "trainer/model/linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ops/weight_grad_slot.h"

namespace shoestring::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// True when a [rows, cols] matrix is stored column by column. Autograd's mm backward
// (FunctionsManual.cpp, mm_mat1_backward / mm_mat2_backward) picks its GEMM orientation on this,
// and a different orientation rounds differently; we follow the same choice so that gradients
// stay bit-identical to at::linear's.
bool column_major(const at::Tensor& m) { return m.stride(0) == 1 && m.stride(1) == m.size(0); }

// dL/dw of y = x2 @ wc^T from the 2-D views, as at::linear's autograd computes it (MmBackward on
// mat2 = wc^T, then TBackward), in wc's dtype.
at::Tensor weight_grad(const at::Tensor& g2, const at::Tensor& x2, bool wc_row_major) {
  return wc_row_major ? g2.t().mm(x2) : x2.t().mm(g2).t();
}

// y = x @ cast(w)^T whose weight gradient can be split off the backward pass (zero-bubble
// pipelines, ops/weight_grad_store.h). Whether to split is decided in backward, not forward: the
// forward runs before the schedule knows which kind of backward will follow.
struct DeferrableLinear : torch::autograd::Function<DeferrableLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    const at::Tensor wc = cast_like(w, x);
    ctx->save_for_backward({x, wc, w});
    return at::linear(x, wc);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &wc = saved[1], &w = saved[2];
    const int64_t in = wc.size(1), out = wc.size(0);
    // at::linear without bias is matmul(x, wc^T), which folds a >2-D x into rows (reshape) and
    // runs one mm: these are that mm's operands and output gradient.
    const at::Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, in});
    const at::Tensor g2 = grads[0].dim() == 2 ? grads[0] : grads[0].reshape({-1, out});

    at::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      grad_x = column_major(x2) ? wc.t().mm(g2.t()).t() : g2.mm(wc);
      if (x.dim() != 2) grad_x = grad_x.reshape(x.sizes());
    }
    if (!ctx->needs_input_grad(1)) return {grad_x, at::Tensor()};

    const bool wc_row_major = column_major(wc.t());
    const at::ScalarType w_dtype = w.scalar_type();
    return {grad_x, ops::weight_grads({}, {w}, [g2, x2, wc_row_major, w_dtype] {
              return std::vector<at::Tensor>{weight_grad(g2, x2, wc_row_major).to(w_dtype)};
            })[0]};
  }
};

}  // namespace

at::Tensor project(const at::Tensor& x, const at::Tensor& w) {
  // Without a weight gradient there is nothing to defer: keep the plain op (no graph node of ours).
  if (x.dim() < 2 || !w.requires_grad() || !at::GradMode::is_enabled()) return at::linear(x, cast_like(w, x));
  return DeferrableLinear::apply(x, w);
}

at::Tensor LinearUser::swiglu_mlp(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w3,
                                  const at::Tensor& w2) const {
  return mlp_fn_ ? mlp_fn_(x, w1, w3, w2) : project(at::silu(project(x, w1)) * project(x, w3), w2);
}

at::Tensor normal_weight(int64_t out, int64_t in, double std) { return at::randn({out, in}) * std; }

}  // namespace shoestring::model
