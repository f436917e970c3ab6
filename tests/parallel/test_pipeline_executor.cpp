// The pipeline executor on a toy model, under mpirun with 2 ranks (pp = 2): stage s maps
// x -> tanh(x W_s) + x, the last stage adds the loss sum(y^2) / micro-batches. Under every schedule
// the weight gradients summed over the ranks holding each stage equal those of plain autograd
// through the whole chain in one process (float64, 1e-13: only the order in which micro-batches
// accumulate differs), the deferred-W path is exercised through a weight-gradient-store-aware op,
// and every step ends with nothing left over. A schedule that never runs a deferred W, or one
// that sends what was never computed, is refused with the executor's message.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "ops/weight_grad_store.h"
#include "parallel/pipeline_executor.h"
#include "parallel/schedule.h"
#include "tests/parallel/mpi_test_env.h"

using namespace shoestring;
using shoestring::testing::test_world;

namespace {

constexpr int kDim = 4, kRows = 3;

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
    ops::WeightGradStore::push([x, g, w]() mutable {
      at::Tensor gw = x.t().mm(g);
      if (w.grad().defined()) w.mutable_grad().add_(gw);
      else w.mutable_grad() = gw;
    });
    return {gx, at::Tensor()};
  }
};

at::Tensor stage_fn(const at::Tensor& x, const at::Tensor& w) { return at::tanh(DeferredMatmul::apply(x, w)) + x; }

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

// Plain autograd through the whole chain, every micro-batch.
std::vector<at::Tensor> reference_grads(int stages, int microbatches) {
  std::vector<at::Tensor> w = make_weights(stages);
  for (int mb = 0; mb < microbatches; ++mb) {
    at::Tensor x = input_of(mb);
    for (int s = 0; s < stages; ++s) x = stage_fn(x, w[size_t(s)]);
    (x.pow(2).sum() / double(microbatches)).backward();
  }
  std::vector<at::Tensor> g;
  for (auto& t : w) g.push_back(t.grad());
  return g;
}

// Runs `s` on this rank; returns, per model stage, the gradient this rank accumulated (zeros
// where it holds none).
std::vector<at::Tensor> run_schedule(const parallel::Schedule& s) {
  std::vector<at::Tensor> w = make_weights(s.stages);  // every rank makes all; uses its own
  parallel::PipelineExecutor ex(s, test_world());
  parallel::StageCallbacks cb;
  cb.forward = [&](int mb, int chunk, int stage, const at::Tensor& input) {
    EXPECT_EQ(stage, s.stage_of(mb, ex.rank(), chunk));
    const at::Tensor x = stage == 0 ? input_of(mb) : input;
    at::Tensor y = stage_fn(x, w[size_t(s.model_stage(ex.rank(), chunk))]);
    if (stage == s.stages - 1) y = y.pow(2).sum() / double(s.microbatches);
    return parallel::StageOutput{y, {}};
  };
  cb.activation_buffer = [](int, int) { return at::empty({kRows, kDim}, at::kDouble); };
  ex.run(cb);
  std::vector<at::Tensor> g;
  for (auto& t : w) g.push_back(t.grad().defined() ? t.grad() : at::zeros_like(t));
  return g;
}

class ExecutorSchedules : public ::testing::TestWithParam<std::string> {};

TEST_P(ExecutorSchedules, GradientsMatchPlainAutograd) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  for (int microbatches : {4, 6}) {
    parallel::ScheduleOptions o;
    o.name = GetParam();
    o.pp = 2;
    o.microbatches = microbatches;
    const parallel::Schedule s = parallel::make_schedule(o);
    std::vector<at::Tensor> mine = run_schedule(s);
    const std::vector<at::Tensor> ref = reference_grads(s.stages, microbatches);
    for (int st = 0; st < s.stages; ++st) {
      at::Tensor g = mine[size_t(st)].contiguous();
      test_world()->all_reduce(g)->wait();  // each stage's copies (DualPipe: two) summed
      EXPECT_LE((g - ref[size_t(st)]).abs().max().item<double>(), 1e-13)
          << o.name << " M=" << microbatches << " stage " << st;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Pipeline, ExecutorSchedules,
                         ::testing::Values("gpipe", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev"));

TEST(PipelineExecutor, RefusesLeftoverDeferredWeightGradients) {
  if (test_world()->size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  parallel::ScheduleOptions o;
  o.name = "zb1p";
  o.pp = 2;
  o.microbatches = 4;
  parallel::Schedule s = parallel::make_schedule(o);
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
  parallel::ScheduleOptions o;
  o.name = "1f1b";
  o.pp = 2;
  o.microbatches = 2;
  parallel::Schedule s = parallel::make_schedule(o);
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
    cb.forward = [](int, int, int, const at::Tensor&) { return parallel::StageOutput{}; };
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

}  // namespace
