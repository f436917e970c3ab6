#include "ops/weight_grad_slot.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <stdexcept>
#include <utility>

#include "ops/weight_grad_store.h"

namespace shoestring::ops {

// One function's weight gradients at a slot: its one input is the function's token, its outputs
// go to the function's weights. Each function under a slot has its own (a node takes no new edges
// once another points at it); those of one slot share its sequence number, so autograd runs them
// together, in some order among themselves.
class WeightGradSlotNode final : public torch::autograd::Node {
 public:
  WeightGradSlotNode(uint64_t sequence_nr, std::vector<at::Tensor> weights)
      : Node(sequence_nr), weights_(std::move(weights)) {
    for (const at::Tensor& w : weights_) add_next_edge(torch::autograd::impl::gradient_edge(w));
  }
  void set(WeightGradsFn compute) { compute_ = std::move(compute); }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& /*token*/) override {
    if (!compute_) throw std::logic_error("WeightGradSlot: backward reached the slot before its function");
    // Taken out: frees what the closure holds now, not with the graph.
    return weight_grads({}, weights_, std::exchange(compute_, nullptr));
  }
  std::string name() const override { return "WeightGradSlot"; }

 private:
  std::vector<at::Tensor> weights_;  // the originals, for the leaf check of a capture
  WeightGradsFn compute_;            // set by the function's backward
};

namespace {

thread_local std::optional<uint64_t> current_slot;

}  // namespace

WeightGradSlot::WeightGradSlot(std::optional<uint64_t> slot) : prev_(current_slot) { current_slot = slot; }

WeightGradSlot::~WeightGradSlot() { current_slot = prev_; }

SlottedWeights::SlottedWeights(const std::vector<at::Tensor>& ws, const at::TensorOptions& token_options)
    : token(at::empty({0}, token_options)) {
  bool any = false;
  for (const at::Tensor& w : ws) any = any || w.requires_grad();
  if (!current_slot || !any || !at::GradMode::is_enabled()) {
    weights = ws;
    return;
  }
  for (const at::Tensor& w : ws) weights.push_back(w.detach());
  auto node = std::shared_ptr<WeightGradSlotNode>(new WeightGradSlotNode(*current_slot, ws),
                                                  torch::autograd::deleteNode);
  torch::autograd::set_history(token, node);
  ticket = c10::make_intrusive<WeightGradTicket>();
  ticket->node = std::move(node);
}

c10::IValue save_ticket(const c10::intrusive_ptr<WeightGradTicket>& ticket) {
  return ticket ? c10::IValue::make_capsule(ticket) : c10::IValue();
}

c10::intrusive_ptr<WeightGradTicket> saved_ticket(const c10::IValue& v) {
  if (!v.isCapsule()) return {};
  return c10::static_intrusive_pointer_cast<WeightGradTicket>(v.toCapsule());
}

std::vector<at::Tensor> weight_grads(const c10::intrusive_ptr<WeightGradTicket>& ticket,
                                     const std::vector<at::Tensor>& weights, WeightGradsFn compute) {
  if (ticket) {
    ticket->node->set(std::move(compute));
    return std::vector<at::Tensor>(weights.size());
  }
  bool leaves = true;
  for (const at::Tensor& w : weights) leaves = leaves && w.is_leaf();
  if (!leaves || !WeightGradStore::capturing()) return compute();
  WeightGradStore::push([weights, compute = std::move(compute)] {
    const at::NoGradGuard no_grad;
    const std::vector<at::Tensor> g = compute();
    for (size_t i = 0; i < weights.size(); ++i) accumulate_grad(weights[i], g[i]);
  });
  return std::vector<at::Tensor>(weights.size());
}

at::Tensor token_grad(const c10::intrusive_ptr<WeightGradTicket>& ticket, const at::TensorOptions& options) {
  return ticket ? at::empty({0}, options) : at::Tensor();
}

}  // namespace shoestring::ops
