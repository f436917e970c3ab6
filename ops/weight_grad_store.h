#pragma once
// The weight-gradient store of zero-bubble pipeline schedules (ZB1P, DualPipe): a backward pass
// split into I (gradient of the stage input, needed at once by the previous stage) and W (the
// weight gradients, run later to fill a bubble). While a capture is open, linears that support it
// (model::project) compute only their input gradient during backward and queue a closure that
// computes and accumulates the weight gradient; the pipeline executor keeps the closures of each
// (micro-batch, chunk) and runs them at its W action. Everything else (norms, routers, expert
// matmuls, embeddings) still gets its gradient during I, so a W holds only deferred GEMMs.
//
// Process-wide rather than thread-local: autograd may run backward on its own device threads.
// One capture at a time.
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
};

}  // namespace shoestring::ops
