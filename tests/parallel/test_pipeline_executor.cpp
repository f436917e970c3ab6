// The pipeline executor on a toy model, under mpirun with 2 ranks (pp = 2): stage s is two layers
// x -> tanh(x W_s) + x, each adding 0.01 sum(its output) / micro-batches to the loss (as an MoE
// layer adds its balance loss), and the last stage adds sum(y^2) / micro-batches. Under every
// schedule the weight gradients summed over the ranks holding each stage equal those of plain
// autograd through the whole chain in one process (float64, 1e-13: only the order in which
// micro-batches accumulate differs), the deferred-W path is exercised through a
// weight-gradient-store-aware op, and every step ends with nothing left over. DualPipe's FB pairs
// run interleaved (each forward calls its in-flight hook between its layers, which runs one
// backward segment of the other micro-batch; the segments are joined by a link, as an exchange
// would join them) and, with overlap off, one after the other: both give those gradients. A schedule that never runs a deferred W, one that sends what was never
// computed, or a forward that returns a broken segment chain, is refused with the executor's message.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <map>

#include "ops/weight_grad_store.h"
#include "parallel/pipeline_executor.h"
#include "parallel/schedule.h"
#include "tests/parallel/mpi_test_env.h"

using namespace shoestring;
using shoestring::testing::test_world;

namespace {

constexpr int kDim = 4, kRows = 3;

// Deferred closures: numbered as they are made; per weight, the numbers in the order they ran.
int g_closures_made = 0;
std::map<const void*, std::vector<int>> g_closure_log;
int g_waits = 0;

// x @ w whose weight gradient goes to the store while a capture is open (as model::project).
struct DeferredMatmul : torch::autograd::Function<DeferredMatmul> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->save_for_backward({x, w});
    return x.mm(w);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor x = saved[0], w = saved[1], g = grads[0];
    const at::Tensor gx = g.mm(w.t());
    if (!ops::WeightGradStore::capturing()) return {gx, x.t().mm(g)};
    const int id = g_closures_made++;
    ops::WeightGradStore::push([x, g, w, id]() mutable {
      g_closure_log[w.unsafeGetTensorImpl()].push_back(id);
      at::Tensor gw = x.t().mm(g);
      if (w.grad().defined()) w.mutable_grad().add_(gw);
      else w.mutable_grad() = gw;
    });
    return {gx, at::Tensor()};
  }
};

at::Tensor stage_fn(const at::Tensor& x, const at::Tensor& w) { return at::tanh(DeferredMatmul::apply(x, w)) + x; }

// The identity, whose backward waits as an exchange's reverse does (parallel/all_to_all_v.cpp):
// it offers the wait to ops::WaitFiller first.
struct ExchangeWait : torch::autograd::Function<ExchangeWait> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x) { return x.clone(); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list g) {
    ++g_waits;
    ops::WaitFiller::run_one();
    return {g[0]};
  }
};

at::Tensor input_of(int mb) {
  return at::sin(at::arange(kRows * kDim, at::kDouble).reshape({kRows, kDim}) * 0.37 + mb);
}

std::vector<at::Tensor> make_weights(int stages) {
  std::vector<at::Tensor> w;
  for (int s = 0; s < stages; ++s)
    w.push_back((at::cos(at::arange(kDim * kDim, at::kDouble).reshape({kDim, kDim}) * (0.3 + 0.1 * s)) * 0.5)
                    .requires_grad_(true));
  return w;
}

constexpr double kAux = 0.01;

// Plain autograd through the whole chain, every micro-batch.
std::vector<at::Tensor> reference_grads(int stages, int microbatches) {
  std::vector<at::Tensor> w = make_weights(stages);
  for (int mb = 0; mb < microbatches; ++mb) {
    at::Tensor x = input_of(mb), loss = at::zeros({}, at::kDouble);
    for (int s = 0; s < stages; ++s)
      for (int layer = 0; layer < 2; ++layer) {
        x = stage_fn(x, w[size_t(s)]);
        loss = loss + kAux * x.sum() / double(microbatches);
      }
    (loss + x.pow(2).sum() / double(microbatches)).backward();
  }
  std::vector<at::Tensor> g;
  for (auto& t : w) g.push_back(t.grad());
  return g;
}

int g_links_started = 0, g_links_waited = 0;

// One stage of the toy for one micro-batch, whole or as two segments (one per layer).
parallel::StageOutput toy_stage(const at::Tensor& input, const at::Tensor& x0, const at::Tensor& w, bool last, int m,
                                const parallel::ForwardMode& mode) {
  const at::Tensor y1 = ExchangeWait::apply(stage_fn(x0, w));
  if (mode.in_flight) mode.in_flight();
  const at::Tensor aux1 = kAux * y1.sum() / double(m);
  if (!mode.segmented) {
    at::Tensor y2 = stage_fn(y1, w);
    const at::Tensor aux = aux1 + kAux * y2.sum() / double(m);
    if (last) return {y2.pow(2).sum() / double(m) + aux, {}, {}};
    return {y2, aux, {}};
  }
  parallel::Segment first{input.defined() ? std::vector<at::Tensor>{input} : std::vector<at::Tensor>{}, {y1}, aux1, {}};
  const at::Tensor leaf = y1.detach().requires_grad_(true);
  const at::Tensor y2 = stage_fn(leaf, w);
  parallel::Segment second{{leaf}, {last ? y2.pow(2).sum() / double(m) : y2}, kAux * y2.sum() / double(m), {}};
  // Its input's gradient reaches the first segment through a link, as after an exchange: started
  // when the segment is done, waited for before the next.
  second.link = [](std::vector<at::Tensor> g) -> parallel::GradsFuture {
    ++g_links_started;
    return [g] {
      ++g_links_waited;
      return g;
    };
  };
  const at::Tensor out = second.outputs[0];
  return {out, {}, {first, second}};
}

// Runs `s` on this rank; returns, per model stage, the gradient this rank accumulated (zeros
// where it holds none).
std::vector<at::Tensor> run_schedule(const parallel::Schedule& s, bool overlap_fb = true,
                                     std::vector<parallel::ExecutedAction>* trace = nullptr, bool fill_waits = true,
                                     std::vector<std::vector<int>>* closure_order = nullptr) {
  std::vector<at::Tensor> w = make_weights(s.stages);  // every rank makes all; uses its own
  g_closures_made = 0;
  g_closure_log.clear();
  parallel::PipelineExecutor ex(s, test_world(), overlap_fb, fill_waits);
  parallel::StageCallbacks cb;
  cb.forward = [&](int mb, int chunk, int stage, const at::Tensor& input, const parallel::ForwardMode& mode) {
    EXPECT_EQ(stage, s.stage_of(mb, ex.rank(), chunk));
    const at::Tensor x = stage == 0 ? input_of(mb) : input;
    return toy_stage(input, x, w[size_t(s.model_stage(ex.rank(), chunk))], stage == s.stages - 1, s.microbatches,
                     mode);
  };
  cb.activation_buffer = [](int, int) { return at::empty({kRows, kDim}, at::kDouble); };
  ex.run(cb);
  if (trace) *trace = ex.trace();
  if (closure_order)
    for (auto& t : w) closure_order->push_back(g_closure_log[t.unsafeGetTensorImpl()]);
  std::vector<at::Tensor> g;
  for (auto& t : w) g.push_back(t.grad().defined() ? t.grad() : at::zeros_like(t));
  return g;
}

void expect_reference_grads(const parallel::Schedule& s, std::vector<at::Tensor> mine, const std::string& what) {
  const std::vector<at::Tensor> ref = reference_grads(s.stages, s.microbatches);
  for (int st = 0; st < s.stages; ++st) {
    at::Tensor g = mine[size_t(st)].contiguous();
    test_world()->all_reduce(g)->wait();  // each stage's copies (DualPipe: two) summed
    EXPECT_LE((g - ref[size_t(st)]).abs().max().item<double>(), 1e-13)
        << what << " M=" << s.microbatches << " stage " << st;
  }
}

parallel::Schedule schedule_of(const std::string& name, int microbatches) {
  parallel::ScheduleOptions o;
  o.name = name;
  o.pp = 2;
  o.microbatches = microbatches;
  return parallel::make_schedule(o);
}

class ExecutorSchedules : public ::testing::TestWithParam<std::string> {};

TEST_P(ExecutorSchedules, GradientsMatchPlainAutograd) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  for (int microbatches : {4, 6}) {
    const parallel::Schedule s = schedule_of(GetParam(), microbatches);
    expect_reference_grads(s, run_schedule(s), GetParam());
  }
}

// DualPipe's FB pairs: interleaved, every pair runs one of its backward's two segments while its
// forward is between layers (the hook), the other after; not interleaved, none. Same gradients.
TEST(PipelineExecutor, OverlappedPairsInterleaveTheirHalvesWithTheSameGradients) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  for (const char* name : {"dualpipe", "dualpipev"}) {
    const parallel::Schedule s = schedule_of(name, 8);
    for (bool overlap : {true, false}) {
      g_links_started = g_links_waited = 0;
      std::vector<parallel::ExecutedAction> trace;
      expect_reference_grads(s, run_schedule(s, overlap, &trace), std::string(name) + (overlap ? "" : " not overlapped"));
      int pairs = 0;
      for (const auto& a : trace) {
        if (a.action.op != parallel::Op::FB) continue;
        ++pairs;
        EXPECT_EQ(a.overlapped, overlap ? 1 : 0) << name << " " << parallel::to_string(a.action);
      }
      EXPECT_GT(pairs, 0) << name << " rank " << test_world()->rank() << " ran no FB pair";
      // One link per segmented backward (the forwards FB pairs backward), each waited for once.
      EXPECT_EQ(g_links_started, overlap ? pairs : 0) << name;
      EXPECT_EQ(g_links_waited, g_links_started) << name;
    }
  }
}

// During an I, each exchange wait runs the next closure of the oldest pending W (fill_waits), so
// some closures run before their W: the closures of every weight still run in the same order, and
// the gradients are the same bit for bit as when only W runs them.
TEST(PipelineExecutor, FilledWaitsRunEarlierWClosuresInTheirOrder) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  for (const char* name : {"zb1p", "dualpipev", "dualpipe"}) {
    const parallel::Schedule s = schedule_of(name, 8);
    std::vector<std::vector<int>> order[2];
    std::vector<at::Tensor> grads[2];
    int filled[2] = {0, 0};
    for (int fill : {0, 1}) {
      std::vector<parallel::ExecutedAction> trace;
      g_waits = 0;
      grads[fill] = run_schedule(s, true, &trace, fill == 1, &order[fill]);
      EXPECT_GT(g_waits, 0) << name;
      for (const auto& a : trace) {
        if (a.action.op != parallel::Op::I) {
          EXPECT_EQ(a.filled, 0) << name << " " << parallel::to_string(a.action);
        }
        filled[fill] += a.filled;
      }
      expect_reference_grads(s, grads[fill], std::string(name) + (fill ? " filled" : ""));
    }
    EXPECT_EQ(filled[0], 0) << name;
    // Every I after the first wait has closures before it: earlier layers' of its own W at least.
    EXPECT_GT(filled[1], 0) << name << " rank " << test_world()->rank() << ": no wait was filled";
    EXPECT_EQ(order[0], order[1]) << name << ": a weight's closures ran in another order";
    for (size_t st = 0; st < grads[0].size(); ++st)
      EXPECT_TRUE(grads[0][st].equal(grads[1][st])) << name << " stage " << st << ": not bit-identical";
  }
  EXPECT_FALSE(ops::WaitFiller::installed());
}

INSTANTIATE_TEST_SUITE_P(Pipeline, ExecutorSchedules,
                         ::testing::Values("gpipe", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev"));

TEST(PipelineExecutor, RefusesLeftoverDeferredWeightGradients) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  parallel::Schedule s = schedule_of("zb1p", 4);
  // Drop every W on both ranks: I runs, its closures are stored and never consumed.
  for (auto& actions : s.actions) std::erase_if(actions, [](const parallel::Action& a) { return a.op == parallel::Op::W; });
  try {
    run_schedule(s);
    ADD_FAILURE() << "a step with unrun weight gradients was accepted";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("weight-gradient closures"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(ops::WeightGradStore::capturing());  // no capture left open
  test_world()->barrier()->wait();
}

TEST(PipelineExecutor, RefusesSendingWhatWasNotComputed) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  parallel::Schedule s = schedule_of("1f1b", 2);
  auto& r0 = s.actions[0];
  // Move rank 0's first SendF before the forward that produces it.
  auto send = std::find_if(r0.begin(), r0.end(), [](const parallel::Action& a) { return a.op == parallel::Op::SendF; });
  ASSERT_NE(send, r0.end());
  const parallel::Action a = *send;
  r0.erase(send);
  r0.insert(r0.begin(), a);
  if (test_world()->rank() == 0) {
    parallel::PipelineExecutor ex(s, test_world());
    parallel::StageCallbacks cb;
    cb.forward = [](int, int, int, const at::Tensor&, const parallel::ForwardMode&) { return parallel::StageOutput{}; };
    cb.activation_buffer = [](int, int) { return at::empty({kRows, kDim}, at::kDouble); };
    try {
      ex.run(cb);
      ADD_FAILURE() << "a send before its forward was accepted";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("before it was computed"), std::string::npos) << e.what();
    }
  }
  test_world()->barrier()->wait();
}

// The executor asks for segments only where it backwards in them, and checks the chain it gets:
// a forward that returns segments unasked is refused before anything runs on them.
TEST(PipelineExecutor, RefusesSegmentsItDidNotAskFor) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  parallel::Schedule s = schedule_of("1f1b", 2);
  const std::vector<at::Tensor> w = make_weights(s.stages);
  if (test_world()->rank() == 0) {
    s.actions[0].resize(1);  // rank 0 alone runs its first action, F0 of stage 0: no message involved
    ASSERT_EQ(s.actions[0][0].op, parallel::Op::F);
    parallel::PipelineExecutor ex(s, test_world());
    parallel::StageCallbacks cb;
    cb.forward = [&](int mb, int, int, const at::Tensor& input, const parallel::ForwardMode& mode) {
      EXPECT_FALSE(mode.segmented);
      parallel::ForwardMode unasked = mode;
      unasked.segmented = true;
      return toy_stage(input, input_of(mb), w[0], false, s.microbatches, unasked);
    };
    cb.activation_buffer = [](int, int) { return at::empty({kRows, kDim}, at::kDouble); };
    std::string error;
    try {
      ex.run(cb);
    } catch (const std::logic_error& e) {
      error = e.what();
    }
    EXPECT_NE(error.find("broken segment chain"), std::string::npos) << "accepted, or: " << error;
  }
  test_world()->barrier()->wait();
}

}  // namespace
