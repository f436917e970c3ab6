#pragma once
// Where a MoE layer's routed experts run. The model stays single-device code: MoEImpl plans the
// (token, expert) pairs and hands them to an ExpertDispatcher, which may run them in this process
// (LocalDispatcher, below) or ship them to the ranks holding the experts
// (trainer/expert_parallel.h).
//
// A dispatch runs in three steps, so that a caller can compute something else while tokens and
// expert outputs travel (DualPipe's overlap of one micro-batch's all-to-all with another's
// attention and MLP, DeepSeek-V3 §3.2.1): begin() starts sending the tokens and returns,
// run_experts() waits for them, runs the local experts and starts sending the outputs back, end()
// waits for those and sums them per token. run() is the three back to back. See MoEImpl's
// forward_begin for the order in which several dispatches in flight must be stepped.
#include <ATen/core/Tensor.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <memory>
#include <vector>

#include "ops/moe_permute.h"
#include "parallel/buffer_pool.h"
#include "parallel/segment.h"

namespace shoestring::model {

// The experts this process holds: global ids [first, first + count) of `total`.
struct LocalExperts {
  int64_t first = 0, count = 0, total = 0;
  // rows: [sum(counts), d] sorted by local expert, counts[e] rows for local expert e (zeros
  // allowed) -> [sum(counts), d] expert outputs. For a dispatcher over several processes every
  // expert joins the graph even with no rows, so the backward pass reaches the same nodes on
  // every rank.
  std::function<at::Tensor(const at::Tensor& rows, const std::vector<int64_t>& counts)> run;
};

// An exchange that a cut dispatch (ExpertDispatcher::begin's `cut`) took out of autograd: `sent`
// left this process as tensors of the graph (outputs of the piece before the exchange), `received`
// arrived as fresh leaves (inputs of the piece after it). `reverse` starts sending the received
// leaves' gradients back, in their order, and its future gives the sent tensors' gradients, in
// theirs. Each process must start every reverse exchange of its group in one order (the ep rule).
struct ExchangeCut {
  std::vector<at::Tensor> sent, received;
  parallel::SegmentLink reverse;
};

// One dispatch between its steps: whatever the dispatcher keeps (buffers, exchanges in flight).
// The model only carries it from step to step.
class DispatchInFlight {
 public:
  virtual ~DispatchInFlight() = default;
  // After end(), for a cut dispatch that exchanged: its exchanges in forward order (the
  // dispatch, then the combine); empty otherwise.
  std::vector<ExchangeCut> cuts;
  // Would the next step find its data arrived (no wait for communication)? Never blocks; for
  // schedulers that pick what to run next, and for the overlap test.
  virtual bool ready() const = 0;

  // Steps done (begin is 1); see next_step.
  int steps = 1;
};

// d as the dispatcher's own in-flight type D, checked to have done `done` steps (1 before
// run_experts, 2 before end), and counted one step further: a dispatch from another dispatcher,
// or a step out of order, is a logic_error naming `what` ("EpDispatcher::end").
template <class D>
D& next_step(DispatchInFlight& d, int done, const char* what) {
  auto* mine = dynamic_cast<D*>(&d);
  if (!mine || mine->steps != done) throw std::logic_error(std::string(what) + ": not the next step of its dispatch");
  ++mine->steps;
  return *mine;
}

class ExpertDispatcher {
 public:
  virtual ~ExpertDispatcher() = default;
  // tokens: [N, d]; gates: [N, k] (differentiable); perm: the plan over all `experts.total`
  // experts, capacity already applied. The dispatch keeps what it needs of them. `cut`: take the
  // exchanges out of autograd (DispatchInFlight::cuts) for a caller that backwards the pieces
  // between them itself; a dispatcher that exchanges nothing ignores it.
  virtual std::unique_ptr<DispatchInFlight> begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                  const ops::Permutation& perm, const LocalExperts& experts,
                                                  bool cut = false) = 0;
  virtual void run_experts(DispatchInFlight& d) = 0;
  // [N, d]: for each token the sum over its kept pairs of gate * expert(token).
  virtual at::Tensor end(DispatchInFlight& d) = 0;

  // A dispatcher over several processes is collective over its group: every member calls each
  // step for every MoE forward, whatever its token counts.
  at::Tensor run(const at::Tensor& tokens, const at::Tensor& gates, const ops::Permutation& perm,
                 const LocalExperts& experts) {
    const std::unique_ptr<DispatchInFlight> d = begin(tokens, gates, perm, experts);
    run_experts(*d);
    return end(*d);
  }
};

// All experts in this process, nothing to wait for: begin permutes the tokens into expert order,
// run_experts runs them, end sums the gate-weighted outputs per token: on the CPU with moe_rows.h
// (float32/float64 outputs equal ops::permute/unpermute's; bfloat16 is summed in float), on a GPU
// with ops::permute/unpermute.
class LocalDispatcher final : public ExpertDispatcher {
 public:
  std::unique_ptr<DispatchInFlight> begin(const at::Tensor& tokens, const at::Tensor& gates,
                                          const ops::Permutation& perm, const LocalExperts& experts,
                                          bool cut = false) override;
  void run_experts(DispatchInFlight& d) override;
  at::Tensor end(DispatchInFlight& d) override;

 private:
  static const std::shared_ptr<parallel::BufferPool>& pool();
};

}  // namespace shoestring::model
