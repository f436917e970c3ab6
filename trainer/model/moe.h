#pragma once
// DeepSeekMoE feed-forward (DeepSeek-V3 §2.1.2): n_shared experts applied to every token plus
// n_routed experts of which each token uses its top-k, each a SwiGLU of moe_intermediate_size.
// Tokens are permuted into the expert-sorted layout (ops/moe_permute.h), each expert runs on its
// contiguous slice, and the outputs are scattered back weighted by the gates: no per-token loops.
#include <torch/nn/module.h>

#include <memory>

#include "trainer/config.h"
#include "trainer/model/expert_dispatch.h"
#include "trainer/model/linear.h"
#include "trainer/model/router.h"
#include "trainer/model/swiglu.h"

namespace shoestring::model {

// What one MoE layer saw in one forward pass; the trainer sums it over micro-batches.
struct MoEStats {
  at::Tensor load;          // [E] int64: tokens routed to each expert (before capacity drops)
  int64_t dropped = 0;      // (token, expert) pairs dropped by the capacity factor
  at::Tensor balance_loss;  // scalar: sequence-wise balance loss (unweighted), DeepSeek-V3 eq. 17-20
};

class MoEImpl;

// One MoE forward between the steps of its split form (MoEImpl::forward_begin). Move-only.
class MoEInFlight {
 public:
  // Would the next step find its tokens or expert outputs arrived? Never blocks.
  bool ready() const { return !dispatch_ || dispatch_->ready(); }
  // After forward_end of a cut forward (forward_begin's `cut`) that exchanged: the dispatch and
  // the combine taken out of autograd (ExchangeCut), and the shared experts' output (undefined
  // without shared experts) as computed before the dispatch and as the leaf forward_end added.
  const std::vector<ExchangeCut>& cuts() const { return cuts_; }
  const at::Tensor& shared() const { return shared_; }
  const at::Tensor& shared_leaf() const { return shared_leaf_; }

 private:
  friend class MoEImpl;
  const MoEImpl* layer_ = nullptr;
  int step_ = 0;  // steps done
  int64_t b_ = 0, t_ = 0, d_ = 0;
  at::Tensor flat_, shared_, shared_leaf_;
  std::vector<ExchangeCut> cuts_;
  Routing routing_;
  ops::Permutation perm_;
  std::unique_ptr<DispatchInFlight> dispatch_;
  std::vector<MoEStats>* stats_ = nullptr;
};

class MoEImpl : public torch::nn::Module, public LinearUser {
 public:
  MoEImpl(const ModelConfig& cfg);
  // x: [B, T, d]. Appends this layer's statistics to *stats when given. The three steps below,
  // back to back.
  at::Tensor forward(const at::Tensor& x, std::vector<MoEStats>* stats = nullptr);

  // The forward in three steps, for overlapping the expert all-to-all of one micro-batch with
  // another's compute (DualPipe, DeepSeek-V3 §3.2.1); with a local dispatcher nothing travels and
  // the steps just run in turn. Each step returns as soon as its own work is issued:
  //   forward_begin   routes and permutes the tokens, starts the dispatch (the counts exchange
  //                   waits; the token rows and gates are then in flight) and runs the shared
  //                   experts meanwhile;
  //   forward_experts waits for the dispatched rows, runs the local experts and starts sending
  //                   their outputs back;
  //   forward_end     waits for the outputs, sums them per token weighted by the gates, adds
  //                   the shared experts' output and appends the statistics.
  // Autograd runs through the split form as through forward() (backward runs the reverse
  // exchanges, the combine's while the shared experts' backward runs). Each MoEInFlight goes
  // through the three steps once, in order, on the layer that began it.
  //
  // Ordering rule (expert parallelism): every step issues collectives on the ep group (begin: the
  // counts exchange and the token all-to-all-v; experts: the combine all-to-all-v), and
  // collectives must be issued in one order on every member. So every ep rank must interleave the
  // steps of its micro-batches and layers in the same order: begin(A) begin(B) experts(A)
  // experts(B) end(A) end(B) on one rank needs the same sequence on the others. The backward
  // passes follow from the graphs and are then in step too.
  // cut: the dispatcher takes its exchanges out of autograd (ExpertDispatcher::begin), for a
  // caller that backwards the pieces between them itself (BlockImpl::forward_segments).
  MoEInFlight forward_begin(const at::Tensor& x, std::vector<MoEStats>* stats = nullptr, bool cut = false);
  void forward_experts(MoEInFlight& s);
  at::Tensor forward_end(MoEInFlight& s);

  // Keeps only experts [first, first + count) of w1/w2/w3 (the same parameter objects and names,
  // narrowed in place), for expert parallelism: build the whole layer, then shard it. A sharded
  // layer needs a dispatcher that reaches the other shards.
  void shard_experts(int64_t first, int64_t count);
  // nullptr: run every expert in this process (the default, a LocalDispatcher).
  void set_dispatcher(std::shared_ptr<ExpertDispatcher> d) { dispatcher_ = std::move(d); }
  int64_t first_expert() const { return first_expert_; }
  int64_t local_experts() const { return w1.size(0); }

  Router router{nullptr};
  at::Tensor w1, w3;  // [E, hidden, d] (E = local experts once sharded)
  at::Tensor w2;      // [E, d, hidden]

 private:
  // rows sorted by local expert, counts[e] rows each; skip_empty leaves idle experts out of the
  // graph (single process), else every expert joins it (see LocalExperts::run).
  at::Tensor run_experts(const at::Tensor& rows, const std::vector<int64_t>& counts, bool skip_empty);

  SwiGLU shared_{nullptr};
  int64_t n_experts_, top_k_;
  double capacity_factor_;
  int64_t first_expert_ = 0;
  ExpertDispatcher& dispatcher() { return dispatcher_ ? *dispatcher_ : local_; }
  void check_step(const MoEInFlight& s, int done, const char* what) const;

  std::shared_ptr<ExpertDispatcher> dispatcher_;
  LocalDispatcher local_;
};
TORCH_MODULE(MoE);

// Sequence-wise balance loss sum_i f_i P_i averaged over sequences (DeepSeek-V3 eq. 17-20):
// f_i = E / (k T) * (tokens of the sequence choosing expert i), P_i = mean over the sequence of
// the affinities normalised to sum 1 per token. scores: [B, T, E], expert_ids: [B, T, k].
at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& expert_ids);

}  // namespace shoestring::model
