#pragma once
// Where a layer's weight-gradient GEMMs run in a plain backward. Autograd computes a function's
// input and weight gradients in one node; the expert-parallel dispatcher wants the routed experts'
// weight GEMMs later, while the dispatch's reverse exchange carries their input gradients back.
// While a WeightGradSlot is open on a thread, the functions that support it (model::expert_swiglu
// and the ops/fp8_linear.h functions) register their weights with it in forward (SlottedWeights);
// their backward then computes only the input gradients and hands the weight GEMMs to a node of
// the slot's (weight_grads). Those nodes sit at a place in autograd's order reserved earlier (a
// sequence number: of two ready nodes the engine runs the one created later first), so everything
// ready and created after the slot runs first; they return the weight gradients through autograd
// as any node does, so gradient hooks (the DP reducer's) fire once they are there.
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace shoestring::ops {

// The gradients of a function's weights, in the order and dtypes of its registered weights.
using WeightGradsFn = std::function<std::vector<at::Tensor>()>;

class WeightGradSlotNode;
// One function's registration with a slot, for its backward (saved with its context).
struct WeightGradTicket : torch::CustomClassHolder {
  std::shared_ptr<WeightGradSlotNode> node;
};

class WeightGradSlot {
 public:
  explicit WeightGradSlot(std::optional<uint64_t> slot);  // nullopt: no slot, as without the guard
  ~WeightGradSlot();
  WeightGradSlot(const WeightGradSlot&) = delete;
  WeightGradSlot& operator=(const WeightGradSlot&) = delete;

 private:
  std::optional<uint64_t> prev_;
};

// A function's weights as its forward passes them to autograd. Under an open slot (grad mode on,
// a weight requiring grad): the weights detached, and a token, a 0-element tensor to pass as one
// more input, whose gradient leads to the slot's node. Otherwise the weights as given and a plain
// 0-element token (autograd wants every tensor argument defined).
struct SlottedWeights {
  SlottedWeights(const std::vector<at::Tensor>& weights, const at::TensorOptions& token_options);
  std::vector<at::Tensor> weights;
  at::Tensor token;
  c10::intrusive_ptr<WeightGradTicket> ticket;  // null: not slotted
};

// For ctx->saved_data: a ticket as an IValue (None for null), and back.
c10::IValue save_ticket(const c10::intrusive_ptr<WeightGradTicket>& ticket);
c10::intrusive_ptr<WeightGradTicket> saved_ticket(const c10::IValue& v);

// In a function's backward: its weights' gradients now, or none now when
// - it was slotted (ticket): `compute` is handed to the slot's node, and the function returns a
//   0-element gradient for its token (token_grad);
// - a zero-bubble capture is open (weight_grad_store.h) and every weight is a leaf: a closure adding
//   compute() to their .grad is queued for the schedule's W.
// `weights` are the function's own (as saved when not slotted); compute must own what it reads.
std::vector<at::Tensor> weight_grads(const c10::intrusive_ptr<WeightGradTicket>& ticket,
                                     const std::vector<at::Tensor>& weights, WeightGradsFn compute);
// The gradient a slotted function returns for its token (an undefined tensor when not slotted).
at::Tensor token_grad(const c10::intrusive_ptr<WeightGradTicket>& ticket, const at::TensorOptions& options);

}  // namespace shoestring::ops
