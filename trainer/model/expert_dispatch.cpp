#include "trainer/model/expert_dispatch.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace shoestring::model {

namespace {

struct LocalInFlight final : DispatchInFlight {
  at::Tensor rows, gates;  // permuted tokens, then the experts' outputs; [N, k] gates
  ops::Permutation perm;
  LocalExperts experts;
  int64_t n = 0;
  bool ready() const override { return true; }
};

}  // namespace

std::unique_ptr<DispatchInFlight> LocalDispatcher::begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                         const ops::Permutation& perm, const LocalExperts& experts) {
  if (experts.first != 0 || experts.count != experts.total)
    throw std::logic_error("MoE layer holds a shard of its experts but has no expert dispatcher");
  auto d = std::make_unique<LocalInFlight>();
  d->rows = ops::permute(tokens, perm);
  d->gates = gates;
  d->perm = perm;
  d->experts = experts;
  d->n = tokens.size(0);
  return d;
}

void LocalDispatcher::run_experts(DispatchInFlight& d) {
  LocalInFlight& l = next_step<LocalInFlight>(d, 1, "LocalDispatcher::run_experts");
  l.rows = l.experts.run(l.rows, l.perm.counts);
}

at::Tensor LocalDispatcher::end(DispatchInFlight& d) {
  LocalInFlight& l = next_step<LocalInFlight>(d, 2, "LocalDispatcher::end");
  const at::Tensor gates = l.gates.reshape({-1}).index_select(0, l.perm.slot);
  return ops::unpermute(l.rows, gates, l.perm, l.n);
}

}  // namespace shoestring::model
