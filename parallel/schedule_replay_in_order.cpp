// replay_in_order(): the schedule run under CommModel::InOrder (schedule.h), NCCL as NcclGroup
// issues point-to-point. Every rank has a compute stream and one communication stream, both in
// the order of its action list; a send and the receive in the same position of its direction
// complete together. Like replay(), sweeping the ranks until none can move gives each action its
// earliest time: a post's start depends only on its own stream, the compute before it and its
// partner, all of which are settled before it moves.
#include <algorithm>
#include <map>

#include "parallel/schedule_build.h"
#include "parallel/schedule_replay.h"

namespace shoestring::parallel::detail {
namespace {

// One Send*/Recv* action and the message it carries.
struct Post {
  int rank = 0, index = 0;  // where it is
  bool send = false;
  int peer = 0;
  bool grad = false;
  int mb = 0, stage = 0;  // the message: kind, micro-batch, producing stage
  size_t before = 0;      // compute actions before it on its rank: the NCCL call waits for them
  int partner = -1;       // the post it meets, -1 when the peer's post in that position carries another message
};

}  // namespace

Replay replay_in_order(const Schedule& s, const std::vector<std::vector<ActionCosts>>& table) {
  const size_t ranks = size_t(s.pp);
  std::vector<std::vector<size_t>> compute(ranks);  // list positions of compute actions
  std::vector<std::vector<int>> comm(ranks);        // post ids, in list order
  std::vector<Post> posts;
  std::map<std::pair<int, int>, std::vector<int>> sent, received;  // (from, to) -> post ids in order
  for (size_t r = 0; r < ranks; ++r) {
    const auto& acts = s.actions[r];
    for (size_t j = 0; j < acts.size(); ++j) {
      const Action& a = acts[j];
      if (is_compute(a.op)) {
        compute[r].push_back(j);
        continue;
      }
      Post p;
      p.rank = int(r);
      p.index = int(j);
      p.send = a.op == Op::SendF || a.op == Op::SendB;
      p.grad = a.op == Op::SendB || a.op == Op::RecvB;
      p.mb = a.mb;
      const int st = s.stage_of(a.mb, int(r), a.chunk);
      p.stage = p.send ? st : p.grad ? st + 1 : st - 1;
      const int peer_stage = p.send ? (p.grad ? st - 1 : st + 1) : p.stage;
      p.peer = s.hop(a.mb, peer_stage).rank;
      p.before = compute[r].size();
      const int id = int(posts.size());
      posts.push_back(p);
      comm[r].push_back(id);
      (p.send ? sent[{int(r), p.peer}] : received[{p.peer, int(r)}]).push_back(id);
    }
  }
  for (const auto& [dir, out] : sent) {
    const auto& in = received[dir];
    for (size_t n = 0; n < std::min(out.size(), in.size()); ++n) {
      Post &a = posts[size_t(out[n])], &b = posts[size_t(in[n])];
      if (a.grad != b.grad || a.mb != b.mb || a.stage != b.stage) continue;
      a.partner = in[n];
      b.partner = out[n];
    }
  }

  Ends ends(s);
  Replay out;
  out.busy.assign(ranks, 0);
  out.timeline.assign(ranks, {});
  std::vector<size_t> nc(ranks, 0), nk(ranks, 0);  // next compute, next post
  std::vector<double> compute_clock(ranks, 0), comm_clock(ranks, 0);
  std::vector<std::vector<double>> compute_end(ranks);
  // When post `id` can start: it heads its rank's stream, the compute before it is done and, for a
  // send, the tensor exists. kNotYet otherwise.
  auto ready = [&](int id) {
    const Post& p = posts[size_t(id)];
    const size_t r = size_t(p.rank);
    if (nk[r] >= comm[r].size() || comm[r][nk[r]] != id || nc[r] < p.before) return kNotYet;
    double t = comm_clock[r];
    if (p.before > 0) t = std::max(t, compute_end[r][p.before - 1]);
    if (p.send) t = std::max(t, ends.time({p.grad ? Need::LocalB : Need::LocalF, p.mb, p.stage, p.rank}));
    return t;
  };

  for (bool moved = true; moved;) {
    moved = false;
    for (size_t r = 0; r < ranks; ++r) {
      while (nc[r] < compute[r].size()) {
        const Action& a = s.actions[r][compute[r][nc[r]]];
        const double start = ends.start_of(s, int(r), a, compute_clock[r]);
        if (start == kNotYet) break;
        const double end = start + action_cost(table, int(r), a);
        ends.finish(s, int(r), a, end);
        out.timeline[r].push_back({a, start, end});
        out.busy[r] += end - start;
        compute_clock[r] = end;
        compute_end[r].push_back(end);
        ++nc[r];
        moved = true;
      }
      while (nk[r] < comm[r].size()) {
        const int id = comm[r][nk[r]];
        const Post& p = posts[size_t(id)];
        if (p.partner < 0) break;
        const double mine = ready(id), theirs = ready(p.partner);
        if (mine == kNotYet || theirs == kNotYet) break;
        const Post& sender = p.send ? p : posts[size_t(p.partner)];
        const int chunk = s.actions[size_t(sender.rank)][size_t(sender.index)].chunk;
        const double done = std::max(mine, theirs) + table[size_t(sender.rank)][size_t(chunk)].comm;
        ends.msg(p.grad, p.mb, p.stage) = done;
        comm_clock[r] = comm_clock[size_t(p.peer)] = done;
        ++nk[r];
        ++nk[size_t(p.peer)];
        moved = true;
      }
    }
  }

  out.finished = true;
  for (size_t r = 0; r < ranks; ++r) {
    out.makespan = std::max({out.makespan, compute_clock[r], comm_clock[r]});
    std::string why;
    if (nc[r] < compute[r].size()) {
      const size_t j = compute[r][nc[r]];
      const Action& a = s.actions[r][j];
      why = "action " + std::to_string(j) + " (" + to_string(a) + ") waits for " + ends.waits(s, int(r), a);
    }
    if (nk[r] < comm[r].size()) {
      const Post& p = posts[size_t(comm[r][nk[r]])];
      std::string waits;
      if (p.partner < 0) {
        waits = std::string("a matching ") + (p.send ? "receive" : "send") + " (rank " + std::to_string(p.peer) +
                " posts another message in that position)";
      } else if (nc[r] < p.before) {
        waits = "the compute before it (action " + std::to_string(compute[r][p.before - 1]) + ")";
      } else {
        const Post& q = posts[size_t(p.partner)];
        waits = "rank " + std::to_string(q.rank) + " to reach its action " + std::to_string(q.index) + " (" +
                to_string(s.actions[size_t(q.rank)][size_t(q.index)]) + ")";
      }
      why += (why.empty() ? "" : ", ") + std::string("action ") + std::to_string(p.index) + " (" +
             to_string(s.actions[r][size_t(p.index)]) + ") waits for " + waits;
    }
    if (why.empty()) continue;
    out.stuck += std::string(out.finished ? "" : "; ") + "rank " + std::to_string(r) + " " + why;
    out.finished = false;
  }
  return out;
}

}  // namespace shoestring::parallel::detail
