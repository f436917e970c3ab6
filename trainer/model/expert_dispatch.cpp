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
  bool ready() const override { return true; }
};

}  // namespace

std::unique_ptr<DispatchInFlight> LocalDispatcher::begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                         const ops::Permutation& perm, const LocalExperts& experts) {
  if (experts.first != 0 || experts.count != experts.total)
    throw std::logic_error("MoE layer holds a shard of its experts but has no expert dispatcher");
  auto d = std::make_unique<LocalInFlight>();
  // ops::permute/unpermute compute the same (their ATen form is the reference in tests); these
  // row kernels are several times faster on the CPU and sum bfloat16 in float.
  const at::Tensor source = perm.source_token.to(at::kCPU).contiguous();
  d->token_map = make_row_map(std::vector<int64_t>(source.data_ptr<int64_t>(), source.data_ptr<int64_t>() + source.numel()),
                              tokens.size(0));
  d->rows = gather_rows(tokens, d->token_map, pool_);
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
  return weighted_sum_rows(l.rows, gates.to(l.rows.scalar_type()), l.token_map, pool_);
}

}  // namespace shoestring::model
