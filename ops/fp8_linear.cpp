#include "ops/fp8_linear.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

#include "ops/fp8_gemm.h"
#include "ops/weight_grad_slot.h"

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
Fp8Tensor q_swiglu(const at::Tensor& h1, const at::Tensor& h3) {
  return h1.is_cuda() ? quantize_swiglu_1x128_cuda(h1, h3) : quantize_swiglu_1x128(h1, h3);
}
// A function's registration with an open weight-gradient slot, or null (ops/weight_grad_slot.h).
using Ticket = c10::intrusive_ptr<WeightGradTicket>;

at::Tensor gemm(const Fp8Tensor& a, const Fp8Tensor& b) {
  return a.data.is_cuda() ? fp8_gemm_cuda(a, b) : fp8_gemm_emulated(a, b);
}

struct Fp8LinearFunction : public torch::autograd::Function<Fp8LinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const Ticket& ticket, const at::Tensor& /*token*/) {
    const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
    ctx->save_for_backward({x2, w});
    ctx->saved_data["slot"] = save_ticket(ticket);
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
    const auto ticket = saved_ticket(ctx->saved_data["slot"]);
    const auto dw = weight_grads(ticket, {w}, [g, x2, dtype = w.scalar_type()] {  // [N, K]
      return std::vector<at::Tensor>{gemm(q_1x128_t(g), q_1x128_t(x2)).to(dtype)};
    });
    std::vector<int64_t> x_shape = grads[0].sizes().vec();
    x_shape.back() = w.size(1);
    return {dx.to(x_dtype).view(x_shape), dw[0], at::Tensor(), token_grad(ticket, x2.options())};
  }
};

struct Fp8LinearPairFunction : public torch::autograd::Function<Fp8LinearPairFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& wa, const at::Tensor& wb,
                                                const Ticket& ticket, const at::Tensor& /*token*/) {
    const at::Tensor x2 = x.reshape({-1, x.size(-1)}).contiguous();
    ctx->save_for_backward({x2, wa, wb});
    ctx->saved_data["slot"] = save_ticket(ticket);
    const Fp8Tensor qx = q_1x128(x2);
    torch::autograd::variable_list out;
    for (const at::Tensor* w : {&wa, &wb}) {
      std::vector<int64_t> shape = x.sizes().vec();
      shape.back() = w->size(0);
      out.push_back(gemm(qx, q_128x128(w->contiguous())).to(x.scalar_type()).view(shape));
    }
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x2 = saved[0];
    at::Tensor dx;
    std::array<at::Tensor, 2> g;  // undefined where that output was not used
    for (int i = 0; i < 2; ++i) {
      const at::Tensor& w = saved[size_t(1 + i)];
      if (!grads[size_t(i)].defined()) continue;
      g[size_t(i)] = grads[size_t(i)].reshape({-1, w.size(0)}).contiguous();
      const at::Tensor dxi = gemm(q_1x128(g[size_t(i)]), q_128x128_t(w.contiguous())).to(x2.scalar_type());
      dx = dx.defined() ? dx + dxi : dxi;  // autograd's sum of the two uses of x, in the same dtype
    }
    const auto ticket = saved_ticket(ctx->saved_data["slot"]);
    const at::Tensor &wa = saved[1], &wb = saved[2];
    // Both Wgrads' second operand, quantized now: a deferred closure then holds 1 byte per element.
    const auto dw = weight_grads(ticket, {wa, wb}, [g, qxt = q_1x128_t(x2), wa, wb] {
      std::vector<at::Tensor> out;
      for (int i = 0; i < 2; ++i) {
        const at::Tensor& w = i == 0 ? wa : wb;
        const at::Tensor& gi = g[size_t(i)];
        out.push_back(gi.defined() ? gemm(q_1x128_t(gi), qxt).to(w.scalar_type()) : at::zeros_like(w));
      }
      return out;
    });
    std::vector<int64_t> x_shape = (grads[0].defined() ? grads[0] : grads[1]).sizes().vec();
    x_shape.back() = x2.size(1);
    return {dx.defined() ? dx.view(x_shape) : at::Tensor(), dw[0], dw[1], at::Tensor(),
            token_grad(ticket, x2.options())};
  }
};

// What backward of the fused SwiGLU down projection shares: from dp, the gradient of the product
// p = silu(h1) * h3 in h1's dtype, and the recomputed a = silu(h1), the gradients of h1 and h3 as
// autograd forms them for the unfused at::silu(h1) * h3 (mul's backward, then silu_backward).
std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& dp, const at::Tensor& h1, const at::Tensor& a,
                                                  const at::Tensor& h3) {
  return {at::silu_backward(dp * h3, h1), dp * a};
}

struct Fp8SwigluLinearFunction : public torch::autograd::Function<Fp8SwigluLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h1, const at::Tensor& h3,
                            const at::Tensor& w, const Ticket& ticket, const at::Tensor& /*token*/) {
    const at::Tensor a2 = h1.reshape({-1, h1.size(-1)}).contiguous(), b2 = h3.reshape({-1, h3.size(-1)}).contiguous();
    ctx->save_for_backward({a2, b2, w});
    ctx->saved_data["slot"] = save_ticket(ticket);
    std::vector<int64_t> out_shape = h1.sizes().vec();
    out_shape.back() = w.size(0);
    return gemm(q_swiglu(a2, b2), q_128x128(w.contiguous())).to(h1.scalar_type()).view(out_shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h1 = saved[0], &h3 = saved[1], &w = saved[2];
    const at::Tensor g = grads[0].reshape({-1, w.size(0)}).contiguous();
    const at::Tensor dp = gemm(q_1x128(g), q_128x128_t(w.contiguous())).to(h1.scalar_type());  // [M, H]
    const at::Tensor a = at::silu(h1);
    const auto ticket = saved_ticket(ctx->saved_data["slot"]);
    const auto dw = weight_grads(ticket, {w}, [g, a, h3, dtype = w.scalar_type()] {  // [N, H]
      return std::vector<at::Tensor>{gemm(q_1x128_t(g), q_1x128_t(a * h3)).to(dtype)};
    });
    auto [dh1, dh3] = swiglu_backward(dp, h1, a, h3);
    std::vector<int64_t> h_shape = grads[0].sizes().vec();
    h_shape.back() = w.size(1);
    return {dh1.view(h_shape), dh3.view(h_shape), dw[0], at::Tensor(), token_grad(ticket, h1.options())};
  }
};

// Rows of each group at a 128-aligned offset: each group's first padded row and padded row count,
// the padded total, and on the rows' device where row i of the sorted input goes and each padded
// row's group.
struct PaddedLayout {
  std::vector<int64_t> start;   // [G] first padded row of each group
  std::vector<int64_t> rows;    // [G] the group's rows rounded up to a multiple of 128
  int64_t padded_rows = 0;
  at::Tensor position;          // int64 [M]
  at::Tensor group_of_row;      // int32 [Mp], -1 for padding (make_contiguous_group_layout)
};

// The host part only: what backward needs besides the device tensors forward already made.
PaddedLayout host_layout(const std::vector<int64_t>& counts) {
  PaddedLayout l;
  for (const int64_t c : counts) {
    l.start.push_back(l.padded_rows);
    l.rows.push_back(ceil_div(c, kFp8Block) * kFp8Block);
    l.padded_rows += l.rows.back();
  }
  return l;
}

PaddedLayout padded_layout(const std::vector<int64_t>& counts, const at::Device& device) {
  PaddedLayout l = host_layout(counts);
  std::vector<int64_t> position;
  for (size_t g = 0; g < counts.size(); ++g)
    for (int64_t r = 0; r < counts[g]; ++r) position.push_back(l.start[g] + r);
  l.position = at::tensor(position, at::kLong).to(device);
  l.group_of_row = make_contiguous_group_layout(counts).to(device);
  return l;
}

// A [Mp, K] padded-layout operand times each group's [N, K] weight -> [Mp, N] float, padding rows 0.
at::Tensor grouped_gemm(const Fp8Tensor& a, const Fp8Tensor& b, const PaddedLayout& l,
                        const std::vector<int64_t>& counts) {
  if (a.data.is_cuda()) return fp8_grouped_gemm_cuda(a, b, l.group_of_row);
  at::Tensor c = at::zeros({a.rows(), b.rows()}, at::kFloat);
  for (size_t g = 0; g < counts.size(); ++g) {
    if (counts[g] == 0) continue;
    const int64_t r0 = l.start[g], n = l.rows[g];
    const auto i = int64_t(g);
    c.narrow(0, r0, n).copy_(fp8_gemm_emulated({a.data.narrow(0, r0, n), a.scale.narrow(0, r0, n), 1},
                                               {b.data[i], b.scale[i], b.block_rows}));
  }
  return c;
}

at::Tensor scatter_rows(const at::Tensor& rows, const PaddedLayout& l) {
  return at::zeros({l.padded_rows, rows.size(1)}, rows.options()).index_copy_(0, l.position, rows);
}

// What a grouped function's backward needs of forward's layout: the counts and the device tensors
// (kept, not rebuilt and uploaded again).
void save_layout(torch::autograd::AutogradContext* ctx, const PaddedLayout& l, const std::vector<int64_t>& counts) {
  ctx->saved_data["counts"] = c10::IValue(counts);
  ctx->saved_data["position"] = l.position;
  ctx->saved_data["group_of_row"] = l.group_of_row;
}
PaddedLayout saved_layout(torch::autograd::AutogradContext* ctx, std::vector<int64_t>& counts) {
  counts = ctx->saved_data["counts"].toIntVector();
  PaddedLayout l = host_layout(counts);
  l.position = ctx->saved_data["position"].toTensor();
  l.group_of_row = ctx->saved_data["group_of_row"].toTensor();
  return l;
}

// Dgrad of a grouped linear, back in the rows' order: W^T of each group blocked 128x128 is the
// transposed blocks of W (quantize_128x128 of the transposed copy gives the codes and scales of
// quantize_128x128_transposed).
at::Tensor grouped_dgrad(const at::Tensor& gp, const at::Tensor& w, const PaddedLayout& l,
                         const std::vector<int64_t>& counts) {
  return grouped_gemm(q_1x128(gp), q_128x128(w.transpose(1, 2).contiguous()), l, counts).index_select(0, l.position);
}

// Wgrad of all groups: dW[g] = gp_g^T . xp_g over each group's padded rows, from the padded
// gradient and the transposed padded input (xt = q_1x128_t(xp), quantized once for all groups: the
// groups start on 128-row boundaries, so its tiles are each group's own). One k-grouped GEMM on
// CUDA; on the CPU one emulated GEMM per group on copies of its columns, the very operands a
// per-group quantization gives. An idle group's gradient is zero.
at::Tensor grouped_wgrad(const at::Tensor& gp, const Fp8Tensor& xt, const PaddedLayout& l, const at::Tensor& w) {
  const Fp8Tensor gt = q_1x128_t(gp);
  if (gt.data.is_cuda()) return fp8_k_grouped_gemm_cuda(gt, xt, l.rows).to(w.scalar_type());
  at::Tensor dw = at::zeros_like(w);
  auto columns = [](const Fp8Tensor& t, int64_t start, int64_t rows) -> Fp8Tensor {
    return {t.data.narrow(1, start, rows).contiguous(),
            t.scale.narrow(1, start / kFp8Block, rows / kFp8Block).contiguous(), 1};
  };
  for (size_t g = 0; g < l.rows.size(); ++g)
    if (l.rows[g] > 0)
      dw[int64_t(g)].copy_(fp8_gemm_emulated(columns(gt, l.start[g], l.rows[g]), columns(xt, l.start[g], l.rows[g])));
  return dw;
}

struct Fp8GroupedLinearFunction : public torch::autograd::Function<Fp8GroupedLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& w,
                            const std::vector<int64_t>& counts, const Ticket& ticket, const at::Tensor& /*token*/) {
    const PaddedLayout l = padded_layout(counts, rows.device());
    const at::Tensor xp = scatter_rows(rows.contiguous(), l);
    ctx->save_for_backward({xp, w});
    ctx->saved_data["slot"] = save_ticket(ticket);
    save_layout(ctx, l, counts);
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(rows.scalar_type());
    const at::Tensor yp = grouped_gemm(q_1x128(xp), q_128x128(w.contiguous()), l, counts);
    return yp.index_select(0, l.position).to(rows.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& xp = saved[0];
    const at::Tensor& w = saved[1];
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    std::vector<int64_t> counts;
    const PaddedLayout l = saved_layout(ctx, counts);
    const at::Tensor gp = scatter_rows(grads[0].contiguous(), l);
    const at::Tensor dx = grouped_dgrad(gp, w, l, counts).to(x_dtype);
    const auto ticket = saved_ticket(ctx->saved_data["slot"]);
    const auto dw = weight_grads(ticket, {w}, [gp, xp, l, w] {
      return std::vector<at::Tensor>{grouped_wgrad(gp, q_1x128_t(xp), l, w)};
    });
    return {dx, dw[0], at::Tensor(), at::Tensor(), token_grad(ticket, xp.options())};
  }
};

struct Fp8GroupedLinearPairFunction : public torch::autograd::Function<Fp8GroupedLinearPairFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows,
                                                const at::Tensor& wa, const at::Tensor& wb,
                                                const std::vector<int64_t>& counts, const Ticket& ticket,
                                                const at::Tensor& /*token*/) {
    const PaddedLayout l = padded_layout(counts, rows.device());
    const at::Tensor xp = scatter_rows(rows.contiguous(), l);
    ctx->save_for_backward({xp, wa, wb});
    ctx->saved_data["slot"] = save_ticket(ticket);
    save_layout(ctx, l, counts);
    const Fp8Tensor qx = q_1x128(xp);
    torch::autograd::variable_list out;
    for (const at::Tensor* w : {&wa, &wb})
      out.push_back(grouped_gemm(qx, q_128x128(w->contiguous()), l, counts).index_select(0, l.position).to(rows.scalar_type()));
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& xp = saved[0];
    std::vector<int64_t> counts;
    const PaddedLayout l = saved_layout(ctx, counts);
    at::Tensor dx;
    std::array<at::Tensor, 2> gp;  // undefined where that output was not used
    for (int i = 0; i < 2; ++i) {
      const at::Tensor& w = saved[size_t(1 + i)];
      if (!grads[size_t(i)].defined()) continue;
      gp[size_t(i)] = scatter_rows(grads[size_t(i)].contiguous(), l);
      const at::Tensor dxi = grouped_dgrad(gp[size_t(i)], w, l, counts).to(xp.scalar_type());
      dx = dx.defined() ? dx + dxi : dxi;
    }
    const auto ticket = saved_ticket(ctx->saved_data["slot"]);
    const at::Tensor &wa = saved[1], &wb = saved[2];
    // For both Wgrads, quantized now: a deferred closure then holds 1 byte per element.
    const auto dw = weight_grads(ticket, {wa, wb}, [gp, xt = q_1x128_t(xp), l, wa, wb] {
      std::vector<at::Tensor> out;
      for (int i = 0; i < 2; ++i) {
        const at::Tensor& w = i == 0 ? wa : wb;
        out.push_back(gp[size_t(i)].defined() ? grouped_wgrad(gp[size_t(i)], xt, l, w) : at::zeros_like(w));
      }
      return out;
    });
    return {dx, dw[0], dw[1], at::Tensor(), at::Tensor(), token_grad(ticket, xp.options())};
  }
};

// A 1x128-quantized [M, K] operand in the padded layout: its rows at l.position, padding rows with
// zero codes and the scale of an all-zero tile, which is what quantizing the zero-padded rows gives.
Fp8Tensor pad_quantized(const Fp8Tensor& q, const PaddedLayout& l) {
  Fp8Tensor p;
  p.block_rows = 1;
  p.data = at::zeros({l.padded_rows, q.cols()}, q.data.options().dtype(at::kByte))
               .index_copy_(0, l.position, q.data.view(at::kByte))
               .view(at::kFloat8_e4m3fn);
  p.scale = at::full({l.padded_rows, q.scale.size(1)}, fp8_tile_scale(0.0f).scale, q.scale.options())
                .index_copy_(0, l.position, q.scale);
  return p;
}

struct Fp8GroupedSwigluLinearFunction : public torch::autograd::Function<Fp8GroupedSwigluLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h1, const at::Tensor& h3,
                            const at::Tensor& w, const std::vector<int64_t>& counts, const Ticket& ticket,
                            const at::Tensor& /*token*/) {
    const PaddedLayout l = padded_layout(counts, h1.device());
    const at::Tensor a = h1.contiguous(), b = h3.contiguous();
    ctx->save_for_backward({a, b, w});
    ctx->saved_data["slot"] = save_ticket(ticket);
    save_layout(ctx, l, counts);
    // Quantized before padding: a 1x128 tile is one row, so the rows' codes and scales are the same.
    const at::Tensor yp = grouped_gemm(pad_quantized(q_swiglu(a, b), l), q_128x128(w.contiguous()), l, counts);
    return yp.index_select(0, l.position).to(h1.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h1 = saved[0], &h3 = saved[1], &w = saved[2];
    std::vector<int64_t> counts;
    const PaddedLayout l = saved_layout(ctx, counts);
    const at::Tensor gp = scatter_rows(grads[0].contiguous(), l);
    const at::Tensor dp = grouped_dgrad(gp, w, l, counts).to(h1.scalar_type());
    const at::Tensor a = at::silu(h1);
    const at::Tensor pp = scatter_rows(a * h3, l);  // the product, recomputed, padded for Wgrad
    const auto ticket = saved_ticket(ctx->saved_data["slot"]);
    const auto dw = weight_grads(ticket, {w}, [gp, pp, l, w] {
      return std::vector<at::Tensor>{grouped_wgrad(gp, q_1x128_t(pp), l, w)};
    });
    auto [dh1, dh3] = swiglu_backward(dp, h1, a, h3);
    return {dh1, dh3, dw[0], at::Tensor(), at::Tensor(), token_grad(ticket, h1.options())};
  }
};

void check_grouped(const char* what, const at::Tensor& rows, const at::Tensor& w, const std::vector<int64_t>& counts) {
  if (rows.dim() != 2 || w.dim() != 3 || rows.size(1) != w.size(2) || int64_t(counts.size()) != w.size(0))
    throw std::invalid_argument(std::string(what) + ": need rows [M, K], w [G, N, K] and G counts");
  int64_t total = 0;
  for (const int64_t c : counts) {
    if (c < 0) throw std::invalid_argument(std::string(what) + ": negative count");
    total += c;
  }
  if (total != rows.size(0))
    throw std::invalid_argument(std::string(what) + ": counts sum to " + std::to_string(total) + ", rows has " +
                                std::to_string(rows.size(0)));
  if (rows.is_cuda() && (w.size(1) % kFp8Block != 0 || w.size(2) % kFp8Block != 0))
    throw std::invalid_argument(std::string(what) + ": on CUDA N and K must be multiples of 128, w is [" +
                                std::to_string(w.size(0)) + ", " + std::to_string(w.size(1)) + ", " +
                                std::to_string(w.size(2)) + "]");
}

}  // namespace

at::Tensor fp8_linear(const at::Tensor& x, const at::Tensor& w) {
  const SlottedWeights s({w}, x.options());
  return Fp8LinearFunction::apply(x, s.weights[0], s.ticket, s.token);
}

std::array<at::Tensor, 2> fp8_linear_pair(const at::Tensor& x, const at::Tensor& wa, const at::Tensor& wb) {
  if (x.dim() < 1 || wa.dim() != 2 || wb.dim() != 2 || wa.size(1) != x.size(-1) || wb.size(1) != x.size(-1))
    throw std::invalid_argument("fp8_linear_pair: need x [..., K] and wa, wb [N, K]");
  const SlottedWeights s({wa, wb}, x.options());
  const auto out = Fp8LinearPairFunction::apply(x, s.weights[0], s.weights[1], s.ticket, s.token);
  return {out[0], out[1]};
}

std::array<at::Tensor, 2> fp8_grouped_linear_pair(const at::Tensor& rows, const at::Tensor& wa, const at::Tensor& wb,
                                                  const std::vector<int64_t>& counts) {
  check_grouped("fp8_grouped_linear_pair", rows, wa, counts);
  check_grouped("fp8_grouped_linear_pair", rows, wb, counts);
  const SlottedWeights s({wa, wb}, rows.options());
  const auto out = Fp8GroupedLinearPairFunction::apply(rows, s.weights[0], s.weights[1], counts, s.ticket, s.token);
  return {out[0], out[1]};
}

at::Tensor fp8_swiglu_linear(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w) {
  if (h1.sizes() != h3.sizes() || h1.scalar_type() != h3.scalar_type() || h1.dim() < 1 || h1.size(-1) != w.size(1))
    throw std::invalid_argument("fp8_swiglu_linear: need h1 and h3 [..., H] of one shape and dtype and w [N, H]");
  const SlottedWeights s({w}, h1.options());
  return Fp8SwigluLinearFunction::apply(h1, h3, s.weights[0], s.ticket, s.token);
}

at::Tensor fp8_grouped_swiglu_linear(const at::Tensor& h1, const at::Tensor& h3, const at::Tensor& w,
                                     const std::vector<int64_t>& counts) {
  if (h1.sizes() != h3.sizes() || h1.scalar_type() != h3.scalar_type())
    throw std::invalid_argument("fp8_grouped_swiglu_linear: h1 and h3 must have one shape and dtype");
  check_grouped("fp8_grouped_swiglu_linear", h1, w, counts);
  const SlottedWeights s({w}, h1.options());
  return Fp8GroupedSwigluLinearFunction::apply(h1, h3, s.weights[0], counts, s.ticket, s.token);
}

at::Tensor fp8_grouped_linear(const at::Tensor& rows, const at::Tensor& w, const std::vector<int64_t>& counts) {
  check_grouped("fp8_grouped_linear", rows, w, counts);
  const SlottedWeights s({w}, rows.options());
  return Fp8GroupedLinearFunction::apply(rows, s.weights[0], counts, s.ticket, s.token);
}

at::Tensor fp8_gemm_emulated(const Fp8Tensor& a, const Fp8Tensor& b) {
  const int64_t K = a.cols(), KB = ceil_div(K, kFp8Block), N = b.rows();
  const at::Tensor ad = decode_codes(a.data), bd = decode_codes(b.data);  // exact
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
