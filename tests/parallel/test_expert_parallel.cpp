// Expert parallelism, one MoE layer, under mpirun with 2 or 4 ranks: the layer sharded over an
// ep group (every rank, and with 4 ranks also pairs of ranks) gives the outputs and gradients of
// the whole single-process layer. Each rank builds the whole layer too and computes the reference
// locally: outputs, input and router gradients from its own tokens, expert weight gradients from
// the tokens of every member of its ep group (the shard's experts see all of them).
//
// Tolerance 1e-12 absolute in float64 (values O(1), gradients up to O(100) with init_std 0.5;
// measured worst 1.1e-14): the sharded layer sums
// a token's expert outputs per destination rank first and the expert weight gradients over one
// concatenated batch instead of one batch per rank, so only the summation order differs (~1e-16
// relative per sum).
//
// With FP8 dispatch (parallel.ep_dispatch_dtype: fp8) the reference is the whole layer whose
// routed experts receive dequantize(quantize_1x128(x)) rows, made here with the CPU reference
// quantizer, the gradient passing straight through. The same tolerance holds: both sides quantize
// the same float32 values with the same integer code and decode with the same single fp32
// product, so the experts' inputs are bit-identical and only the summation order differs again
// (measured worst 1.7e-13, at d 130 where values are larger, the same as auto's there).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>
#include <sstream>

#include "ops/calc_diff.h"
#include "ops/fp8_quantize.h"
#include "ops/fp8_rows.h"
#include "parallel/all_to_all_v.h"
#include "tests/parallel/ep_layer_config.h"
#include "tests/parallel/mpi_test_env.h"
#include "trainer/expert_parallel.h"
#include "trainer/moe_bench.h"
#include "trainer/model/moe.h"

using namespace shoestring;
using shoestring::testing::test_mpi_world;
using shoestring::testing::test_world;

namespace {

constexpr double kTol = 1e-12;

model::MoE make_layer(const ModelConfig& cfg, const at::Tensor& bias) {
  at::manual_seed(7);
  model::MoE layer(cfg);
  layer->to(at::kDouble);
  at::NoGradGuard no_grad;
  layer->router->bias.copy_(bias);
  return layer;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return a.numel() == 0 ? 0.0 : (a - b).abs().max().item<double>();
}

// The ep groups: all ranks, or consecutive blocks of `size` ranks (as the mesh lays them out).
parallel::GroupPtr ep_group(int size) {
  const auto& w = test_world();
  if (size == w->size()) return w;
  return w->split(w->rank() / size, w->rank(), "ep");
}

struct Scenario {
  double capacity = 0;
  std::function<at::Tensor(int ep)> bias;     // router bias (forces routing), [8]
  std::function<int64_t(int rank)> batch;     // sequences of 5 tokens on each ep rank
  std::function<void(model::MoE&)> setup = [](model::MoE&) {};  // on both layers, before the run
  bool fp8 = false;     // FP8 dispatch, against the whole layer with quantized expert inputs
  int64_t d_model = 16;
};

// The single-process reference of the FP8 dispatch: the local dispatcher, its routed experts fed
// dequantize(quantize_1x128(token)) by the CPU reference quantizer. x + (q - x).detach() is q in
// the forward (q - x is exact by Sterbenz's lemma: q is x rounded to 3 mantissa bits of its tile's
// scale, or 0, and x + (q - x) is then q) and the identity in the backward: straight-through.
class QuantizedLocalDispatcher final : public model::ExpertDispatcher {
 public:
  std::unique_ptr<model::DispatchInFlight> begin(const at::Tensor& tokens, const at::Tensor& gates,
                                                 const ops::Permutation& perm, const model::LocalExperts& experts,
                                                 bool) override {
    const at::Tensor x = tokens.detach();
    const at::Tensor q = ops::dequantize(ops::quantize_1x128(x)).to(x.scalar_type());
    return local_.begin(tokens + (q - x), gates, perm, experts);
  }
  void run_experts(model::DispatchInFlight& d) override { local_.run_experts(d); }
  at::Tensor end(model::DispatchInFlight& d) override { return local_.end(d); }

 private:
  model::LocalDispatcher local_;
};

// Runs one forward/backward of the sharded layer on `layer` (already sharded) and checks it
// against the whole layer. Returns the pairs this rank dropped and the worst difference seen.
struct Seen {
  int64_t dropped = 0;
  double worst = 0;
  int64_t sent = -1;  // rows this rank sent (a new layer only)
  EpTraffic traffic;  // what the dispatcher counted (a new layer only)
  at::Tensor y;       // the sharded layer's output
};

Seen expect_same_as_whole(const parallel::GroupPtr& ep, const Scenario& sc, model::MoE* reuse = nullptr) {
  const ModelConfig cfg = shoestring::testing::ep_test_layer(sc.capacity, sc.d_model);
  const at::Tensor bias = sc.bias(ep->size()).to(at::kDouble);
  const int me = ep->rank(), n = ep->size();
  const int64_t per = cfg.n_routed_experts / n;

  model::MoE sharded{nullptr};
  std::shared_ptr<EpDispatcher> dispatcher;
  if (reuse) {
    sharded = *reuse;
    at::NoGradGuard no_grad;
    sharded->router->bias.copy_(bias);
  } else {
    sharded = make_layer(cfg, bias);
    sharded->shard_experts(me * per, per);
    dispatcher = std::make_shared<EpDispatcher>(ep, sc.fp8 ? EpDispatchDtype::kFp8 : EpDispatchDtype::kAuto);
    sharded->set_dispatcher(dispatcher);
  }
  model::MoE whole = make_layer(cfg, bias);
  if (sc.fp8) whole->set_dispatcher(std::make_shared<QuantizedLocalDispatcher>());
  sc.setup(sharded);
  sc.setup(whole);
  if (reuse) {  // the reused layer trained nothing: only the routing changed
    for (const char* w : {"w1", "w2", "w3"})
      EXPECT_EQ(max_diff(sharded->named_parameters()[w], whole->named_parameters()[w].narrow(0, me * per, per)), 0.0);
  }

  // Every rank draws every member's tokens and output weights from one seed.
  at::manual_seed(11);
  std::vector<at::Tensor> xs, cs;
  for (int j = 0; j < n; ++j) {
    xs.push_back(at::randn({sc.batch(j), int64_t(5), cfg.d_model}, at::kDouble));
    cs.push_back(at::randn({sc.batch(j), int64_t(5), cfg.d_model}, at::kDouble));
  }

  for (auto& p : sharded->parameters()) p.mutable_grad() = at::Tensor();
  const at::Tensor x = xs[size_t(me)].clone().requires_grad_();
  std::vector<model::MoEStats> stats;
  const at::Tensor y = sharded->forward(x, &stats);
  (y * cs[size_t(me)]).sum().backward();

  // Reference A: this rank's tokens only.
  const at::Tensor xr = xs[size_t(me)].clone().requires_grad_();
  std::vector<model::MoEStats> ref_stats;
  const at::Tensor yr = whole->forward(xr, &ref_stats);
  (yr * cs[size_t(me)]).sum().backward();
  Seen seen{stats[0].dropped, 0, -1, {}, y.detach()};
  if (dispatcher) {
    seen.traffic = dispatcher->take_traffic();
    seen.sent = seen.traffic.sent;
  }
  auto check = [&](double d) {
    seen.worst = std::max(seen.worst, d);
    return d;
  };
  EXPECT_LE(check(max_diff(y, yr)), kTol);
  EXPECT_LE(check(max_diff(x.grad(), xr.grad())), kTol);
  EXPECT_TRUE(at::equal(stats[0].load, ref_stats[0].load));
  EXPECT_EQ(stats[0].dropped, ref_stats[0].dropped);
  const auto sp = sharded->named_parameters(/*recurse=*/true), wp = whole->named_parameters(true);
  for (const auto& item : wp) {
    if (item.key() == "w1" || item.key() == "w2" || item.key() == "w3") continue;  // routed experts: below
    const at::Tensor g = sp[item.key()].grad(), gr = item.value().grad();
    EXPECT_TRUE(g.defined()) << item.key();
    if (g.defined()) {
      EXPECT_LE(check(max_diff(g, gr)), kTol) << item.key();
    }
  }

  // Reference B: the expert weight gradients from every member's tokens.
  for (auto& p : whole->parameters()) p.mutable_grad() = at::Tensor();
  for (int j = 0; j < n; ++j) {
    const at::Tensor xj = xs[size_t(j)].clone().requires_grad_();
    (whole->forward(xj) * cs[size_t(j)]).sum().backward();
  }
  for (const char* w : {"w1", "w2", "w3"}) {
    const at::Tensor g = sp[w].grad(), gr = wp[w].grad();
    EXPECT_TRUE(g.defined()) << w;
    if (!g.defined()) continue;
    EXPECT_EQ(g.size(0), per);
    if (gr.defined()) EXPECT_LE(check(max_diff(g, gr.narrow(0, me * per, per))), kTol) << w;
    else EXPECT_EQ(g.abs().max().item<double>(), 0.0) << w;  // no expert of the layer got a token
  }
  if (test_world()->rank() == 0)
    std::printf("ep %d%s: worst difference from the whole layer %.3g, %lld pairs dropped on rank 0\n", n,
                sc.fp8 ? " (fp8 dispatch)" : "", seen.worst, static_cast<long long>(seen.dropped));
  return seen;
}

// Bias that makes every token choose `experts` (top-2 of them), whatever its affinities.
std::function<at::Tensor(int)> force(std::function<std::vector<int64_t>(int)> experts, double value = 100) {
  return [=](int ep) {
    at::Tensor b = at::zeros({8});
    for (int64_t e : experts(ep)) b[e] = value;
    return b;
  };
}

const auto kRandom = [](int) { return at::zeros({8}); };
const auto kTwoPerRank = [](int) { return int64_t(2); };

std::vector<int> ep_sizes() {
  const int n = test_world()->size();
  return n >= 4 ? std::vector<int>{n, 2} : std::vector<int>{n};
}

TEST(ExpertParallel, RandomRoutingMatchesWholeLayer) {
  for (int size : ep_sizes()) expect_same_as_whole(ep_group(size), {0, kRandom, kTwoPerRank});
}

TEST(ExpertParallel, EveryTokenToOneRank) {
  // Experts of the last rank only: every other rank receives nothing and sends all to one peer.
  for (int size : ep_sizes())
    expect_same_as_whole(ep_group(size), {0, force([](int ep) {
                                            const int64_t per = 8 / ep;
                                            return std::vector<int64_t>{8 - per, 7};
                                          }),
                                          kTwoPerRank});
}

TEST(ExpertParallel, SomeRanksGetNoTokens) {
  // Experts 0 and 7: the middle ranks (ep 4) hold experts no token chooses.
  for (int size : ep_sizes())
    expect_same_as_whole(ep_group(size), {0, force([](int) { return std::vector<int64_t>{0, 7}; }), kTwoPerRank});
}

TEST(ExpertParallel, ARankWithNoTokensOfItsOwn) {
  for (int size : ep_sizes())
    expect_same_as_whole(ep_group(size), {0, kRandom, [](int rank) { return int64_t(rank == 1 ? 0 : 3); }});
}

TEST(ExpertParallel, CapacityDropsTheSamePairs) {
  // A skewed bias overfills experts 2 and 5, so capacity 1.0 drops pairs on every rank.
  for (int size : ep_sizes()) {
    const Seen seen = expect_same_as_whole(ep_group(size), {1.0, force([](int) { return std::vector<int64_t>{2, 5}; }, 0.3),
                                                            kTwoPerRank});
    EXPECT_GT(seen.dropped, 0);  // else the scenario tests nothing
  }
}

TEST(ExpertParallel, NodeLimitedRoutingOnAFakeTwoNodeMesh) {
  // The ep group of every rank split into 2 fake nodes; each token may use experts of 1 node, so
  // it is sent to at most that node's ranks. Random bias so that tokens pick both nodes.
  const parallel::GroupPtr ep = test_world();
  const int per_node = ep->size() / 2;
  const int64_t nodes = ep_nodes(ep->world_ranks(), per_node);
  ASSERT_EQ(nodes, 2);
  Scenario sc{0, [](int) { return at::zeros({8}); }, kTwoPerRank};
  sc.setup = [&](model::MoE& layer) { layer->router->limit_nodes(nodes, 1); };
  const Seen seen = expect_same_as_whole(ep, sc);
  const int64_t tokens = kTwoPerRank(ep->rank()) * 5;
  EXPECT_GE(seen.sent, tokens);
  EXPECT_LE(seen.sent, tokens * per_node);
}

TEST(ExpertParallel, AdversarialRoutingDoesNotHang) {
  // One layer through: all tokens to expert 0 (and one more), then to none of rank 0's experts,
  // then back to random. Each step must finish and still match the whole layer.
  for (int size : ep_sizes()) {
    const parallel::GroupPtr ep = ep_group(size);
    const ModelConfig cfg = shoestring::testing::ep_test_layer(0);
    const int64_t per = 8 / ep->size();
    model::MoE layer = make_layer(cfg, at::zeros({8}, at::kDouble));
    layer->shard_experts(ep->rank() * per, per);
    layer->set_dispatcher(std::make_shared<EpDispatcher>(ep));
    expect_same_as_whole(ep, {0, force([](int) { return std::vector<int64_t>{0, 1}; }), kTwoPerRank}, &layer);
    expect_same_as_whole(ep, {0, [](int ep_size) {
                                at::Tensor b = at::zeros({8});
                                b.narrow(0, 0, 8 / ep_size).fill_(-100);
                                return b;
                              },
                              kTwoPerRank},
                         &layer);
    expect_same_as_whole(ep, {0, kRandom, kTwoPerRank}, &layer);
  }
}

TEST(ExpertParallel, Fp8DispatchMatchesWholeLayerWithQuantizedExpertInputs) {
  // d 16: one ragged tile; d 130: a full tile and a 2-wide one. Random routing, and skewed routing
  // where some ranks receive nothing (empty payloads).
  for (int size : ep_sizes())
    for (int64_t d : {int64_t(16), int64_t(130)}) {
      Scenario random{0, kRandom, kTwoPerRank};
      random.fp8 = true, random.d_model = d;
      expect_same_as_whole(ep_group(size), random);
      Scenario skewed{0, force([](int) { return std::vector<int64_t>{0, 7}; }), kTwoPerRank};
      skewed.fp8 = true, skewed.d_model = d;
      expect_same_as_whole(ep_group(size), skewed);
    }
}

TEST(ExpertParallel, Fp8DispatchIsTakenAndWithinE4M3RoundingOfAuto) {
  for (int size : ep_sizes())
    for (int64_t d : {int64_t(16), int64_t(130)}) {
      const parallel::GroupPtr ep = ep_group(size);
      Scenario sc{0, kRandom, kTwoPerRank};
      sc.d_model = d;
      const Seen plain = expect_same_as_whole(ep, sc);
      sc.fp8 = true;
      const Seen fp8 = expect_same_as_whole(ep, sc);
      // Same inputs and routing, so the same rows travel; fewer bytes each: d codes + 4 bytes per
      // 1x128 tile instead of d float64 values.
      EXPECT_EQ(fp8.traffic.sent, plain.traffic.sent);
      EXPECT_EQ(fp8.traffic.received, plain.traffic.received);
      EXPECT_GT(plain.traffic.sent, 0);
      EXPECT_EQ(plain.traffic.sent_bytes, plain.traffic.sent * d * 8);
      EXPECT_EQ(fp8.traffic.sent_bytes, fp8.traffic.sent * (d + 4 * ((d + 127) / 128)));
      EXPECT_EQ(fp8.traffic.received_bytes, fp8.traffic.received * ops::fp8_row_bytes(d));
      // The path is really taken: the outputs differ, by E4M3 rounding of the experts' inputs only.
      // calc_diff is the relative squared error; the bound is the table's for a pure E4M3 round
      // trip (the expert MLP is smooth, the shared experts and router see exact inputs).
      const double diff = ops::calc_diff(fp8.y, plain.y);
      const double rel_max = (fp8.y - plain.y).abs().max().item<double>() / plain.y.abs().max().item<double>();
      EXPECT_GT(diff, 0.0);
      EXPECT_LT(diff, ops::kFp8Tol.quantize_roundtrip);
      EXPECT_LT(rel_max, 1.0 / 8);  // 2^-4 per input element, twice for headroom through the MLP
      if (test_world()->rank() == 0)
        std::printf("ep %d d %lld: fp8 vs auto dispatch output calc_diff %.3g, max |diff| / max |y| %.3g; bytes per "
                    "row %lld -> %lld\n",
                    size, static_cast<long long>(d), diff, rel_max,
                    static_cast<long long>(plain.traffic.sent_bytes / plain.traffic.sent),
                    static_cast<long long>(fp8.traffic.sent_bytes / std::max<int64_t>(1, fp8.traffic.sent)));
    }
}

TEST(ExpertParallel, EncodedAllToAllVDecodesAndSendsGradientsBackUnquantized) {
  // Rank r sends r + j + 1 rows to rank j as FP8; the received rows are the decoded ones, and the
  // gradient of sum(out * c) comes back to each sent row as c itself (straight-through), in float64.
  const auto& g = test_world();
  const int n = g->size(), me = g->rank();
  std::vector<int64_t> send, recv;
  for (int j = 0; j < n; ++j) send.push_back(me + j + 1), recv.push_back(j + me + 1);
  const int64_t rows = std::accumulate(send.begin(), send.end(), int64_t(0)), d = 130;
  at::manual_seed(uint64_t(100 + me));
  const at::Tensor x = at::randn({rows, d}, at::kDouble).requires_grad_();
  const at::Tensor payload = ops::pack_fp8_rows(x);
  ASSERT_EQ(payload.size(1), d + 8);
  const at::Tensor out =
      parallel::all_to_all_v_start_encoded(
          x, payload, [d](const at::Tensor& p) { return ops::unpack_fp8_rows(p, d, at::kDouble); }, g, send, recv)
          .wait();
  ASSERT_EQ(out.scalar_type(), at::kDouble);
  // What came back is what each sender's rows decode to, exchanged as plain rows.
  const at::Tensor expect = parallel::all_to_all_v(ops::dequantize(ops::quantize_1x128(x.detach())).to(at::kDouble), g, send, recv);
  EXPECT_TRUE(at::equal(out.detach(), expect));
  EXPECT_FALSE(at::equal(out.detach(), parallel::all_to_all_v(x.detach(), g, send, recv)));
  // Weight by the exactly known plain rows: their gradient must be the plain rows' own values.
  const at::Tensor c = parallel::all_to_all_v(x.detach(), g, send, recv);
  (out * c).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), x.detach()));
}

TEST(ExpertParallel, AllToAllVBackwardIsTheReverseExchange) {
  // Rank r sends r + j + 1 rows of value (r, j) to rank j; the gradient of sum(out * c) must come
  // back to each sent row as the c of the row it became.
  const auto& g = test_world();
  const int n = g->size(), me = g->rank();
  std::vector<int64_t> send, recv;
  for (int j = 0; j < n; ++j) send.push_back(me + j + 1), recv.push_back(j + me + 1);
  const int64_t rows = std::accumulate(send.begin(), send.end(), int64_t(0));
  const at::Tensor x = (at::arange(rows, at::kDouble) + 100.0 * me).unsqueeze(1).repeat({1, 3}).requires_grad_();
  const at::Tensor out = parallel::all_to_all_v(x, g, send, recv);
  ASSERT_EQ(out.size(0), std::accumulate(recv.begin(), recv.end(), int64_t(0)));
  // Weight each received row by its source's value: the gradient of x is then x itself (mapped
  // back from where it went), which checks the routing of the backward exchange exactly.
  (out * out.detach()).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), x.detach()));
  EXPECT_EQ(parallel::exchange_counts(*g, send, at::kCPU), recv);
}

}  // namespace

namespace {

TEST(ExpertParallel, BenchMoePrintsOneLineAndRefusesBadOptions) {
  MoeBenchOptions o;
  o.tokens = 64, o.d_model = 16, o.experts = 8, o.top_k = 2, o.iters = 2, o.warmup = 1, o.rounds = 1;
  std::ostringstream out;
  std::string error;
  ASSERT_EQ(run_moe_bench(test_mpi_world(), o, out, error), 0) << error;
  if (test_world()->rank() == 0) {
    const std::string line = out.str();
    EXPECT_EQ(line.rfind("{\"bench\":\"moe\",\"ranks\":" + std::to_string(test_world()->size()) + ",", 0), 0u) << line;
    EXPECT_NE(line.find("\"ratio\":"), std::string::npos) << line;
    EXPECT_EQ(line.find("nan"), std::string::npos) << line;
  } else {
    EXPECT_TRUE(out.str().empty());
  }
  o.dispatch_dtype = "fp8";
  out.str("");
  ASSERT_EQ(run_moe_bench(test_mpi_world(), o, out, error), 0) << error;
  if (test_world()->rank() == 0) {
    EXPECT_NE(out.str().find("\"dispatch_dtype\":\"fp8\""), std::string::npos) << out.str();
    EXPECT_EQ(out.str().find("nan"), std::string::npos) << out.str();
  }
  o.dispatch_dtype = "e5m2";
  EXPECT_EQ(run_moe_bench(test_mpi_world(), o, out, error), 2);
  EXPECT_NE(error.find("--dispatch-dtype"), std::string::npos) << error;
  o.dispatch_dtype = "auto";
  o.experts = 7;  // not divisible by 2 or 4 ranks: refused on every rank before any collective
  EXPECT_EQ(run_moe_bench(test_mpi_world(), o, out, error), 2);
  EXPECT_NE(error.find("divisible"), std::string::npos) << error;
}

}  // namespace
