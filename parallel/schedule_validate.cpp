// validate(): static checks of every action in order, then completeness, then a replay of all
// ranks (schedule_replay.h) to prove the schedule finishes, under CommModel::InOrder also the
// point-to-point order and the in-order replay. The first violation is thrown.
#include <map>
#include <stdexcept>
#include <tuple>

#include "parallel/schedule.h"
#include "parallel/schedule_build.h"
#include "parallel/schedule_replay.h"

namespace shoestring::parallel {
namespace {

// Where each (micro-batch, stage) stands: indices of the actions that did each part, -1 = not yet.
struct Progress {
  int f = -1, b = -1, w = -1, send_f = -1, send_b = -1, recv_f = -1, recv_b = -1;
  bool split = false;  // backwarded by I: a W must follow
};

class Checker {
 public:
  explicit Checker(const Schedule& s) : s_(s), state_(size_t(s.microbatches * s.stages)) {}

  void run() {
    for (int r = 0; r < s_.pp; ++r) check_rank(r);
    check_complete();
  }

 private:
  [[noreturn]] void fail(int rank, int index, const std::string& what) const {
    throw std::invalid_argument("rank " + std::to_string(rank) + " action " + std::to_string(index) + " (" +
                                to_string(s_.actions[size_t(rank)][size_t(index)]) + "): " + what);
  }
  static std::string mbst(int mb, int st) { return "micro-batch " + std::to_string(mb) + " stage " + std::to_string(st); }
  Progress& at(int mb, int st) { return state_[size_t(mb * s_.stages + st)]; }
  // The rank of stage st + step for mb, or -1 when there is no such stage.
  int neighbour(int mb, int st, int step) const {
    const int n = st + step;
    return n < 0 || n >= s_.stages ? -1 : s_.hop(mb, n).rank;
  }

  // Range checks, then the stage (rank, chunk) computes for mb.
  int stage(int r, int i, int mb, int chunk) const {
    if (chunk < 0 || chunk >= s_.chunks)
      fail(r, i, "chunk " + std::to_string(chunk) + " does not exist (each rank holds " + std::to_string(s_.chunks) +
                     (s_.chunks == 1 ? " chunk)" : " chunks)"));
    if (mb < 0 || mb >= s_.microbatches)
      fail(r, i, "micro-batch " + std::to_string(mb) + " does not exist (" + std::to_string(s_.microbatches) +
                     " micro-batches)");
    const int st = s_.stage_of(mb, r, chunk);
    if (st < 0)
      fail(r, i, "micro-batch " + std::to_string(mb) + " does not pass through chunk " + std::to_string(chunk) +
                     " of rank " + std::to_string(r));
    return st;
  }

  // The receive a consumer at index i needs must be posted earlier on its rank; says whether it
  // comes too late or never.
  void need_received(int r, int i, int mb, int st, Op recv) {
    const auto it = first_recv_.find({recv, mb, st});
    if (it != first_recv_.end() && it->second < i) return;
    const char* what = recv == Op::RecvF ? "input" : "output gradient";
    if (it != first_recv_.end())
      fail(r, i, std::string(what) + " of " + mbst(mb, st) + " is received only later (action " + std::to_string(it->second) + ")");
    fail(r, i, std::string(what) + " of " + mbst(mb, st) + " is never received");
  }

  void forward(int r, int i, int mb, int chunk) {
    const int st = stage(r, i, mb, chunk);
    Progress& p = at(mb, st);
    if (p.f >= 0) fail(r, i, mbst(mb, st) + " is forwarded twice (first at action " + std::to_string(p.f) + ")");
    const int prev = neighbour(mb, st, -1);
    if (prev >= 0 && prev != r) need_received(r, i, mb, st, Op::RecvF);
    if (prev == r && at(mb, st - 1).f < 0) fail(r, i, "forward before the forward of the previous stage " + std::to_string(st - 1));
    p.f = i;
  }

  void backward(int r, int i, int mb, int chunk, bool split) {
    const int st = stage(r, i, mb, chunk);
    Progress& p = at(mb, st);
    if (p.f < 0) fail(r, i, "backward before forward of " + mbst(mb, st));
    if (p.b >= 0) fail(r, i, mbst(mb, st) + " is backwarded twice (first at action " + std::to_string(p.b) + ")");
    const int next = neighbour(mb, st, +1);
    if (next >= 0 && next != r) need_received(r, i, mb, st, Op::RecvB);
    if (next == r && at(mb, st + 1).b < 0) fail(r, i, "backward before the backward of the next stage " + std::to_string(st + 1));
    p.b = i;
    p.split = split;
  }

  void weight(int r, int i, int mb, int chunk) {
    const int st = stage(r, i, mb, chunk);
    Progress& p = at(mb, st);
    if (p.b < 0) fail(r, i, "W before its I for " + mbst(mb, st));
    if (!p.split) fail(r, i, "W after a full backward B of " + mbst(mb, st) + " (nothing left to do)");
    if (p.w >= 0) fail(r, i, "W of " + mbst(mb, st) + " twice (first at action " + std::to_string(p.w) + ")");
    p.w = i;
  }

  void comm(int r, int i, const Action& a) {
    const int st = stage(r, i, a.mb, a.chunk);
    Progress& p = at(a.mb, st);
    const bool fwd = a.op == Op::SendF || a.op == Op::RecvF;
    const bool send = a.op == Op::SendF || a.op == Op::SendB;
    // SendF and RecvB talk to the next stage, SendB and RecvF to the previous one.
    const int peer = neighbour(a.mb, st, (a.op == Op::SendF || a.op == Op::RecvB) ? +1 : -1);
    if (peer < 0 || peer == r)
      fail(r, i, std::string(peer < 0 ? "there is no " : "the hand-off is local: no ") +
                     (a.op == Op::SendF || a.op == Op::RecvB ? "next" : "previous") + " stage on another rank for " +
                     mbst(a.mb, st));
    int& slot = fwd ? (send ? p.send_f : p.recv_f) : (send ? p.send_b : p.recv_b);
    if (slot >= 0) fail(r, i, std::string(op_name(a.op)) + " twice for " + mbst(a.mb, st) + " (first at action " + std::to_string(slot) + ")");
    if (send && (fwd ? p.f : p.b) < 0)
      fail(r, i, std::string("sends the ") + (fwd ? "activation" : "gradient") + " of " + mbst(a.mb, st) + " before computing it");
    slot = i;
  }

  void check_rank(int r) {
    const auto& acts = s_.actions[size_t(r)];
    // Where each receive is first posted on this rank: scanning the earlier actions for every
    // consumer was quadratic (pp 32 x 1920 micro-batches of 1F1B: 7,680 actions per rank).
    first_recv_.clear();
    for (int j = 0; j < int(acts.size()); ++j) {
      const Action& a = acts[size_t(j)];
      if (a.op == Op::RecvF || a.op == Op::RecvB) first_recv_.try_emplace({a.op, a.mb, s_.stage_of(a.mb, r, a.chunk)}, j);
    }
    for (int i = 0; i < int(acts.size()); ++i) {
      const Action& a = acts[size_t(i)];
      switch (a.op) {
        case Op::F: forward(r, i, a.mb, a.chunk); break;
        case Op::B: backward(r, i, a.mb, a.chunk, false); break;
        case Op::I: backward(r, i, a.mb, a.chunk, true); break;
        case Op::W: weight(r, i, a.mb, a.chunk); break;
        case Op::FB:
          forward(r, i, a.mb, a.chunk);
          backward(r, i, a.mb2, a.chunk2, false);
          break;
        default: comm(r, i, a);
      }
    }
  }

  void check_complete() {
    for (int mb = 0; mb < s_.microbatches; ++mb)
      for (int st = 0; st < s_.stages; ++st) {
        const Progress& p = at(mb, st);
        const Hop& h = s_.hop(mb, st);
        if (p.f < 0)
          throw std::invalid_argument("rank " + std::to_string(h.rank) + " chunk " + std::to_string(h.chunk) + ": " +
                                      mbst(mb, st) + " is never forwarded");
        if (p.b < 0) fail(h.rank, p.f, mbst(mb, st) + " is forwarded but never backwarded");
        if (p.split && p.w < 0) fail(h.rank, p.b, mbst(mb, st) + " has its I but never its W");
        const int next = neighbour(mb, st, +1), prev = neighbour(mb, st, -1);
        if (next >= 0 && next != h.rank && p.send_f < 0)
          fail(h.rank, p.f, "output of " + mbst(mb, st) + " is never sent to rank " + std::to_string(next));
        if (prev >= 0 && prev != h.rank && p.send_b < 0)
          fail(h.rank, p.b, "input gradient of " + mbst(mb, st) + " is never sent to rank " + std::to_string(prev));
      }
  }

  const Schedule& s_;
  std::vector<Progress> state_;
  std::map<std::tuple<Op, int, int>, int> first_recv_;  // (op, micro-batch, stage) -> action index, this rank
};

void check_shape(const Schedule& s) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("malformed schedule: " + m); };
  if (s.pp < 1 || s.chunks < 1 || s.stages < 1 || s.microbatches < 1) bad("pp, chunks, stages and micro-batches must be positive");
  if (int(s.actions.size()) != s.pp) bad(std::to_string(s.actions.size()) + " action lists for pp=" + std::to_string(s.pp));
  if (int(s.route_of.size()) != s.microbatches) bad("route_of has " + std::to_string(s.route_of.size()) + " entries");
  for (int r : s.route_of)
    if (r < 0 || r >= int(s.routes.size())) bad("route " + std::to_string(r) + " does not exist");
  for (const auto& route : s.routes) {
    if (int(route.size()) != s.stages) bad("a route has " + std::to_string(route.size()) + " stages, not " + std::to_string(s.stages));
    for (const Hop& h : route)
      if (h.rank < 0 || h.rank >= s.pp || h.chunk < 0 || h.chunk >= s.chunks) bad("a route leaves the ranks or chunks");
  }
}

}  // namespace

Validation validate(const Schedule& s, CommModel model) {
  check_shape(s);
  Checker(s).run();
  const detail::Replay run = detail::replay(s, uniform_costs(s, ActionCosts{}));
  if (!run.finished) throw std::invalid_argument("deadlock: " + run.stuck);
  if (model == CommModel::InOrder) {
    if (const std::string order = point_to_point_order(s); !order.empty())
      throw std::invalid_argument("point-to-point order: " + order);
    const detail::Replay strict = detail::replay_in_order(s, uniform_costs(s, ActionCosts{}));
    if (!strict.finished) throw std::invalid_argument("deadlock (in-order): " + strict.stuck);
  }
  Validation v;
  for (const auto& acts : s.actions) v.peak_activations.push_back(detail::peak_activations(acts));
  return v;
}

std::string point_to_point_order(const Schedule& s) {
  check_shape(s);
  // A message is (kind, micro-batch, sending stage); per direction (from, to) the sender's posting
  // order and the receiver's.
  using Key = std::tuple<char, int, int>;
  std::map<std::pair<int, int>, std::vector<Key>> sent, received;
  for (int r = 0; r < s.pp; ++r)
    for (const Action& a : s.actions[size_t(r)]) {
      if (a.op != Op::SendF && a.op != Op::SendB && a.op != Op::RecvF && a.op != Op::RecvB) continue;
      const int st = s.stage_of(a.mb, r, a.chunk);
      const bool fwd = a.op == Op::SendF || a.op == Op::RecvF;
      const bool send = a.op == Op::SendF || a.op == Op::SendB;
      const int from_st = send ? st : (fwd ? st - 1 : st + 1);
      const int to_st = send ? (fwd ? st + 1 : st - 1) : st;
      if (st < 0 || from_st < 0 || to_st < 0 || from_st >= s.stages || to_st >= s.stages)
        throw std::invalid_argument("rank " + std::to_string(r) + ": " + to_string(a) + " has no peer (run validate() first)");
      const int from = s.hop(a.mb, from_st).rank, to = s.hop(a.mb, to_st).rank;
      (send ? sent : received)[{from, to}].push_back({fwd ? 'F' : 'B', a.mb, from_st});
    }
  auto name = [](const Key& k) {
    return std::string(1, std::get<0>(k)) + " of micro-batch " + std::to_string(std::get<1>(k)) + " from stage " +
           std::to_string(std::get<2>(k));
  };
  for (const auto& [pair, out] : sent) {
    const std::vector<Key>& in = received[pair];
    for (size_t i = 0; i < std::max(out.size(), in.size()); ++i) {
      if (i < out.size() && i < in.size() && out[i] == in[i]) continue;
      return "rank " + std::to_string(pair.first) + " -> rank " + std::to_string(pair.second) + ", message " +
             std::to_string(i) + ": sent " + (i < out.size() ? name(out[i]) : "nothing") + ", received as " +
             (i < in.size() ? name(in[i]) : "nothing");
    }
  }
  return "";
}

}  // namespace shoestring::parallel
