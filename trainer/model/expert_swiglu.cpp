#include "trainer/model/expert_swiglu.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <stdexcept>
#include <string>

#include "ops/weight_grad_store.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

thread_local std::optional<uint64_t> weight_grad_slot;

// out = a @ b into a slice of a larger buffer (at::mm_out takes only an lvalue).
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// What the weight-gradient GEMMs read, handed from the input-gradient half of backward to the
// weight half (the same node, or ExpertWeightGrads at its own slot).
struct WeightGradInputs : torch::CustomClassHolder {
  at::Tensor x, p, g, gh1, gh3;  // rows, SwiGLU product, output gradient, up-projection gradients
  at::Tensor w1, w3, w2;
  std::vector<int64_t> counts;
};

// The GEMMs the per-op graph's mm backwards ran for each expert's weights, in the weights' dtypes.
tensor_list weight_grads(const WeightGradInputs& in) {
  const at::TensorOptions opt = in.x.options();
  at::Tensor gw1 = at::zeros(in.w1.sizes(), opt), gw3 = at::zeros(in.w3.sizes(), opt), gw2 = at::zeros(in.w2.sizes(), opt);
  int64_t off = 0;
  for (size_t e = 0; e < in.counts.size(); ++e) {
    const int64_t c = in.counts[e];
    if (c == 0) continue;
    const auto i = int64_t(e);
    mm_into(gw2[i], in.g.narrow(0, off, c).t(), in.p.narrow(0, off, c));
    const at::Tensor xe = in.x.narrow(0, off, c);
    mm_into(gw1[i], in.gh1.narrow(0, off, c).t(), xe);
    mm_into(gw3[i], in.gh3.narrow(0, off, c).t(), xe);
    off += c;
  }
  return {gw1.to(in.w1.scalar_type()), gw3.to(in.w3.scalar_type()), gw2.to(in.w2.scalar_type())};
}

// The weight half of backward: the gradients for w1, w3, w2, or, while a zero-bubble pipeline
// captures (ops/weight_grad_store.h) and the weights are leaves, none: a closure queued to add them
// to .grad at the schedule's W.
tensor_list weight_half(c10::intrusive_ptr<WeightGradInputs> in) {
  if (in->w1.is_leaf() && in->w3.is_leaf() && in->w2.is_leaf() && ops::WeightGradStore::capturing()) {
    ops::WeightGradStore::push([in] {
      const at::NoGradGuard no_grad;
      const tensor_list g = weight_grads(*in);
      ops::accumulate_grad(in->w1, g[0]);
      ops::accumulate_grad(in->w3, g[1]);
      ops::accumulate_grad(in->w2, g[2]);
    });
    return {at::Tensor(), at::Tensor(), at::Tensor()};
  }
  return weight_grads(*in);
}

// The weight half as a node of its own, at a slot taken earlier (ExpertWeightGradSlot): its one
// input is a token from the experts' node, its outputs go to the weights.
class ExpertWeightGrads final : public torch::autograd::Node {
 public:
  ExpertWeightGrads(uint64_t sequence_nr, c10::intrusive_ptr<WeightGradInputs> in)
      : Node(sequence_nr), in_(std::move(in)) {}
  torch::autograd::variable_list apply(torch::autograd::variable_list&& /*token*/) override {
    if (!in_->g.defined()) throw std::logic_error("expert_swiglu: backward reached the weight half before the input half");
    tensor_list g = weight_half(in_);
    in_.reset();  // frees the saved activations now, not with the graph
    return g;
  }
  std::string name() const override { return "ExpertSwiGLUWeightGrads"; }

 private:
  c10::intrusive_ptr<WeightGradInputs> in_;
};

// Each GEMM below is the one the per-op graph ran (at::linear's mm(x, w^T) forward; mm backward's
// choice of orientation for row-major operands, see linear.cpp), written into its slice of a
// buffer for all experts instead of into a fresh tensor that a cat or a select backward copies.
// `split`, when defined, is shared with an ExpertWeightGrads node reached through `token`; the
// weights then come in detached and this node computes only the input gradient.
struct ExpertSwiGLU : torch::autograd::Function<ExpertSwiGLU> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3,
                            const at::Tensor& w2, const std::vector<int64_t>& counts,
                            const c10::intrusive_ptr<WeightGradInputs>& split, const at::Tensor& /*token*/) {
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
    if (split) ctx->saved_data["split"] = c10::IValue::make_capsule(split);
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &h1 = saved[1], &a = saved[2], &h3 = saved[3], &p = saved[4];
    const at::Tensor &w1 = saved[5], &w3 = saved[6], &w2 = saved[7];
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const at::Tensor c1 = cast_like(w1, x), c3 = cast_like(w3, x), c2 = cast_like(w2, x);
    const at::Tensor g = grads[0].contiguous();
    const bool split = ctx->saved_data.count("split") > 0;
    const bool need_w = split || ctx->needs_input_grad(1) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3);

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

    c10::intrusive_ptr<WeightGradInputs> in =
        split ? c10::static_intrusive_pointer_cast<WeightGradInputs>(ctx->saved_data["split"].toCapsule())
              : c10::make_intrusive<WeightGradInputs>();
    in->x = x;
    in->p = p;
    in->g = g;
    in->gh1 = gh1;
    in->gh3 = gh3;
    in->counts = counts;
    if (split)  // the weight half runs at its slot; the token only has to reach it
      return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::empty({0}, x.options())};
    in->w1 = w1;
    in->w3 = w3;
    in->w2 = w2;
    const tensor_list gw = weight_half(in);
    return {gx, gw[0], gw[1], gw[2], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

ExpertWeightGradSlot::ExpertWeightGradSlot(std::optional<uint64_t> slot) : prev_(weight_grad_slot) {
  weight_grad_slot = slot;
}

ExpertWeightGradSlot::~ExpertWeightGradSlot() { weight_grad_slot = prev_; }

at::Tensor expert_swiglu(const at::Tensor& rows, const at::Tensor& w1, const at::Tensor& w3, const at::Tensor& w2,
                         const std::vector<int64_t>& counts) {
  int64_t total = 0;
  for (const int64_t c : counts) total += c;
  if (rows.dim() != 2 || total != rows.size(0) || int64_t(counts.size()) != w1.size(0))
    throw std::invalid_argument("expert_swiglu: " + std::to_string(counts.size()) + " expert counts summing to " +
                                std::to_string(total) + " for " + std::to_string(rows.size(0)) + " rows and " +
                                std::to_string(w1.size(0)) + " experts");
  const bool weights_need_grad = w1.requires_grad() || w3.requires_grad() || w2.requires_grad();
  if (!weight_grad_slot || !weights_need_grad || !at::GradMode::is_enabled())
    // (a defined token all the same: autograd records every tensor argument's device)
    return ExpertSwiGLU::apply(rows, w1, w3, w2, counts, c10::intrusive_ptr<WeightGradInputs>(),
                               at::empty({0}, rows.options()));

  auto in = c10::make_intrusive<WeightGradInputs>();
  in->w1 = w1;
  in->w3 = w3;
  in->w2 = w2;
  auto node = std::shared_ptr<ExpertWeightGrads>(new ExpertWeightGrads(*weight_grad_slot, in),
                                                 torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(w1, w3, w2));
  at::Tensor token = at::empty({0}, rows.options());
  torch::autograd::set_history(token, node);
  return ExpertSwiGLU::apply(rows, w1.detach(), w3.detach(), w2.detach(), counts, in, token);
}

}  // namespace shoestring::model
