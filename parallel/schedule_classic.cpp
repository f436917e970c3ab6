// One-directional schedules: GPipe, 1F1B (PipeDream-flush), Megatron's interleaved 1F1B and
// ZB-H1 ("Zero Bubble Pipeline Parallelism", Qi et al. 2023). Each builds the compute order per
// rank; the Send/Recv posts come from add_communication.
#include <algorithm>
#include <deque>

#include "parallel/schedule_build.h"

namespace shoestring::parallel::detail {

Schedule make_gpipe(int pp, int microbatches) {
  Schedule s = linear_layout("gpipe", pp, microbatches);
  std::vector<ComputeOrder> order(static_cast<size_t>(pp));
  for (auto& o : order) {
    for (int m = 0; m < microbatches; ++m) o.push_back({Op::F, m, 0});
    // Newest first: the last rank can start the backward of the micro-batch it just finished.
    for (int m = microbatches - 1; m >= 0; --m) o.push_back({Op::B, m, 0});
  }
  add_communication(s, order);
  return s;
}

Schedule make_1f1b(int pp, int microbatches) {
  Schedule s = linear_layout("1f1b", pp, microbatches);
  std::vector<ComputeOrder> order(static_cast<size_t>(pp));
  for (int r = 0; r < pp; ++r) {
    // PipeDream-flush: rank r runs ahead by pp-1-r forwards, which is what it takes for its first
    // backward to come back; then one forward, one backward; then the remaining backwards.
    const int warm = std::min(pp - 1 - r, microbatches);
    auto& o = order[size_t(r)];
    for (int m = 0; m < warm; ++m) o.push_back({Op::F, m, 0});
    for (int i = 0; i + warm < microbatches; ++i) {
      o.push_back({Op::F, warm + i, 0});
      o.push_back({Op::B, i, 0});
    }
    for (int m = std::max(0, microbatches - warm); m < microbatches; ++m) o.push_back({Op::B, m, 0});
  }
  add_communication(s, order);
  return s;
}

Schedule make_interleaved(int pp, int microbatches, int v) {
  Schedule s;
  s.name = "interleaved";
  s.pp = pp;
  s.microbatches = microbatches;
  s.chunks = v;
  s.stages = v * pp;
  s.routes.resize(1);
  for (int st = 0; st < s.stages; ++st) s.routes[0].push_back({st % pp, st / pp});
  s.route_of.assign(size_t(microbatches), 0);
  // Megatron (core/pipeline_parallel/schedules.py, forward_backward_pipelining_with_interleaving):
  // virtual step k works on micro-batch group k / (pp v), chunk (k / pp) % v (reversed for the
  // backward), micro-batch k % pp of the group. Warm-up: 2 (pp-1-r) + (v-1) pp steps.
  const int total = microbatches * v;
  auto mb_of = [&](int k) { return (k / (pp * v)) * pp + k % pp; };
  auto fwd = [&](int k) { return Action{Op::F, mb_of(k), (k / pp) % v}; };
  auto bwd = [&](int k) { return Action{Op::B, mb_of(k), v - 1 - (k / pp) % v}; };
  std::vector<ComputeOrder> order(static_cast<size_t>(pp));
  for (int r = 0; r < pp; ++r) {
    const int warm = std::min(2 * (pp - 1 - r) + (v - 1) * pp, total);
    auto& o = order[size_t(r)];
    for (int k = 0; k < warm; ++k) o.push_back(fwd(k));
    for (int k = 0; k + warm < total; ++k) {
      o.push_back(fwd(k + warm));
      o.push_back(bwd(k));
    }
    for (int k = std::max(0, total - warm); k < total; ++k) o.push_back(bwd(k));
  }
  add_communication(s, order);
  return s;
}

Schedule make_zb1p(int pp, int microbatches) {
  Schedule s = linear_layout("zb1p", pp, microbatches);
  std::vector<ComputeOrder> order(static_cast<size_t>(pp));
  for (int r = 0; r < pp; ++r) {
    // ZB-H1 keeps 1F1B's order of forwards and backwards, hence its activation memory, but splits
    // each backward into I, which the previous rank waits for, and W, which nobody waits for.
    // Rank r holds r W's back during the steady phase, so in the cool-down the I's run down the
    // pipeline without a W in their way, and the W's held back fill the time the lower ranks
    // spend waiting for them; the last rank ends with its pp-1 held-back W's while the I's drain
    // (Qi et al. 2023 §3.1, Figure 3). Simulated, this gives exactly (pp-1)(F+B-2W) when W <= F and
    // W <= B-W, the gaps a held-back W must fit in (tests/parallel/test_schedule.cpp).
    const int warm = std::min(pp - 1 - r, microbatches);
    auto& o = order[size_t(r)];
    std::deque<int> pending;  // micro-batches whose W is still to do, oldest first
    auto weight = [&] {
      o.push_back({Op::W, pending.front(), 0});
      pending.pop_front();
    };
    for (int m = 0; m < warm; ++m) o.push_back({Op::F, m, 0});
    for (int i = 0; i + warm < microbatches; ++i) {
      o.push_back({Op::F, warm + i, 0});
      o.push_back({Op::I, i, 0});
      pending.push_back(i);
      if (int(pending.size()) > r) weight();
    }
    for (int m = std::max(0, microbatches - warm); m < microbatches; ++m) {
      o.push_back({Op::I, m, 0});
      pending.push_back(m);
      weight();
    }
    while (!pending.empty()) weight();
  }
  add_communication(s, order);
  return s;
}

}  // namespace shoestring::parallel::detail
