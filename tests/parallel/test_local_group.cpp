// The local backend in one process: what a group of one does that the MPI backend's tests (run
// with the local world too, as test_collectives_local) do not reach.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <stdexcept>

#include "parallel/local_group.h"
#include "tests/parallel/split_backward_check.h"

namespace shoestring::parallel {
namespace {

TEST(LocalGroup, IsAGroupOfOne) {
  auto g = make_local_group();
  EXPECT_EQ(g->backend(), "local");
  EXPECT_EQ(g->name(), "world");
  EXPECT_EQ(g->rank(), 0);
  EXPECT_EQ(g->size(), 1);
  EXPECT_EQ(g->world_ranks(), std::vector<int>{0});
  auto sub = g->split(3, 0, "dp");
  EXPECT_EQ(sub->name(), "dp");
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(g->split(-1, 0, "none"), nullptr);
}

TEST(LocalGroup, SplitBackwardRunsOtherWorkBetweenPostAndWait) {
  shoestring::testing::expect_split_backward_order(make_local_group(), at::TensorOptions().dtype(at::kFloat));
}

TEST(LocalGroup, ExchangeWaitsRunTheWaitFillerWhileTheGradientsTravel) {
  shoestring::testing::expect_filled_waits(make_local_group(), at::TensorOptions().dtype(at::kFloat));
}

TEST(LocalGroup, CollectivesAreCopiesOrNoOps) {
  auto g = make_local_group();
  at::Tensor t = at::arange(5, at::kFloat);
  auto w = g->all_reduce(t, ReduceOp::Max);
  EXPECT_TRUE(w->done());
  w->wait();
  EXPECT_TRUE(at::equal(t, at::arange(5, at::kFloat)));
  at::Tensor out = at::zeros({5});
  g->reduce_scatter(out, t)->wait();
  EXPECT_TRUE(at::equal(out, t));
  out.zero_();
  g->all_gather(out, t)->wait();
  EXPECT_TRUE(at::equal(out, t));
  at::Tensor rows = at::zeros({5, 2}), src = at::rand({5, 2});
  g->all_to_all(rows, src, {5}, {5})->wait();
  EXPECT_TRUE(at::equal(rows, src));
  EXPECT_THROW(g->all_to_all(rows, src, {4}, {5}), std::invalid_argument);
  EXPECT_THROW(g->broadcast(t, 1), std::invalid_argument);
  EXPECT_THROW(g->reduce_scatter(at::zeros({4}), t), std::invalid_argument);
}

TEST(LocalGroup, SendRecvToSelfPairByTag) {
  auto g = make_local_group();
  at::Tensor a = at::full({3}, 1.0), b = at::full({3}, 2.0), ra = at::zeros({3}), rb = at::zeros({3});
  auto rw = g->recv(rb, 0, 7);  // posted before its send
  EXPECT_FALSE(rw->done());
  auto sa = g->send(a, 0, 1);
  EXPECT_FALSE(sa->done());
  g->send(b, 0, 7)->wait();
  EXPECT_TRUE(rw->done());
  g->recv(ra, 0, 1)->wait();
  EXPECT_TRUE(sa->done());
  EXPECT_TRUE(at::equal(ra, a));
  EXPECT_TRUE(at::equal(rb, b));
  auto lonely = g->recv(ra, 0, 9);
  EXPECT_THROW(lonely->wait(), std::logic_error);
  EXPECT_THROW(g->send(a, 1, 0), std::invalid_argument);
}

TEST(LocalGroup, WorldIsLocalWithoutMpi) {
  World w;  // not launched by MPI
  EXPECT_EQ(make_world_group(w, {})->backend(), "local");
}

}  // namespace
}  // namespace shoestring::parallel
