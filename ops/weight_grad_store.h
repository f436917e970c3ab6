#pragma once
// The weight-gradient store of zero-bubble pipeline schedules (ZB1P, DualPipe): a backward pass
// split into I (gradient of the stage input, needed at once by the previous stage) and W (the
// weight gradients, run later to fill a bubble). While a capture is open, linears that support it
// (model::project) compute only their input gradient during backward and queue a closure that
// computes and accumulates the weight gradient; the pipeline executor keeps the closures of each
// (micro-batch, chunk) and runs them at its W action. Deferred: every model::project whose weight
// is a leaf parameter (GQA/MLA projections, dense and shared-expert SwiGLU, router gate, MTP
// projection, output head), the embedding lookups (model::embedding: with tied embeddings the
// head's and the lookups' shares alike), the routed experts' stacked weights
// (model::expert_swiglu, one closure per MoE layer), and the FP8 linears' Wgrads, dense and
// grouped (ops/fp8_linear.h); all through weight_grad_slot.h's weight_grads.
// Still done during I: norms. So every weight gets its whole gradient either during I or at W,
// never part of each (what lets WaitFiller below run closures early without reordering any
// weight's additions). A W holds the deferred GEMMs and lookups' scatters (and, FP8, their
// quantizations).
// A deferred weight's AccumulateGrad node still runs during I (with no gradient), so its
// post-hooks (parallel/grad_reducer.h) fire before the closure has added anything: gradients may
// be reduced only after the W closures ran.
//
// Process-wide rather than thread-local: autograd may run backward on its own device threads.
// One capture at a time.
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace shoestring::ops {

using WeightGradFn = std::function<void()>;

class WeightGradStore {
 public:
  static void begin_capture();                     // throws std::logic_error if one is open
  static std::vector<WeightGradFn> end_capture();  // closes it: the closures queued, in order
  static bool capturing();
  static void push(WeightGradFn fn);  // called by a linear's backward while capturing
  static WeightGradFn take_first();   // removes and returns the oldest closure queued; empty if none
};

// Work a thread may do while it waits for communication in backward. The reverse exchanges of
// parallel/all_to_all_v.h run one piece before they wait. During an I the pipeline executor
// installs a filler whose piece is the next closure of the oldest pending W, which may be this
// I's own, taken from the open capture (take_first): closures keep their W's order, so every
// gradient is accumulated in the same order and results do not change. On a GPU the piece's GEMMs
// are queued before the stream waits for the exchange, so they run while it travels: an I alone
// otherwise has nothing to put beside an expert exchange, since its weight gradients are what
// zero-bubble schedules defer. Process-wide, like the store (autograd's device threads run
// backward); one at a time.
class WaitFiller {
 public:
  using Piece = std::function<bool()>;  // runs one piece of work; false when there was none
  explicit WaitFiller(Piece piece);     // throws std::logic_error if one is installed
  ~WaitFiller();
  WaitFiller(const WaitFiller&) = delete;
  WaitFiller& operator=(const WaitFiller&) = delete;
  static bool installed();
  static bool run_one();  // runs a piece of the installed filler's work, if any; one at a time
};

// Adds a weight gradient computed outside autograd to w.grad as AccumulateGrad does with grad
// mode off: in place when .grad exists (it may be a view into the DP reducer's bucket, which must
// keep aliasing it), otherwise grad becomes .grad, laid out like w.
void accumulate_grad(const at::Tensor& w, const at::Tensor& grad);

}  // namespace shoestring::ops
