#include "trainer/model/expert_dispatch.h"

#include <ATen/ATen.h>

#include <stdexcept>

#include "trainer/model/moe_rows.h"

namespace shoestring::model {

namespace {

struct LocalInFlight final : DispatchInFlight {
  at::Tensor rows, gates;  // permuted tokens, then the experts' outputs; [N, k] gates
  ops::Permutation perm;
  LocalExperts experts;
  RowMap token_map;  // permuted row -> its token
  int64_t n = 0;
  bool ready() const override { return true; }
};

}  // namespace

const std::shared_ptr<parallel::BufferPool>& LocalDispatcher::pool() {
  // One for every layer's dispatcher in the process: a layer's buffers are free again once its
  // backward ran, and the next layer reuses them, instead of each layer keeping its own.
  static const auto shared = std::make_shared<parallel::BufferPool>();
  return shared;
}

std::unique_ptr<DispatchInFlight> LocalDispatcher::begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                         const ops::Permutation& perm, const LocalExperts& experts, bool) {
  if (experts.first != 0 || experts.count != experts.total)
    throw std::logic_error("MoE layer holds a shard of its experts but has no expert dispatcher");
  auto d = std::make_unique<LocalInFlight>();
  // The row kernels (moe_rows.h) on either device: on the CPU several times faster than
  // index_select and a bfloat16 index_add, which sums bfloat16 in bfloat16; on CUDA without the
  // atomics of index_add, so the same bits every run. The map is built on the host from the
  // plan's host copy of the row tokens, so building it does not wait for the GPU.
  d->token_map = make_row_map(perm.source_token_host, tokens.size(0), tokens.device());
  d->rows = gather_rows(tokens, d->token_map, pool());
  d->n = tokens.size(0);
  d->gates = gates;
  d->perm = perm;
  d->experts = experts;
  return d;
}

void LocalDispatcher::run_experts(DispatchInFlight& d) {
  LocalInFlight& l = next_step<LocalInFlight>(d, 1, "LocalDispatcher::run_experts");
  l.rows = l.experts.run(l.rows, l.perm.counts);
}

at::Tensor LocalDispatcher::end(DispatchInFlight& d) {
  LocalInFlight& l = next_step<LocalInFlight>(d, 2, "LocalDispatcher::end");
  const at::Tensor gates = l.gates.reshape({-1}).index_select(0, l.perm.slot);
  return weighted_sum_rows(l.rows, gates.to(l.rows.scalar_type()), l.token_map, pool());
}

}  // namespace shoestring::model
