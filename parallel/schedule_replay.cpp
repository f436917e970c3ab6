// The shared engine: every rank walks its actions in order; a compute action starts when the rank
// is free and all its inputs are there (schedule.h's semantics), Send/Recv posts take no time.
// Sweeping the ranks until none can move gives the same times as a priority-queue event loop,
// because an action's start depends only on its rank's previous action and on its inputs.
#include "parallel/schedule_replay.h"

#include <algorithm>
#include <limits>

#include "parallel/schedule_build.h"

namespace shoestring::parallel::detail {
namespace {

void forward_inputs(const Schedule& s, int rank, int mb, int chunk, Inputs& out) {
  const int st = s.stage_of(mb, rank, chunk);
  if (st <= 0) return;
  const Hop& prev = s.hop(mb, st - 1);
  out.push_back({prev.rank == rank ? Need::LocalF : Need::MsgF, mb, st - 1, prev.rank});
}

void backward_inputs(const Schedule& s, int rank, int mb, int chunk, Inputs& out) {
  const int st = s.stage_of(mb, rank, chunk);
  out.push_back({Need::LocalF, mb, st, rank});  // its own activations
  if (st + 1 >= s.stages) return;
  const Hop& next = s.hop(mb, st + 1);
  out.push_back({next.rank == rank ? Need::LocalB : Need::MsgB, mb, st + 1, next.rank});
}

}  // namespace

Inputs inputs_of(const Schedule& s, int rank, const Action& a) {
  Inputs in;
  switch (a.op) {
    case Op::F: forward_inputs(s, rank, a.mb, a.chunk, in); break;
    case Op::B:
    case Op::I: backward_inputs(s, rank, a.mb, a.chunk, in); break;
    case Op::FB:
      forward_inputs(s, rank, a.mb, a.chunk, in);
      backward_inputs(s, rank, a.mb2, a.chunk2, in);
      break;
    case Op::W: in.push_back({Need::LocalB, a.mb, s.stage_of(a.mb, rank, a.chunk), rank}); break;
    case Op::SendF: in.push_back({Need::LocalF, a.mb, s.stage_of(a.mb, rank, a.chunk), rank}); break;
    case Op::SendB: in.push_back({Need::LocalB, a.mb, s.stage_of(a.mb, rank, a.chunk), rank}); break;
    case Op::RecvF:
    case Op::RecvB: break;
  }
  return in;
}

std::string describe(const Input& in) {
  const std::string what = "micro-batch " + std::to_string(in.mb) + " stage " + std::to_string(in.stage);
  switch (in.need) {
    case Need::LocalF: return "the forward of " + what + " on this rank";
    case Need::LocalB: return "the backward of " + what + " on this rank";
    case Need::MsgF: return "the activation of " + what + " from rank " + std::to_string(in.from_rank);
    case Need::MsgB: return "the gradient of " + what + " from rank " + std::to_string(in.from_rank);
  }
  return "?";
}

double action_cost(const std::vector<std::vector<ActionCosts>>& table, int rank, const Action& a) {
  const ActionCosts& c = table[size_t(rank)][size_t(a.chunk)];
  switch (a.op) {
    case Op::F: return c.f;
    case Op::B: return c.b;
    case Op::I: return c.b - c.w;
    case Op::W: return c.w;
    case Op::FB: {
      // The pair's two halves may belong to chunks of different cost: F&B scales with them,
      // keeping the forward chunk's overlap ratio fb / (f + b), or the backward chunk's where the
      // forward chunk costs nothing (an empty stage): a pair is never cheaper for that.
      const ActionCosts& other = table[size_t(rank)][size_t(a.chunk2)];
      const double own = c.f + c.b, theirs = other.f + other.b;
      const double ratio = own > 0 ? c.fb / own : theirs > 0 ? other.fb / theirs : 1;
      return ratio * (c.f + other.b);
    }
    default: return 0;
  }
}

Ends::Ends(const Schedule& s) : stages_(s.stages) {
  const size_t keys = size_t(s.microbatches) * size_t(s.stages);
  for (auto* v : {&f_end, &b_end, &msg_f, &msg_b}) v->assign(keys, kNotYet);
}

double Ends::time(const Input& in) const {
  switch (in.need) {
    case Need::LocalF: return at(f_end, in.mb, in.stage);
    case Need::LocalB: return at(b_end, in.mb, in.stage);
    case Need::MsgF: return at(msg_f, in.mb, in.stage);
    case Need::MsgB: return at(msg_b, in.mb, in.stage);
  }
  return kNotYet;
}

double Ends::start_of(const Schedule& s, int rank, const Action& a, double free) const {
  double start = free;
  for (const Input& in : inputs_of(s, rank, a)) start = std::max(start, time(in));
  return start;
}

void Ends::finish(const Schedule& s, int rank, const Action& a, double end) {
  if (a.op == Op::F || a.op == Op::FB) at(f_end, a.mb, s.stage_of(a.mb, rank, a.chunk)) = end;
  if (a.op == Op::B || a.op == Op::I) at(b_end, a.mb, s.stage_of(a.mb, rank, a.chunk)) = end;
  if (a.op == Op::FB) at(b_end, a.mb2, s.stage_of(a.mb2, rank, a.chunk2)) = end;
}

std::string Ends::waits(const Schedule& s, int rank, const Action& a) const {
  std::string w;
  for (const Input& in : inputs_of(s, rank, a))
    if (time(in) == kNotYet) w += (w.empty() ? "" : " and ") + describe(in);
  return w;
}

Replay replay(const Schedule& s, const std::vector<std::vector<ActionCosts>>& table) {
  const size_t ranks = size_t(s.pp);
  Ends ends(s);
  Replay out;
  out.busy.assign(ranks, 0);
  out.timeline.assign(ranks, {});
  std::vector<size_t> next(ranks, 0);
  std::vector<double> clock(ranks, 0);
  for (bool moved = true; moved;) {
    moved = false;
    for (size_t r = 0; r < ranks; ++r) {
      const auto& acts = s.actions[r];
      const int rank = int(r);
      while (next[r] < acts.size()) {
        const Action& a = acts[next[r]];
        const double ready = ends.start_of(s, rank, a, clock[r]);
        if (ready == kNotYet) break;
        if (a.op == Op::SendF || a.op == Op::SendB)
          ends.msg(a.op == Op::SendB, a.mb, s.stage_of(a.mb, rank, a.chunk)) = clock[r] + table[r][size_t(a.chunk)].comm;
        if (is_compute(a.op)) {
          const double end = ready + action_cost(table, rank, a);
          ends.finish(s, rank, a, end);
          out.timeline[r].push_back({a, ready, end});
          out.busy[r] += end - ready;
          clock[r] = end;
        }
        ++next[r];
        moved = true;
      }
    }
  }
  out.finished = true;
  for (size_t r = 0; r < ranks; ++r) {
    out.makespan = std::max(out.makespan, clock[r]);
    if (next[r] == s.actions[r].size()) continue;
    const Action& a = s.actions[r][next[r]];
    out.stuck += std::string(out.finished ? "" : "; ") + "rank " + std::to_string(r) + " action " +
                 std::to_string(next[r]) + " (" + to_string(a) + ") waits for " + ends.waits(s, int(r), a);
    out.finished = false;
  }
  return out;
}

}  // namespace shoestring::parallel::detail
