#include "trainer/model/expert_swiglu.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

#include "ops/weight_grad_slot.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// out = a @ b into a slice of a larger buffer (at::mm_out takes only an lvalue).
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// The weight gradients from what backward's input half leaves: the GEMMs the per-op graph's mm
// backwards ran for each expert's weights, in the weights' dtypes.
std::vector<at::Tensor> expert_weight_grads(const at::Tensor& x, const at::Tensor& p, const at::Tensor& g,
                                            const at::Tensor& gh1, const at::Tensor& gh3, const at::Tensor& w1,
                                            const at::Tensor& w3, const at::Tensor& w2,
                                            const std::vector<int64_t>& counts) {
  at::Tensor gw1 = at::zeros(w1.sizes(), x.options()), gw3 = at::zeros(w3.sizes(), x.options()),
             gw2 = at::zeros(w2.sizes(), x.options());
  int64_t off = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t c = counts[e];
    if (c == 0) continue;
    const auto i = int64_t(e);
    mm_into(gw2[i], g.narrow(0, off, c).t(), p.narrow(0, off, c));
    const at::Tensor xe = x.narrow(0, off, c);
    mm_into(gw1[i], gh1.narrow(0, off, c).t(), xe);
    mm_into(gw3[i], gh3.narrow(0, off, c).t(), xe);
    off += c;
  }
  return {gw1.to(w1.scalar_type()), gw3.to(w3.scalar_type()), gw2.to(w2.scalar_type())};
}

// Each GEMM below is the one the per-op graph ran (at::linear's mm(x, w^T) forward; mm backward's
// choice of orientation for row-major operands, see linear.cpp), written into its slice of a
// buffer for all experts instead of into a fresh tensor that a cat or a select backward copies.
// Under a weight-gradient slot (ops/weight_grad_slot.h) the weights come in detached and `token`
// leads to the slot's node, which runs the weight GEMMs; this node computes the input gradient.
struct ExpertSwiGLU : torch::autograd::Function<ExpertSwiGLU> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3,
                            const at::Tensor& w2, const std::vector<int64_t>& counts,
                            const c10::intrusive_ptr<ops::WeightGradTicket>& ticket, const at::Tensor& /*token*/) {
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
    ctx->saved_data["slot"] = ops::save_ticket(ticket);
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &h1 = saved[1], &a = saved[2], &h3 = saved[3], &p = saved[4];
    const at::Tensor &w1 = saved[5], &w3 = saved[6], &w2 = saved[7];
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const at::Tensor c1 = cast_like(w1, x), c3 = cast_like(w3, x), c2 = cast_like(w2, x);
    const at::Tensor g = grads[0].contiguous();
    const auto ticket = ops::saved_ticket(ctx->saved_data["slot"]);
    const bool need_w = ticket || ctx->needs_input_grad(1) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3);

    // The input half: through w2 and the SwiGLU to the up projections' gradients, then to the rows.
    at::Tensor gp = at::empty_like(p);
    int64_t off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      const int64_t c = counts[e];
      if (c == 0) continue;
      mm_into(gp.narrow(0, off, c), g.narrow(0, off, c), c2[int64_t(e)]);
      off += c;
    }
    const at::Tensor gh3 = gp * a;
    const at::Tensor gh1 = at::silu_backward(gp * h3, h1);
    at::Tensor gx;
    if (ctx->needs_input_grad(0)) {
      gx = at::empty_like(x);
      off = 0;
      for (size_t e = 0; e < counts.size(); ++e) {
        const int64_t c = counts[e];
        if (c == 0) continue;
        const auto i = int64_t(e);
        const at::Tensor gxe = gx.narrow(0, off, c);
        mm_into(gxe, gh1.narrow(0, off, c), c1[i]);
        gxe.add_(gh3.narrow(0, off, c).mm(c3[i]));
        off += c;
      }
    }
    if (!need_w) return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};

    const auto gw = ops::weight_grads(ticket, {w1, w3, w2}, [x, p, g, gh1, gh3, w1, w3, w2, counts] {
      return expert_weight_grads(x, p, g, gh1, gh3, w1, w3, w2, counts);
    });
    return {gx, gw[0], gw[1], gw[2], at::Tensor(), at::Tensor(), ops::token_grad(ticket, x.options())};
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
  const ops::SlottedWeights s({w1, w3, w2}, rows.options());
  return ExpertSwiGLU::apply(rows, s.weights[0], s.weights[1], s.weights[2], counts, s.ticket, s.token);
}

}  // namespace shoestring::model
