#pragma once
// Internal to the schedule implementation (schedule*.cpp): the per-family generators that
// make_schedule dispatches to, and the helpers they share. Not part of the public contract in
// schedule.h.
#include "parallel/schedule.h"

namespace shoestring::parallel::detail {

// A rank's compute actions (F, B, I, W, FB) in order, before communication is added.
using ComputeOrder = std::vector<Action>;

// Fills s.actions from per-rank compute orders, adding the Send/Recv posts both communication
// models need (schedule.h): first receives of an action's remote inputs just before it and sends
// of its remote outputs just after it, nothing where consecutive stages of a route share a rank
// (the hand-off is local); then post_in_one_order().
void add_communication(Schedule& s, const std::vector<ComputeOrder>& compute);

// Moves the posts (never a compute action) so that every rank's messages follow one global order:
// the order in which a replay at unit costs (ActionCosts{}) sends them. Each send stays right
// after the compute that produces it; each receive moves to just after the post before it in that
// order, so it is posted as early as the order allows and before its consumer. Both ends of every
// rank pair then see the pair's messages, both directions interleaved, in the same order, which
// CommModel::InOrder needs. A schedule whose tag-matched replay deadlocks is left as it is (the
// validator names the deadlock).
void post_in_one_order(Schedule& s);

// One route through pp ranks, chunk 0 each: gpipe, 1f1b and zb1p.
Schedule linear_layout(const std::string& name, int pp, int microbatches);

// Generators (schedule_classic.cpp, schedule_dualpipe.cpp). Arguments are already checked.
Schedule make_gpipe(int pp, int microbatches);
Schedule make_1f1b(int pp, int microbatches);
Schedule make_interleaved(int pp, int microbatches, int virtual_stages);
Schedule make_zb1p(int pp, int microbatches);
Schedule make_dualpipe(int pp, int microbatches);
Schedule make_dualpipev(int pp, int microbatches);

inline bool is_compute(Op op) { return op == Op::F || op == Op::B || op == Op::I || op == Op::W || op == Op::FB; }

// Peak number of (mb, chunk) forwarded and not yet backwarded (B or I) on one rank, walking its
// actions in order. An FB's forward half counts before its backward half frees: the two halves
// run at the same time, so both activations are held.
int peak_activations(const std::vector<Action>& actions);

}  // namespace shoestring::parallel::detail
