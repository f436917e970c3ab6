// Every collective of the world's backend (MPI under mpirun, local in one process) against a
// reference each rank computes for itself: every rank can build every rank's input from its rank.
// Around collectives only EXPECT_*: a rank that stops early would leave the others waiting.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <chrono>
#include <stdexcept>
#include <thread>

#include "tests/parallel/mpi_test_env.h"

namespace shoestring::parallel {
namespace {

using testing::test_world;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf,
                                             at::kLong,  at::kInt,    at::kByte};

// Small integers, exact in every dtype and in a sum over a few ranks (uint8: 0..16, others -8..8).
at::Tensor input(int64_t n, int rank, at::ScalarType dt, int64_t salt = 0) {
  at::Tensor v = (at::arange(n, at::kLong) * 3 + (rank + 1) * 7 + salt * 5) % 17;
  if (dt != at::kByte) v = v - 8;
  return v.to(dt);
}

at::Tensor reference(int64_t n, int size, at::ScalarType dt, ReduceOp op, int64_t salt = 0) {
  at::Tensor r = input(n, 0, dt, salt).to(at::kLong);
  for (int k = 1; k < size; ++k) {
    const at::Tensor x = input(n, k, dt, salt).to(at::kLong);
    r = op == ReduceOp::Sum ? r + x : op == ReduceOp::Max ? at::maximum(r, x) : at::minimum(r, x);
  }
  return r;  // compared as int64
}

bool same(const at::Tensor& got, const at::Tensor& want) {
  return at::equal(got.to(at::kLong), want.to(at::kLong));
}

std::string label(at::ScalarType dt, int64_t n) { return std::string(c10::toString(dt)) + " n=" + std::to_string(n); }

TEST(Collectives, AllReduceEveryDtypeOpAndSize) {
  auto g = test_world();
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min})
    for (at::ScalarType dt : kDtypes)
      for (int64_t n : {0, 1, 7, 1003, 100003}) {  // the largest go round the ring (p2p_collectives.h)
        at::Tensor t = input(n, g->rank(), dt);
        g->all_reduce(t, op)->wait();
        EXPECT_TRUE(same(t, reference(n, g->size(), dt, op))) << label(dt, n) << " op " << int(op);
        EXPECT_EQ(t.scalar_type(), dt);
      }
}

TEST(Collectives, AllReduceLargeOddSize) {
  auto g = test_world();
  const int64_t n = 1000003;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    at::Tensor t = input(n, g->rank(), dt);
    g->all_reduce(t)->wait();
    EXPECT_TRUE(same(t, reference(n, g->size(), dt, ReduceOp::Sum))) << label(dt, n);
  }
}

TEST(Collectives, AllReduceFractionsWithinRounding) {
  auto g = test_world();
  const int64_t n = 4099;
  auto x = [](int r) { return at::sin(at::arange(4099, at::kDouble) * 0.37 + r); };
  at::Tensor want = at::zeros({n}, at::kDouble);
  for (int r = 0; r < g->size(); ++r) want += x(r);
  at::Tensor f32 = x(g->rank()).to(at::kFloat), b16 = x(g->rank()).to(at::kBFloat16);
  auto w1 = g->all_reduce(f32), w2 = g->all_reduce(b16);
  w1->wait();
  w2->wait();
  EXPECT_TRUE(at::allclose(f32.to(at::kDouble), want, 0, 1e-5));
  // bf16 keeps 8 bits; each of the size-1 additions rounds once.
  EXPECT_LT((b16.to(at::kDouble) - want).abs().max().item<double>(), 0.02 * g->size());
}

TEST(Collectives, ReduceScatter) {
  auto g = test_world();
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max})
    for (at::ScalarType dt : kDtypes)
      for (int64_t block : {0, 1, 7, 1001, 70001}) {  // the largest take the direct path (p2p_collectives.h)
        const int64_t n = block * g->size();
        at::Tensor in = input(n, g->rank(), dt);
        at::Tensor out = at::full({block}, 99, dt);
        g->reduce_scatter(out, in, op)->wait();
        const at::Tensor want = reference(n, g->size(), dt, op).narrow(0, g->rank() * block, block);
        EXPECT_TRUE(same(out, want)) << label(dt, block);
        at::Tensor buf = input(n, g->rank(), dt);  // in place: out is block rank() of in
        at::Tensor mine = buf.narrow(0, g->rank() * block, block);
        g->reduce_scatter(mine, buf, op)->wait();
        EXPECT_TRUE(same(mine, want)) << "in place " << label(dt, block);
      }
}

TEST(Collectives, AllGatherOutOfPlaceAndInPlace) {
  auto g = test_world();
  for (at::ScalarType dt : kDtypes)
    for (int64_t n : {0, 1, 7, 100003}) {
      std::vector<at::Tensor> parts;
      for (int r = 0; r < g->size(); ++r) parts.push_back(input(n, r, dt));
      const at::Tensor want = at::cat(parts);
      at::Tensor out = at::zeros({n * g->size()}, dt);
      g->all_gather(out, input(n, g->rank(), dt))->wait();
      EXPECT_TRUE(same(out, want)) << label(dt, n);
      at::Tensor buf = at::zeros({n * g->size()}, dt);
      at::Tensor mine = buf.narrow(0, g->rank() * n, n);
      mine.copy_(input(n, g->rank(), dt));
      g->all_gather(buf, mine)->wait();
      EXPECT_TRUE(same(buf, want)) << "in place " << label(dt, n);
    }
}

TEST(Collectives, BroadcastFromEveryRoot) {
  auto g = test_world();
  for (int root = g->size() - 1; root >= 0; --root)
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kByte})
      for (int64_t n : {0, 7, 100003}) {
        at::Tensor t = g->rank() == root ? input(n, root, dt, 3) : at::zeros({n}, dt);
        g->broadcast(t, root)->wait();
        EXPECT_TRUE(same(t, input(n, root, dt, 3))) << "root " << root << " " << label(dt, n);
      }
}

// Rows from rank s to rank d: none from rank 0 (it sends nothing) and none to the last rank (it
// receives nothing), 0..3 otherwise.
int64_t a2a_count(int s, int d, int size) {
  if (size > 1 && (s == 0 || d == size - 1)) return 0;
  return (s + 2 * d + 1) % 4;
}

// Row k from s to d: 3 columns holding (s, d, k) so misplaced rows show.
at::Tensor a2a_rows(int s, int d, int size, at::ScalarType dt) {
  const int64_t c = a2a_count(s, d, size);
  at::Tensor rows = at::empty({c, 3}, at::kLong);
  for (int64_t k = 0; k < c; ++k) {
    rows[k][0] = s;
    rows[k][1] = d;
    rows[k][2] = k;
  }
  return rows.to(dt);
}

TEST(Collectives, AllToAllUnevenAndZeroCounts) {
  auto g = test_world();
  const int me = g->rank(), n = g->size();
  for (at::ScalarType dt : {at::kFloat, at::kInt, at::kBFloat16}) {
    std::vector<int64_t> sc, rc;
    std::vector<at::Tensor> send_parts, want_parts;
    for (int j = 0; j < n; ++j) {
      sc.push_back(a2a_count(me, j, n));
      rc.push_back(a2a_count(j, me, n));
      send_parts.push_back(a2a_rows(me, j, n, dt));
      want_parts.push_back(a2a_rows(j, me, n, dt));
    }
    const at::Tensor in = at::cat(send_parts), want = at::cat(want_parts);
    at::Tensor out = at::full({want.size(0), 3}, -1, dt);
    g->all_to_all(out, in, rc, sc)->wait();
    EXPECT_TRUE(same(out, want)) << c10::toString(dt) << " rank " << me;
  }
}

TEST(Collectives, SendRecvRing) {
  auto g = test_world();
  const int n = g->size(), me = g->rank();
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  // Two tags in flight at once, received in the opposite order to the sends.
  const at::Tensor a = input(1001, me, at::kFloat, 1), b = input(5, me, at::kLong, 2);
  at::Tensor ra = at::zeros({1001}, at::kFloat), rb = at::zeros({5}, at::kLong);
  auto s1 = g->send(a, next, 1), s2 = g->send(b, next, 2);
  auto r2 = g->recv(rb, prev, 2), r1 = g->recv(ra, prev, 1);
  for (auto& w : {r1, r2, s1, s2}) w->wait();
  EXPECT_TRUE(same(ra, input(1001, prev, at::kFloat, 1)));
  EXPECT_TRUE(same(rb, input(5, prev, at::kLong, 2)));
}

TEST(Collectives, SplitByParityInterleavedWithWorld) {
  auto g = test_world();
  const int me = g->rank(), n = g->size();
  auto half = g->split(me % 2, me, "half");
  ASSERT_TRUE(half);  // local check, same outcome on every rank
  std::vector<int> members;
  for (int r = me % 2; r < n; r += 2) members.push_back(g->world_ranks()[size_t(r)]);
  EXPECT_EQ(half->world_ranks(), members);
  EXPECT_EQ(half->rank(), me / 2);
  EXPECT_EQ(half->name(), "half");
  EXPECT_EQ(half->backend(), g->backend());

  // Reversed keys reverse the ranks.
  auto rev = g->split(0, -me, "reversed");
  EXPECT_EQ(rev->rank(), n - 1 - me);

  // World and sub-group calls issued back to back and waited together.
  at::Tensor w1 = input(777, me, at::kFloat), h1 = input(333, me, at::kInt), w2 = input(11, me, at::kDouble);
  at::Tensor hb = half->rank() == 0 ? input(99, me, at::kFloat, 4) : at::zeros({99}, at::kFloat);
  auto a = g->all_reduce(w1);
  auto b = half->all_reduce(h1, ReduceOp::Max);
  auto c = half->broadcast(hb, 0);
  auto d = g->all_reduce(w2, ReduceOp::Min);
  for (auto& w : {d, c, b, a}) w->wait();
  EXPECT_TRUE(same(w1, reference(777, n, at::kFloat, ReduceOp::Sum)));
  EXPECT_TRUE(same(w2, reference(11, n, at::kDouble, ReduceOp::Min)));
  at::Tensor want_h = input(333, members[0], at::kLong);
  for (int r : members) want_h = at::maximum(want_h, input(333, r, at::kLong));
  EXPECT_TRUE(same(h1, want_h));
  EXPECT_TRUE(same(hb, input(99, members[0], at::kFloat, 4)));

  // A member that passes a negative color joins no group.
  auto some = g->split(me == n - 1 ? -1 : 0, me, "all_but_last");
  EXPECT_EQ(some == nullptr, me == n - 1);
  if (some) {
    EXPECT_EQ(some->size(), n - 1);
  }
}

TEST(Collectives, ManyInFlightWaitedInReverse) {
  auto g = test_world();
  std::vector<at::Tensor> ts;
  std::vector<WorkPtr> ws;
  for (int i = 0; i < 64; ++i) {
    ts.push_back(input(100 + 37 * i, g->rank(), at::kFloat, i));
    ws.push_back(g->all_reduce(ts.back()));
  }
  for (int i = 63; i >= 0; --i) ws[size_t(i)]->wait();
  for (int i = 0; i < 64; ++i)
    EXPECT_TRUE(same(ts[size_t(i)], reference(100 + 37 * i, g->size(), at::kFloat, ReduceOp::Sum, i))) << i;
}

// An operation issued alone and neither waited on nor started (Work::start) is still progressed
// by the comm thread (comm_thread.h): here rank 0 waits 50 ms before it even issues, so the others
// have long since issued theirs and only poll done() while sleeping, never calling wait().
TEST(Collectives, UnwaitedOperationCompletesWhileTheCallerOnlyPolls) {
  auto g = test_world();
  for (int64_t n : {int64_t(7), int64_t(300000)}) {  // libnbc, and the ring (p2p_collectives.h)
    if (g->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    at::Tensor t = input(n, g->rank(), at::kFloat);
    parallel::WorkPtr w = g->all_reduce(t);
    const auto t0 = std::chrono::steady_clock::now();
    while (!w->done() && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(w->done()) << "n=" << n << ": not progressed in 20 s without a wait()";
    w->wait();
    EXPECT_TRUE(same(t, reference(n, g->size(), at::kFloat, ReduceOp::Sum))) << n;
  }
}

// All-reduces, all-gathers and broadcasts large enough for the point-to-point collectives
// (p2p_collectives.h) in flight together, waited in reverse: their messages share one
// communicator and must not cross.
TEST(Collectives, MixedPointToPointCollectivesInFlight) {
  auto g = test_world();
  const int n = g->size(), me = g->rank();
  const int64_t len = 70001;  // 280 KB of float32: above the default 256 KiB threshold
  std::vector<at::Tensor> reduced, gathered, bcast;
  std::vector<WorkPtr> ws;
  for (int i = 0; i < 6; ++i) {
    reduced.push_back(input(len, me, at::kFloat, i));
    ws.push_back(g->all_reduce(reduced.back()));
    gathered.push_back(at::zeros({len * n}, at::kFloat));
    ws.push_back(g->all_gather(gathered.back(), input(len, me, at::kFloat, i)));
    const int root = i % n;
    bcast.push_back(me == root ? input(len, root, at::kFloat, i) : at::zeros({len}, at::kFloat));
    ws.push_back(g->broadcast(bcast.back(), root));
  }
  for (auto it = ws.rbegin(); it != ws.rend(); ++it) (*it)->wait();
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(same(reduced[size_t(i)], reference(len, n, at::kFloat, ReduceOp::Sum, i))) << i;
    std::vector<at::Tensor> parts;
    for (int r = 0; r < n; ++r) parts.push_back(input(len, r, at::kFloat, i));
    EXPECT_TRUE(same(gathered[size_t(i)], at::cat(parts))) << i;
    EXPECT_TRUE(same(bcast[size_t(i)], input(len, i % n, at::kFloat, i))) << i;
  }
}

TEST(Collectives, DoneBecomesTrueWithoutWait) {
  auto g = test_world();
  at::Tensor t = input(50000, g->rank(), at::kFloat);
  auto w = g->all_reduce(t);
  EXPECT_GT(w->issued_at(), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!w->done() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(w->done());
  EXPECT_GE(w->started_at(), w->issued_at());
  w->wait();  // after done(): returns at once
  EXPECT_TRUE(same(t, reference(50000, g->size(), at::kFloat, ReduceOp::Sum)));
  auto b = g->barrier();
  b->wait();
  EXPECT_TRUE(b->done());
}

TEST(Collectives, RejectsWhatTheBackendCannotCarry) {
  auto g = test_world();
  const at::Tensor strided = at::zeros({4, 4}, at::kFloat).t();
  try {
    g->all_reduce(strided);
    ADD_FAILURE() << "non-contiguous tensor accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce on group " + g->name()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
  }
  if (g->backend() == "mpi") {
    EXPECT_THROW(g->all_reduce(at::zeros({3}, at::kBool)), std::invalid_argument);
    EXPECT_THROW(g->broadcast(at::zeros({3}), g->size()), std::invalid_argument);
    EXPECT_THROW(g->reduce_scatter(at::zeros({2}), at::zeros({2 * g->size() + 1})), std::invalid_argument);
    EXPECT_THROW(g->all_to_all(at::zeros({1, 2}), at::zeros({1, 2}), {1}, {1}), std::invalid_argument);
  }
}

// The start-up exchange of train's placement check (world.h): strings of every length, empty ones
// included, come back by world rank.
TEST(Collectives, AllGatherStringsByRank) {
  const World& w = testing::test_mpi_world();
  const std::string mine = w.rank % 2 ? std::string(size_t(w.rank) * 3, char('a' + w.rank)) : "";
  const std::vector<std::string> all = all_gather_strings(w, mine);
  ASSERT_EQ(int(all.size()), w.size);
  for (int r = 0; r < w.size; ++r)
    EXPECT_EQ(all[size_t(r)], r % 2 ? std::string(size_t(r) * 3, char('a' + r)) : "") << "rank " << r;
}

// The placement check tells nodes apart by World::node: on this one machine every rank's is rank 0.
TEST(Collectives, EveryRankOfOneNodeHasItsFirstRankAsNode) {
  const World& w = testing::test_mpi_world();
  EXPECT_EQ(w.node, 0);
  EXPECT_EQ(w.local_rank, w.rank);
}

}  // namespace
}  // namespace shoestring::parallel
