// post_in_one_order() (schedule_build.h): one global order of messages, taken from a replay.
//
// Why it is safe under CommModel::InOrder (schedule.h): sort every message by the time its
// producer ends in the replay. A rank's posts follow that order, so on both ends of a rank pair
// the pair's messages come in the same order, and a send that precedes a receive on one stream was
// produced no later than the receive's message, hence (compute being serial and every cost
// positive) by a compute action before the receive's consumer. Each post waits only for compute
// that ended no later than its own message time, so running the messages in the sorted order
// reproduces the replay's times exactly: the in-order run finishes, and with the costs of the
// replay it finishes as fast as the tag-matched one (tested). Another order of the same compute
// may deadlock: two ranks each sending to the other before receiving wait forever.
#include <algorithm>
#include <tuple>
#include <vector>

#include "parallel/schedule_build.h"
#include "parallel/schedule_replay.h"

namespace shoestring::parallel::detail {
namespace {

// What a compute action produces, for its sends: (gradient?, micro-batch, chunk).
using Product = std::tuple<bool, int, int>;

std::vector<Product> products(const Action& a) {
  switch (a.op) {
    case Op::F: return {{false, a.mb, a.chunk}};
    case Op::B:
    case Op::I: return {{true, a.mb, a.chunk}};
    case Op::FB: return {{false, a.mb, a.chunk}, {true, a.mb2, a.chunk2}};
    default: return {};
  }
}

Product needs(const Action& post) { return {post.op == Op::SendB, post.mb, post.chunk}; }

struct Message {
  double time = 0;  // when its producer ends in the replay
  int from = 0, from_index = 0, to = 0;
  Action send, recv;
};

}  // namespace

void post_in_one_order(Schedule& s) {
  const Replay run = replay(s, uniform_costs(s, ActionCosts{}));
  if (!run.finished) return;
  const size_t ranks = size_t(s.pp), mbs = size_t(s.microbatches);
  // Flat tables by (gradient?, micro-batch, chunk or stage) rather than ordered maps, whose
  // lookups were most of the time to build a large schedule (1F1B, pp 16 x 960 micro-batches).
  auto product_index = [&](const Product& p) {
    return (size_t(std::get<0>(p)) * mbs + size_t(std::get<1>(p))) * size_t(s.chunks) + size_t(std::get<2>(p));
  };
  // Messages by (gradient?, micro-batch, producing stage): the send's and the receive's halves.
  std::vector<Message> by_key(2 * mbs * size_t(s.stages));
  std::vector<bool> posted(by_key.size(), false);
  std::vector<double> produced_at(2 * mbs * size_t(s.chunks));  // this rank's, by product_index
  for (size_t r = 0; r < ranks; ++r) {
    for (const TimedAction& t : run.timeline[r])
      for (const Product& p : products(t.action)) produced_at[product_index(p)] = t.end;
    const auto& acts = s.actions[r];
    for (size_t j = 0; j < acts.size(); ++j) {
      const Action& a = acts[j];
      if (is_compute(a.op)) continue;
      const bool send = a.op == Op::SendF || a.op == Op::SendB, grad = a.op == Op::SendB || a.op == Op::RecvB;
      const int st = s.stage_of(a.mb, int(r), a.chunk);
      const size_t key = (size_t(grad) * mbs + size_t(a.mb)) * size_t(s.stages) + size_t(send ? st : grad ? st + 1 : st - 1);
      Message& m = by_key[key];
      posted[key] = true;
      if (send) {
        m.time = produced_at[product_index(needs(a))];
        m.from = int(r);
        m.from_index = int(j);
        m.send = a;
      } else {
        m.to = int(r);
        m.recv = a;
      }
    }
  }
  std::vector<Message> order;
  for (size_t key = 0; key < by_key.size(); ++key)
    if (posted[key]) order.push_back(by_key[key]);
  std::sort(order.begin(), order.end(), [](const Message& a, const Message& b) {
    return std::tie(a.time, a.from, a.from_index) < std::tie(b.time, b.from, b.from_index);
  });
  std::vector<std::vector<Action>> posts(ranks);  // each rank's posts in the global order
  for (const Message& m : order) {
    posts[size_t(m.from)].push_back(m.send);
    posts[size_t(m.to)].push_back(m.recv);
  }
  std::vector<bool> done;  // this rank's products computed so far, by product_index
  for (size_t r = 0; r < ranks; ++r) {
    std::vector<Action> out;
    done.assign(produced_at.size(), false);
    size_t next = 0;
    // Every post that may go now: receives always, sends once their tensor is computed.
    auto flush = [&] {
      for (; next < posts[r].size(); ++next) {
        const Action& p = posts[r][next];
        const bool send = p.op == Op::SendF || p.op == Op::SendB;
        if (send && !done[product_index(needs(p))]) break;
        out.push_back(p);
      }
    };
    flush();
    for (const Action& a : s.actions[r]) {
      if (!is_compute(a.op)) continue;
      out.push_back(a);
      for (const Product& p : products(a)) done[product_index(p)] = true;
      flush();
    }
    s.actions[r] = std::move(out);
  }
}

}  // namespace shoestring::parallel::detail
