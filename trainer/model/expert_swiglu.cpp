#include "trainer/model/expert_swiglu.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

#include "trainer/model/linear.h"

namespace shoestring::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// out = a @ b into a slice of a larger buffer (at::mm_out takes only an lvalue).
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// Each GEMM below is the one the per-op graph ran (at::linear's mm(x, w^T) forward; mm backward's
// choice of orientation for row-major operands, see linear.cpp), written into its slice of a
// buffer for all experts instead of into a fresh tensor that a cat or a select backward copies.
struct ExpertSwiGLU : torch::autograd::Function<ExpertSwiGLU> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3,
                            const at::Tensor& w2, const std::vector<int64_t>& counts) {
    const at::Tensor x = rows.contiguous();
    const at::Tensor c1 = cast_like(w1, x), c3 = cast_like(w3, x), c2 = cast_like(w2, x);
    const int64_t n = x.size(0), hidden = c1.size(1), d = c2.size(1);
    at::Tensor h1 = at::empty({n, hidden}, x.options()), h3 = at::empty({n, hidden}, x.options());
    at::Tensor out = at::empty({n, d}, x.options());
    int64_t off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      if (counts[e] == 0) continue;
      const at::Tensor xe = x.narrow(0, off, counts[e]);
      mm_into(h1.narrow(0, off, counts[e]), xe, c1[int64_t(e)].t());
      mm_into(h3.narrow(0, off, counts[e]), xe, c3[int64_t(e)].t());
      off += counts[e];
    }
    const at::Tensor a = at::silu(h1);
    const at::Tensor p = a * h3;
    off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      if (counts[e] == 0) continue;
      mm_into(out.narrow(0, off, counts[e]), p.narrow(0, off, counts[e]), c2[int64_t(e)].t());
      off += counts[e];
    }
    ctx->save_for_backward({x, h1, a, h3, p, w1, w3, w2});
    ctx->saved_data["counts"] = c10::IValue(counts);
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &h1 = saved[1], &a = saved[2], &h3 = saved[3], &p = saved[4];
    const at::Tensor &w1 = saved[5], &w3 = saved[6], &w2 = saved[7];
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const at::Tensor c1 = cast_like(w1, x), c3 = cast_like(w3, x), c2 = cast_like(w2, x);
    const at::Tensor g = grads[0].contiguous();
    const bool need_x = ctx->needs_input_grad(0);
    const bool need_w = ctx->needs_input_grad(1) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3);

    at::Tensor gp = at::empty_like(p);
    at::Tensor gw2 = need_w ? at::zeros_like(c2) : at::Tensor();
    int64_t off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      const int64_t c = counts[e];
      if (c == 0) continue;
      const at::Tensor ge = g.narrow(0, off, c);
      mm_into(gp.narrow(0, off, c), ge, c2[int64_t(e)]);
      if (need_w) mm_into(gw2[int64_t(e)], ge.t(), p.narrow(0, off, c));
      off += c;
    }
    const at::Tensor gh3 = gp * a;
    const at::Tensor gh1 = at::silu_backward(gp * h3, h1);

    at::Tensor gx = need_x ? at::empty_like(x) : at::Tensor();
    at::Tensor gw1 = need_w ? at::zeros_like(c1) : at::Tensor(), gw3 = need_w ? at::zeros_like(c3) : at::Tensor();
    off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      const int64_t c = counts[e];
      if (c == 0) continue;
      const auto i = int64_t(e);
      const at::Tensor xe = x.narrow(0, off, c), g1 = gh1.narrow(0, off, c), g3 = gh3.narrow(0, off, c);
      if (need_x) {
        const at::Tensor gxe = gx.narrow(0, off, c);
        mm_into(gxe, g1, c1[i]);
        gxe.add_(g3.mm(c3[i]));
      }
      if (need_w) {
        mm_into(gw1[i], g1.t(), xe);
        mm_into(gw3[i], g3.t(), xe);
      }
      off += c;
    }
    if (!need_w) return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    return {gx, gw1.to(w1.scalar_type()), gw3.to(w3.scalar_type()), gw2.to(w2.scalar_type()), at::Tensor()};
  }
};

}  // namespace

at::Tensor expert_swiglu(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2,
                         const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (const int64_t c : counts) total += c;
  if (rows.dim() != 2 || total != rows.size(0) || int64_t(counts.size()) != w1.size(0))
    throw std::invalid_argument("expert_swiglu: " + std::to_string(counts.size()) + " expert counts summing to " +
                                std::to_string(total) + " for " + std::to_string(rows.size(0)) + " rows and " +
                                std::to_string(w1.size(0)) + " experts");
  return ExpertSwiGLU::apply(rows, w1, w3, w2, counts);
}

}  // namespace shoestring::model
