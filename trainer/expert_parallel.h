#pragma once
// Expert parallelism (DeepSeek-V3 style, dropless): the routed experts of every MoE layer are
// sharded over the mesh's ep group, and each token travels once to every ep rank holding at least
// one of its chosen experts. See docs/parallelism.md, "Expert parallelism".
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/buffer_pool.h"
#include "parallel/process_group.h"
#include "trainer/model/expert_dispatch.h"
#include "trainer/model/transformer.h"

namespace shoestring {

// Rows this rank sent to / received from the ep group (one row per (token, destination rank)
// pair, this rank included), in forward passes with gradients enabled, summed over layers; and the
// bytes of those token rows as they travelled (fp8 dispatch: codes and scales, ops/fp8_rows.h).
// Gates, masks and the combine are not in the bytes.
struct EpTraffic {
  int64_t sent = 0, received = 0;
  int64_t sent_bytes = 0, received_bytes = 0;
};

// What the forward dispatch of token rows sends (parallel.ep_dispatch_dtype): the rows as they are,
// or E4M3 codes with one fp32 scale per 1x128 tile (DeepSeek-V3 §3.3.3). Gates, the combine and
// every backward exchange stay in the compute dtype either way.
enum class EpDispatchDtype { kAuto, kFp8 };
// "auto" | "fp8"; throws std::invalid_argument naming parallel.ep_dispatch_dtype otherwise.
EpDispatchDtype parse_ep_dispatch_dtype(const std::string& name);

class EpDispatcher : public model::ExpertDispatcher {
 public:
  explicit EpDispatcher(parallel::GroupPtr ep, EpDispatchDtype dispatch_dtype = EpDispatchDtype::kAuto);
  // begin: the counts exchange (waited for), then starts the all-to-all-v of token rows and of
  // their gates (with the mask of the destination's local experts they chose). run_experts: waits
  // for them, runs the local experts, starts the reverse all-to-all-v of the gate-weighted sums.
  // end: waits for those and sums them per token. Backward runs the same exchanges in reverse,
  // each started where backward reaches it and waited for later: the combine's after whatever
  // the caller ran after begin (the shared experts), the dispatch's two after both started.
  // Each step issues its collectives when called: see MoEImpl::forward_begin for the order rule.
  // With `cut` (and grad mode on) the three exchanges travel detached from the graph: the rows
  // and gates arrive as leaves, the combined rows too, and DispatchInFlight::cuts gets the
  // dispatch (rows and gates) and the combine, whose reverse exchanges the caller starts.
  std::unique_ptr<model::DispatchInFlight> begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                 const ops::Permutation& perm, const model::LocalExperts& experts,
                                                 bool cut = false) override;
  void run_experts(model::DispatchInFlight& d) override;
  at::Tensor end(model::DispatchInFlight& d) override;
  EpTraffic take_traffic();  // what was counted since the last call

 private:
  // The reverse of one cut exchange that sent sent_counts[j] rows to each member j and received
  // received_counts[j] (ExchangeCut::reverse).
  parallel::SegmentLink reverse_exchange(std::vector<int64_t> sent_counts, std::vector<int64_t> received_counts) const;
  parallel::GroupPtr ep_;
  EpDispatchDtype dispatch_dtype_;
  std::shared_ptr<parallel::BufferPool> pool_;  // the big row buffers, reused across calls
  EpTraffic traffic_;
};

// Shards every MoE layer of `net` (main blocks and MTP modules) over `ep`: group rank r keeps
// experts [r E/ep, (r+1) E/ep) and dispatches through the returned dispatcher. Build the whole
// model first (identical initialisation on every rank), then call this. Throws
// std::invalid_argument when ep does not divide a layer's experts.
std::shared_ptr<EpDispatcher> shard_experts(model::Transformer& net, const parallel::GroupPtr& ep,
                                            EpDispatchDtype dispatch_dtype = EpDispatchDtype::kAuto);

// How many nodes the ep group spans, from its members' global ranks and the ranks per node
// (ranks fill nodes in order, as mpirun and srun place them by default). Throws
// std::invalid_argument unless the members split into equal blocks of whole nodes' ranks, which
// node-limited routing needs (a node's experts are then one contiguous block).
int64_t ep_nodes(const std::vector<int>& world_ranks, int ranks_per_node);

}  // namespace shoestring
