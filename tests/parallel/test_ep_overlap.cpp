// The split MoE forward (MoE::forward_begin / forward_experts / forward_end) under expert
// parallelism, with 2 or 4 ranks: two micro-batches stepped in interleaved orders give the
// outputs and gradients of forward(A) then forward(B), skewed routing included; and begin()
// returns with the token exchange still in flight while a peer is late.
//
// Everything is compared bit for bit (float64): both runs compute each micro-batch with the same
// operations, and interleaving changes at most the order in which backward adds A's and B's
// contributions into a parameter's gradient, two terms, whose sum does not depend on the order.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/parallel/ep_layer_config.h"
#include "tests/parallel/mpi_test_env.h"
#include "trainer/expert_parallel.h"
#include "trainer/model/moe.h"

using namespace shoestring;
using shoestring::testing::test_world;

namespace {

// The whole layer (same initialisation on every rank), sharded over ep with its own dispatcher.
model::MoE sharded_layer(const parallel::GroupPtr& ep, const at::Tensor& bias) {
  const ModelConfig cfg = shoestring::testing::ep_test_layer();
  at::manual_seed(7);
  model::MoE layer(cfg);
  layer->to(at::kDouble);
  {
    at::NoGradGuard no_grad;
    layer->router->bias.copy_(bias.to(at::kDouble));
  }
  const int64_t per = cfg.n_routed_experts / ep->size();
  layer->shard_experts(ep->rank() * per, per);
  layer->set_dispatcher(std::make_shared<EpDispatcher>(ep));
  return layer;
}

parallel::GroupPtr ep_group(int size) {
  const auto& w = test_world();
  if (size == w->size()) return w;
  return w->split(w->rank() / size, w->rank(), "ep");
}

std::vector<int> ep_sizes() {
  const int n = test_world()->size();
  return n >= 4 ? std::vector<int>{n, 2} : std::vector<int>{n};
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return a.numel() == 0 ? 0.0 : (a - b).abs().max().item<double>();
}

// A step order over micro-batches 0 (A) and 1 (B): 'b' begin, 'x' experts, 'e' end.
using Order = std::vector<std::pair<char, int>>;

struct Result {
  std::vector<at::Tensor> ys, x_grads;
  std::vector<model::MoEStats> stats;
};

// Forward of both micro-batches (`order` empty: forward(A) then forward(B)), then backward of the
// sum of both losses sum(y * c).
Result run(model::MoE& layer, const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& cs,
           const Order& order) {
  Result r;
  std::vector<at::Tensor> x;
  for (const at::Tensor& t : xs) x.push_back(t.clone().requires_grad_());
  r.ys.resize(x.size());
  std::vector<std::vector<model::MoEStats>> stats(x.size());
  if (order.empty()) {
    for (size_t i = 0; i < x.size(); ++i) r.ys[i] = layer->forward(x[i], &stats[i]);
  } else {
    std::vector<model::MoEInFlight> s(x.size());
    for (const auto& [step, mb] : order) {
      const auto i = size_t(mb);
      if (step == 'b') s[i] = layer->forward_begin(x[i], &stats[i]);
      else if (step == 'x') layer->forward_experts(s[i]);
      else r.ys[i] = layer->forward_end(s[i]);
    }
  }
  at::Tensor loss = at::zeros({}, at::kDouble);
  for (size_t i = 0; i < x.size(); ++i) loss = loss + (r.ys[i] * cs[i]).sum();
  loss.backward();
  for (size_t i = 0; i < x.size(); ++i) {
    r.x_grads.push_back(x[i].grad());
    r.stats.push_back(stats[i].at(0));
  }
  return r;
}

// Micro-batches A and B (sequences of 5 tokens, batch(mb, ep rank) of them, different per rank)
// through `order` on one sharded layer and through forward(A), forward(B) on another.
void expect_interleaved_same(const parallel::GroupPtr& ep, const at::Tensor& bias, const Order& order,
                             const std::function<int64_t(int mb, int rank)>& batch) {
  const ModelConfig cfg = shoestring::testing::ep_test_layer();
  model::MoE ref = sharded_layer(ep, bias), split = sharded_layer(ep, bias);
  at::manual_seed(100 + ep->rank());
  std::vector<at::Tensor> xs, cs;
  for (int mb = 0; mb < 2; ++mb) {
    xs.push_back(at::randn({batch(mb, ep->rank()), 5, cfg.d_model}, at::kDouble));
    cs.push_back(at::randn({batch(mb, ep->rank()), 5, cfg.d_model}, at::kDouble));
  }
  const Result want = run(ref, xs, cs, {}), got = run(split, xs, cs, order);
  double worst = 0;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(at::equal(got.ys[i], want.ys[i])) << "output of micro-batch " << i;
    worst = std::max(worst, max_diff(got.x_grads[i], want.x_grads[i]));
    EXPECT_TRUE(at::equal(got.x_grads[i], want.x_grads[i])) << "input gradient of micro-batch " << i;
    EXPECT_TRUE(at::equal(got.stats[i].load, want.stats[i].load));
    const double bl = got.stats[i].balance_loss.item<double>(), blr = want.stats[i].balance_loss.item<double>();
    EXPECT_TRUE(bl == blr || (std::isnan(bl) && std::isnan(blr))) << bl << " vs " << blr;  // NaN: no sequences
  }
  const auto gp = split->named_parameters(), wp = ref->named_parameters();
  for (const auto& item : wp) {
    if (!item.value().requires_grad()) continue;
    const at::Tensor g = gp[item.key()].grad(), w = item.value().grad();
    ASSERT_TRUE(g.defined() && w.defined()) << item.key();
    worst = std::max(worst, max_diff(g, w));
    EXPECT_TRUE(at::equal(g, w)) << item.key();
  }
  if (test_world()->rank() == 0)
    std::printf("ep %d: worst gradient difference from forward(A), forward(B): %.3g\n", ep->size(), worst);
}

const Order kBeginsFirst = {{'b', 0}, {'b', 1}, {'x', 0}, {'x', 1}, {'e', 0}, {'e', 1}};
// B's steps cross A's the other way round, and A ends while B's tokens travel.
const Order kCrossed = {{'b', 0}, {'x', 0}, {'b', 1}, {'e', 0}, {'x', 1}, {'e', 1}};
const Order kReversed = {{'b', 1}, {'b', 0}, {'x', 1}, {'x', 0}, {'e', 0}, {'e', 1}};

int64_t two_and_three(int mb, int) { return mb == 0 ? 2 : 3; }

TEST(EpOverlap, InterleavedMicroBatchesMatchSequentialForward) {
  for (int size : ep_sizes())
    for (const Order& order : {kBeginsFirst, kCrossed, kReversed})
      expect_interleaved_same(ep_group(size), at::zeros({8}), order, two_and_three);
}

TEST(EpOverlap, EveryTokenToOneRankThroughTheSplitPath) {
  // Every token chooses experts 6 and 7: the last rank's only (ep 2 and 4), the others get none.
  at::Tensor bias = at::zeros({8});
  bias[6] = 100;
  bias[7] = 100;
  for (int size : ep_sizes())
    for (const Order& order : {kBeginsFirst, kCrossed}) expect_interleaved_same(ep_group(size), bias, order, two_and_three);
}

TEST(EpOverlap, ARankWithNoTokensThroughTheSplitPath) {
  // Rank 1 has no tokens in A, rank 0 none in B.
  auto batch = [](int mb, int rank) { return int64_t(rank == 1 - mb ? 0 : 2); };
  for (int size : ep_sizes())
    for (const Order& order : {kBeginsFirst, kCrossed}) expect_interleaved_same(ep_group(size), at::zeros({8}), order, batch);
}

// A cut forward (forward_begin's `cut`) takes the dispatch and the combine out of autograd. Its
// three pieces, backwarded one at a time with each reverse exchange started after a piece and
// waited for before the next (what the pipeline executor does for DualPipe's pairs), give the
// whole graph's input and parameter gradients bit for bit: the same operations, each gradient
// summed in the same order. Skewed routing (a rank with no rows) included.
TEST(EpOverlap, CutForwardPiecesGiveTheWholeGraphsGradients) {
  at::Tensor skewed = at::zeros({8});
  skewed[6] = 100;
  skewed[7] = 100;
  for (int size : ep_sizes())
    for (const at::Tensor& bias : {at::zeros({8}), skewed}) {
      const parallel::GroupPtr ep = ep_group(size);
      model::MoE ref = sharded_layer(ep, bias), cut = sharded_layer(ep, bias);
      at::manual_seed(200 + ep->rank());
      const at::Tensor x = at::randn({3, 5, 16}, at::kDouble), c = at::randn({3, 5, 16}, at::kDouble);
      const at::Tensor xr = x.clone().requires_grad_(), xc = x.clone().requires_grad_();
      const at::Tensor want = ref->forward(xr);
      (want * c).sum().backward();

      model::MoEInFlight s = cut->forward_begin(xc, nullptr, /*cut=*/true);
      cut->forward_experts(s);
      const at::Tensor y = cut->forward_end(s);
      ASSERT_EQ(s.cuts().size(), 2u);
      EXPECT_TRUE(at::equal(y, want));
      const model::ExchangeCut &dispatch = s.cuts()[0], &combine = s.cuts()[1];
      auto grads_of = [](const std::vector<at::Tensor>& leaves) {
        std::vector<at::Tensor> g;
        for (const at::Tensor& t : leaves) g.push_back(t.grad().defined() ? t.grad() : at::zeros_like(t));
        return g;
      };
      torch::autograd::backward({y}, {c});  // the last piece: to the combined rows and the shared leaf
      const parallel::GradsFuture partial = combine.reverse(grads_of(combine.received));
      torch::autograd::backward(combine.sent, partial());  // the experts' piece
      const parallel::GradsFuture sent = dispatch.reverse(grads_of(dispatch.received));
      std::vector<at::Tensor> outputs = dispatch.sent, grads = sent();
      outputs.push_back(s.shared());
      grads.push_back(s.shared_leaf().grad());
      torch::autograd::backward(outputs, grads);  // the first piece: routing, gather, shared experts

      EXPECT_TRUE(at::equal(xc.grad(), xr.grad())) << "ep " << size << ": max diff " << max_diff(xc.grad(), xr.grad());
      const auto gp = cut->named_parameters(), wp = ref->named_parameters();
      for (const auto& item : wp) {
        if (!item.value().requires_grad()) continue;
        const at::Tensor g = gp[item.key()].grad(), w = item.value().grad();
        ASSERT_TRUE(g.defined() && w.defined()) << item.key();
        EXPECT_TRUE(at::equal(g, w)) << "ep " << size << " " << item.key() << ": max diff " << max_diff(g, w);
      }
    }
}

// A group that passes every call to `inner`; the tests below change its all_to_all.
class GroupDecorator : public parallel::ProcessGroup {
 public:
  explicit GroupDecorator(parallel::GroupPtr inner)
      : ProcessGroup(inner->name(), inner->rank(), inner->world_ranks()), inner_(std::move(inner)) {}
  std::string backend() const override { return inner_->backend(); }
  parallel::WorkPtr all_reduce(const at::Tensor& t, parallel::ReduceOp op) override { return inner_->all_reduce(t, op); }
  parallel::WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, parallel::ReduceOp op) override {
    return inner_->reduce_scatter(out, in, op);
  }
  parallel::WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in) override { return inner_->all_gather(out, in); }
  parallel::WorkPtr broadcast(const at::Tensor& t, int root) override { return inner_->broadcast(t, root); }
  parallel::WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                               const std::vector<int64_t>& send_counts) override {
    return inner_->all_to_all(out, in, recv_counts, send_counts);
  }
  parallel::WorkPtr send(const at::Tensor& t, int peer, int tag) override { return inner_->send(t, peer, tag); }
  parallel::WorkPtr recv(const at::Tensor& t, int peer, int tag) override { return inner_->recv(t, peer, tag); }
  parallel::WorkPtr barrier() override { return inner_->barrier(); }
  std::shared_ptr<ProcessGroup> split(int color, int key, const std::string& name) override {
    return inner_->split(color, key, name);
  }

 protected:
  parallel::GroupPtr inner_;
};

// The ep group as seen by one rank, except that the next all-to-all of float64 rows (the token
// dispatch; the counts exchange is int64) is issued `delay_s` late: a peer that is still busy.
class LateGroup final : public GroupDecorator {
 public:
  LateGroup(parallel::GroupPtr inner, double delay_s) : GroupDecorator(std::move(inner)), delay_s_(delay_s) {}
  parallel::WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                               const std::vector<int64_t>& send_counts) override {
    if (delay_s_ > 0 && in.scalar_type() == at::kDouble) {
      std::this_thread::sleep_for(std::chrono::duration<double>(delay_s_));
      delay_s_ = 0;
    }
    return inner_->all_to_all(out, in, recv_counts, send_counts);
  }

 private:
  double delay_s_;
};

// The ep group, writing "issue N" into `log` when its N-th all-to-all is issued and "wait N" when
// that operation is first waited for.
class LoggingGroup final : public GroupDecorator {
 public:
  LoggingGroup(parallel::GroupPtr inner, std::vector<std::string>* log) : GroupDecorator(std::move(inner)), log_(log) {}
  parallel::WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                               const std::vector<int64_t>& send_counts) override {
    const int n = ++issued_;
    log_->push_back("issue " + std::to_string(n));
    return std::make_shared<LoggingWork>(inner_->all_to_all(out, in, recv_counts, send_counts), log_, n);
  }

 private:
  class LoggingWork final : public parallel::Work {
   public:
    LoggingWork(parallel::WorkPtr inner, std::vector<std::string>* log, int n) : inner_(std::move(inner)), log_(log), n_(n) {}
    void wait() override {
      if (!waited_) log_->push_back("wait " + std::to_string(n_));
      waited_ = true;
      inner_->wait();
    }
    bool done() override { return inner_->done(); }
    void start() override { inner_->start(); }
    double issued_at() const override { return inner_->issued_at(); }
    double started_at() const override { return inner_->started_at(); }

   private:
    parallel::WorkPtr inner_;
    std::vector<std::string>* log_;
    int n_;
    bool waited_ = false;
  };
  std::vector<std::string>* log_;
  int issued_ = 0;
};

// Backward mirrors the forward's overlap: the forward runs the shared experts while the tokens
// travel, the backward runs their backward while the combine's gradients travel back (the first
// exchange backward starts), and waits for those only then; the dispatch's two reverse exchanges
// are both started before either is waited for. Gradients stay those of the blocking order (the
// other tests compare them bit for bit). The routed experts' weight gradients run while the
// dispatch's reverse exchanges travel.
TEST(EpOverlap, SharedExpertsBackwardRunsWhileTheCombineGradientsTravel) {
  for (int size : ep_sizes()) {
    std::vector<std::string> log;
    const parallel::GroupPtr ep = std::make_shared<LoggingGroup>(ep_group(size), &log);
    model::MoE layer = sharded_layer(ep, at::zeros({8}));
    at::manual_seed(300 + ep->rank());
    const at::Tensor x = at::randn({2, 5, 16}, at::kDouble).requires_grad_();
    model::MoEInFlight s = layer->forward_begin(x);
    layer->forward_experts(s);
    const at::Tensor y = layer->forward_end(s);
    ASSERT_TRUE(s.shared().defined());
    s.shared().register_hook([&log](const at::Tensor&) { log.push_back("shared"); });
    // The stacked routed-expert weights are leaves: the hook fires as their gradient arrives.
    layer->w2.register_hook([&log](const at::Tensor&) { log.push_back("expert weights"); });
    log.clear();
    (y * y).sum().backward();

    std::string seen;
    for (const std::string& e : log) seen += e + "; ";
    // The combine's reverse exchange is the first of backward (number n, after the forward's):
    // issued, then the shared experts, then waited for; the dispatch's reverse exchanges after it.
    const auto at = [&log](const std::string& e) { return std::find(log.begin(), log.end(), e) - log.begin(); };
    ASSERT_FALSE(log.empty());
    ASSERT_EQ(log.front().rfind("issue ", 0), 0u) << "ep " << size << ": " << seen;
    const int n = std::stoi(log.front().substr(6));
    const std::string wait_n = "wait " + std::to_string(n);
    EXPECT_LT(at("shared"), at(wait_n)) << "ep " << size << ": " << seen;
    EXPECT_LT(at(wait_n), int64_t(log.size())) << "ep " << size << ": " << seen;
    EXPECT_LT(at(wait_n), at("issue " + std::to_string(n + 1))) << "ep " << size << ": " << seen;
    // The dispatch's two (token rows, gates and mask) travel together: both issued before either wait.
    const std::string waits[] = {"wait " + std::to_string(n + 1), "wait " + std::to_string(n + 2)};
    for (const std::string& w : waits) {
      EXPECT_LT(at("issue " + std::to_string(n + 2)), at(w)) << "ep " << size << ": " << seen;
      EXPECT_LT(at(w), int64_t(log.size())) << "ep " << size << ": " << seen;
      EXPECT_LT(at("expert weights"), at(w)) << "ep " << size << ": " << seen;
    }
    EXPECT_LT(at("issue " + std::to_string(n + 2)), at("expert weights")) << "ep " << size << ": " << seen;
    EXPECT_EQ(log.size(), 8u) << "ep " << size << ": " << seen;
    EXPECT_EQ(std::count(log.begin(), log.end(), "shared"), 1);
    ASSERT_TRUE(x.grad().defined());
    if (test_world()->rank() == 0) std::printf("ep %d backward: %s\n", size, seen.c_str());
  }
}

TEST(EpOverlap, BeginReturnsWhileTheTokensAreStillInFlight) {
  const parallel::GroupPtr world = test_world();
  if (world->backend() != "mpi") GTEST_SKIP() << "needs mpirun (a peer to be late)";
  // Rank 1 issues its token rows 1 s late. Every token chooses experts 0 and 7 (ranks 0 and last),
  // so rank 0 receives rows from rank 1 and its exchange cannot complete before rank 1's is issued.
  constexpr double kDelay = 1.0;
  at::Tensor bias = at::zeros({8});
  bias[0] = 100;
  bias[7] = 100;
  const parallel::GroupPtr ep =
      world->rank() == 1 ? std::make_shared<LateGroup>(world, kDelay) : parallel::GroupPtr(world);
  model::MoE layer = sharded_layer(ep, bias), ref = sharded_layer(world, bias);
  at::manual_seed(5 + world->rank());
  const at::Tensor x = at::randn({2, 5, 16}, at::kDouble);
  const at::Tensor want = ref->forward(x);  // before the late run, so that it is not delayed itself

  world->barrier()->wait();
  const double t0 = now_s();
  model::MoEInFlight s = layer->forward_begin(x);
  const double begun = now_s() - t0;
  const bool ready_after_begin = s.ready();
  // Compute meanwhile, as another micro-batch's attention would.
  int64_t busy = 0;
  at::Tensor acc = at::zeros({64, 64}, at::kDouble);
  const at::Tensor m = at::randn({64, 64}, at::kDouble) * 0.1;
  while (!s.ready()) {
    acc = at::tanh(acc.mm(m) + 1);
    ++busy;
  }
  const double arrived = now_s() - t0;
  layer->forward_experts(s);
  const at::Tensor y = layer->forward_end(s);
  EXPECT_TRUE(at::equal(y, want));
  if (world->rank() == 0) {
    std::printf("rank 0: begin returned after %.3f s, tokens arrived after %.3f s, %lld matmuls meanwhile\n", begun,
                arrived, static_cast<long long>(busy));
    EXPECT_FALSE(ready_after_begin) << "begin() waited for the token exchange";
    EXPECT_LT(begun, kDelay / 2);
    EXPECT_GT(arrived, kDelay / 2);
    EXPECT_GT(busy, 0);
  }
}

}  // namespace
