// GradReducer under mpirun: reduced gradients against the average each rank computes locally
// from every rank's (deterministic) inputs, with and without ZeRO-1, with gradient accumulation,
// unused parameters and two groups; and the overlap of bucket reductions with backward.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <gtest/gtest.h>

#include <thread>

#include "parallel/grad_reducer.h"
#include "tests/parallel/mpi_test_env.h"

using namespace shoestring;
using shoestring::testing::test_world;

namespace {

// Parameters of awkward sizes (padding for ZeRO-1 shards, parameters split across shards).
std::vector<at::Tensor> make_params() {
  at::manual_seed(7);
  std::vector<at::Tensor> ps;
  for (auto shape : std::vector<std::vector<int64_t>>{{7}, {13, 5}, {1}, {3, 3, 3}, {100}, {2, 9}})
    ps.push_back(at::randn(shape, at::kDouble).requires_grad_());
  return ps;
}

// Rank r's loss for micro-batch m: a rank-dependent function of every parameter except the
// "sometimes unused" one (index 2), which only odd ranks use.
at::Tensor loss_of(const std::vector<at::Tensor>& ps, int r, int m) {
  at::Tensor loss = at::zeros({}, at::kDouble);
  for (size_t i = 0; i < ps.size(); ++i) {
    if (i == 2 && r % 2 == 0) continue;
    const double a = 1.0 + 0.25 * r + 0.5 * m + 0.1 * double(i);
    loss = loss + (ps[i] * ps[i]).sum() * a + ps[i].sin().sum() * (r - 1.5);
  }
  return loss;
}

// The mean over ranks of each rank's gradient summed over `micro` micro-batches.
std::vector<at::Tensor> expected_grads(int size, int micro) {
  std::vector<at::Tensor> sum;
  for (int r = 0; r < size; ++r) {
    std::vector<at::Tensor> ps = make_params();
    for (int m = 0; m < micro; ++m) loss_of(ps, r, m).backward();
    for (size_t i = 0; i < ps.size(); ++i) {
      const at::Tensor g = ps[i].grad().defined() ? ps[i].grad() : at::zeros_like(ps[i]);
      if (sum.size() <= i) sum.push_back(g.clone());
      else sum[i] += g;
    }
  }
  for (auto& s : sum) s /= double(size);
  return sum;
}

struct Case {
  bool zero1;
  double bucket_mb;
  int micro;
};

void check_case(const Case& c) {
  parallel::ProcessGroup& world = *test_world();
  const int me = world.rank(), n = world.size();
  // Params 3 and 5 form a second group (as routed experts would), reduced over a split of the world
  // that here contains everyone again -- a distinct communicator with its own bucket sequence.
  parallel::GroupPtr experts = world.split(0, me, "ep_replica");
  std::vector<at::Tensor> ps = make_params();
  std::vector<parallel::ReducedParam> rp;
  for (size_t i = 0; i < ps.size(); ++i) rp.push_back({"p" + std::to_string(i), ps[i], (i == 3 || i == 5) ? 1 : 0});
  parallel::ReducerOptions o;
  o.zero1 = c.zero1;
  o.bucket_mb = c.bucket_mb;
  o.grad_scale = 1.0 / n;
  parallel::GradReducer red(rp, {test_world(), experts}, o);
  for (int m = 0; m < c.micro; ++m) {
    red.prepare_backward(m + 1 == c.micro);
    loss_of(ps, me, m).backward();
  }
  red.finish();
  const std::vector<at::Tensor> want = expected_grads(n, c.micro);

  double want_sq = 0;
  for (const auto& w : want) want_sq += w.pow(2).sum().item<double>();
  EXPECT_NEAR(red.global_grad_sq(world), want_sq, 1e-12 * want_sq);

  size_t covered = 0;
  for (const auto& s : red.owned()) {
    const at::Tensor w = want[s.param].reshape({-1}).narrow(0, s.offset, s.value.numel());
    EXPECT_TRUE(at::allclose(s.grad, w, 1e-13, 1e-13)) << "param " << s.param << " offset " << s.offset;
    covered += size_t(s.value.numel());
  }
  // Every element is owned by exactly one rank with ZeRO-1, by every rank without.
  at::Tensor total = at::full({1}, int64_t(covered), at::kLong);
  world.all_reduce(total)->wait();
  int64_t numel = 0;
  for (const auto& p : ps) numel += p.numel();
  EXPECT_EQ(total.item<int64_t>(), c.zero1 ? numel : numel * n);
  if (!c.zero1) {
    for (size_t i = 0; i < ps.size(); ++i) EXPECT_TRUE(at::allclose(ps[i].grad(), want[i], 1e-13, 1e-13));
  }

  // An "optimizer step" on the owned elements, then every rank must hold every update.
  for (const auto& s : red.owned()) {
    at::NoGradGuard ng;
    s.value.add_(s.grad, -0.5);
  }
  red.all_gather_params();
  const std::vector<at::Tensor> start = make_params();
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_TRUE(at::allclose(ps[i], start[i] - 0.5 * want[i], 1e-13, 1e-13)) << "param " << i;
}

TEST(GradReducer, AllReduceMatchesTheMeanOfEveryRanksGradient) { check_case({false, 25, 1}); }
TEST(GradReducer, SmallBucketsAndAccumulation) { check_case({false, 1e-4, 3}); }
TEST(GradReducer, Zero1ShardsMatchAndGatherRestoresParameters) { check_case({true, 25, 1}); }
TEST(GradReducer, Zero1SmallBucketsAndAccumulation) { check_case({true, 2e-4, 2}); }

// Early buckets are issued, and started by the backend, while backward is still running: a chain
// of layers whose backward takes measurable time, one parameter per bucket.
TEST(GradReducer, EarlyBucketsStartBeforeBackwardEnds) {
  parallel::ProcessGroup& world = *test_world();
  at::manual_seed(3);
  const int layers = 6;
  std::vector<at::Tensor> ws;
  std::vector<parallel::ReducedParam> rp;
  for (int i = 0; i < layers; ++i) {
    ws.push_back((at::randn({256, 256}) / 16).requires_grad_());
    rp.push_back({"w" + std::to_string(i), ws.back(), 0});
  }
  parallel::ReducerOptions o;
  o.bucket_mb = 0.2;  // 256 KiB each: one layer per bucket
  parallel::GradReducer red(rp, {test_world()}, o);
  ASSERT_EQ(red.num_buckets(), size_t(layers));
  at::Tensor x = at::randn({512, 256});
  for (const auto& w : ws) x = at::tanh(at::matmul(x, w));
  red.prepare_backward(true);
  x.sum().backward();
  const double backward_end = parallel::steady_seconds();
  red.finish();
  const auto& t = red.trace();
  // Bucket 0 holds the last layer, whose gradient backward produces first.
  EXPECT_GT(t[0].issued_at, 0);
  EXPECT_LT(t[0].issued_at, red.backward_hooks_done_at());
  EXPECT_GT(t[0].started_at, 0);
  EXPECT_LT(t[0].started_at, backward_end);
  for (size_t b = 1; b < t.size(); ++b) EXPECT_LE(t[b - 1].issued_at, t[b].issued_at);  // issued in order
  if (world.rank() == 0)
    std::printf("bucket 0 issued %.3f ms and started %.3f ms before backward ended (%.3f ms after it began)\n",
                1e3 * (backward_end - t[0].issued_at), 1e3 * (backward_end - t[0].started_at),
                1e3 * (t.back().ready_at - t[0].ready_at));
}

}  // namespace
