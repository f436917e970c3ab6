// Pipeline parallelism end to end, under mpirun with 2 or 4 ranks: the tiny MoE model (MLA, MoE
// layers, an MTP module, a balance loss) trained 3 steps in float64 under every schedule with
// pp = all ranks gives the losses and parameters of one process consuming the same global batch;
// with 4 ranks also pp = 2 x dp = 2 with ep = 2, with and without ZeRO-1. Each rank trains the
// single-process reference itself, so its comparison needs no communication, and compares the
// parameters it holds (by name; a routed expert under EP with its slice).
//
// Tolerance 1e-12 in float64 (relative on losses, absolute on parameters of scale 0.02-1): a
// pipeline changes only summation orders -- gradients of a parameter are accumulated per
// micro-batch in schedule order, deferred weight gradients (W) are added after the rest, and
// copies of shared tensors (the embedding the MTP module also reads; DualPipe's two copies of every
// stage) are summed across ranks -- ~1e-16 relative per step.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <map>

#include "tests/parallel/mpi_test_env.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/model/transformer.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;
using shoestring::testing::test_mpi_world;
using shoestring::testing::test_world;

namespace {

struct Layout {
  std::string schedule = "1f1b";
  int pp = 1, ep = 1;
  bool zero1 = false, overlap_fb = true, fill_waits = true, tie_embeddings = false;
  std::string ep_dispatch_dtype = "auto";
  int eval_interval = 0;
  int steps = 3, checkpoint_interval = 0;
};

// Six blocks (one dense, five MoE) so that even 8 stages (pp 4 x 2 chunks) mostly hold one.
Config tiny_moe(const Layout& l, const fs::path& dir) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"},
                     {"data.source=synthetic", "model.vocab_size=64", "model.d_model=32", "model.n_layers=6",
                      "model.kv_lora_rank=16", "model.intermediate_size=64", "model.moe_intermediate_size=16",
                      "train.seq_len=16", "train.micro_batch_size=1", "train.global_batch=8", "train.steps=" + std::to_string(l.steps),
                      "train.threads=1", "optim.warmup_steps=1", "optim.grad_clip=0.5", "train.precision=fp64",
                      "train.router_bias_gamma=0.01", "train.balance_alpha=0.01", "parallel.bucket_mb=0.01",
                      "parallel.pp=" + std::to_string(l.pp), "parallel.ep=" + std::to_string(l.ep),
                      "parallel.schedule=" + l.schedule, "parallel.zero1=" + std::string(l.zero1 ? "true" : "false"),
                      "parallel.overlap_fb=" + std::string(l.overlap_fb ? "true" : "false"),
                      "parallel.fill_waits=" + std::string(l.fill_waits ? "true" : "false"),
                      "model.tie_embeddings=" + std::string(l.tie_embeddings ? "true" : "false"),
                      "parallel.ep_dispatch_dtype=" + l.ep_dispatch_dtype,
                      "data.eval_interval=" + std::to_string(l.eval_interval), "data.eval_batches=1",
                      "checkpoint.interval=" + std::to_string(l.checkpoint_interval), "log.progress=off",
                      "log.every=1000", "log.run_dir=" + dir.string()});
}

std::string describe(const Layout& l) {
  return l.schedule + " pp=" + std::to_string(l.pp) + " ep=" + std::to_string(l.ep) + (l.zero1 ? " zero1" : "") +
         (l.tie_embeddings ? " tied" : "") +
         (l.ep_dispatch_dtype != "auto" ? " dispatch " + l.ep_dispatch_dtype : "");
}

const TrainSummary& one_process() {
  static const TrainSummary s = [] {
    TrainOptions keep;
    keep.keep_parameters = true;
    const fs::path dir = fs::temp_directory_path() / ("shoestring_pp_ref_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    TrainSummary out = train(tiny_moe(Layout{}, dir), parallel::World{}, keep);
    fs::remove_all(dir);
    return out;
  }();
  return s;
}

// The first metrics line of `dir` holding `key`, or "".
std::string metrics_with(const fs::path& dir, const std::string& key) {
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);)
    if (line.find(key) != std::string::npos) return line;
  return "";
}

double field(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\":");
  return at == std::string::npos ? std::nan("") : std::stod(line.substr(at + key.size() + 3));
}

void expect_matches_one_process(const Layout& l) {
  const int n = test_mpi_world().size;
  const int dp = n / l.pp;
  TrainOptions keep;
  keep.keep_parameters = true;
  const fs::path dir = shoestring::testing::shared_temp_dir("shoestring_pp");
  const TrainSummary s = train(tiny_moe(l, dir), test_mpi_world(), keep);
  const TrainSummary& one = one_process();
  const std::string what = describe(l);
  ASSERT_EQ(s.losses.size(), one.losses.size()) << what;
  for (size_t i = 0; i < one.losses.size(); ++i)
    EXPECT_NEAR(s.losses[i], one.losses[i], 1e-12 * std::abs(one.losses[i])) << what << " step " << i + 1;

  std::map<std::string, at::Tensor> ref(one.parameters.begin(), one.parameters.end());
  const int ep_rank = (test_mpi_world().rank % dp) % l.ep;  // dp rank = rank mod dp; ep innermost
  double worst = 0;
  size_t compared = 0;
  for (const auto& [name, p] : s.parameters) {
    ASSERT_TRUE(ref.count(name)) << what << ": " << name;
    at::Tensor r = ref[name];
    if (l.ep > 1 && model::is_routed_expert(name)) r = r.narrow(0, ep_rank * p.size(0), p.size(0));
    ASSERT_EQ(p.sizes(), r.sizes()) << what << ": " << name;
    worst = std::max(worst, (p - r).abs().max().item<double>());
    ++compared;
  }
  EXPECT_GT(compared, 0u) << what;
  EXPECT_LE(worst, 1e-12) << what;
  // Every parameter of the model is held by some rank: the parameters compared over all ranks
  // cover the whole model.
  at::Tensor names_held = at::zeros({int64_t(one.parameters.size())}, at::kLong);
  for (size_t i = 0; i < one.parameters.size(); ++i)
    for (const auto& [name, p] : s.parameters) names_held[int64_t(i)] += name == one.parameters[i].first;
  test_world()->all_reduce(names_held)->wait();
  EXPECT_GT(names_held.min().item<int64_t>(), 0) << what << ": some parameter is held by no rank";

  if (test_mpi_world().rank == 0) {
    std::printf("%s dp=%d: final loss %.17g vs one process %.17g; max |param diff| %.3g over %zu tensors\n",
                what.c_str(), dp, s.losses.back(), one.losses.back(), worst, compared);
  }
  test_world()->barrier()->wait();
  if (test_mpi_world().rank == 0) fs::remove_all(dir);
}

class EverySchedule : public ::testing::TestWithParam<std::string> {};

TEST_P(EverySchedule, Float64MatchesOneProcess) {
  Layout l;
  l.schedule = GetParam();
  l.pp = test_mpi_world().size;
  expect_matches_one_process(l);
}

INSTANTIATE_TEST_SUITE_P(Pipeline, EverySchedule,
                         ::testing::Values("gpipe", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev"));

// DualPipe and DualPipeV with every pipeline message between two ranks under one MPI tag
// (SHOESTRING_P2P_ORDER_MATCHED=1, pipeline_executor.h), so that MPI pairs them by order as NCCL
// does: the losses and every parameter equal the tag-matched run's bit for bit. Messages paired
// out of order would hand a stage another micro-batch's activation or gradient (all have one
// shape here) and change the losses; before the schedules posted in one order per rank pair
// (schedule_comm_order.cpp) dualpipev at pp = 4 did.
TEST(PipelineTraining, OrderMatchedMessagesGiveTheTaggedRunExactly) {
  for (const char* schedule : {"dualpipe", "dualpipev"}) {
    Layout l;
    l.schedule = schedule;
    l.pp = test_mpi_world().size;
    TrainOptions keep;
    keep.keep_parameters = true;
    std::vector<TrainSummary> runs;
    for (bool one_tag : {false, true}) {
      if (one_tag) ::setenv("SHOESTRING_P2P_ORDER_MATCHED", "1", 1);
      else ::unsetenv("SHOESTRING_P2P_ORDER_MATCHED");
      const fs::path dir = shoestring::testing::shared_temp_dir("shoestring_pp_order");
      runs.push_back(train(tiny_moe(l, dir), test_mpi_world(), keep));
      ::unsetenv("SHOESTRING_P2P_ORDER_MATCHED");
      test_world()->barrier()->wait();
      if (test_mpi_world().rank == 0) fs::remove_all(dir);
    }
    const std::string what = describe(l);
    ASSERT_EQ(runs[0].losses.size(), 3u) << what;
    EXPECT_EQ(runs[1].losses, runs[0].losses) << what;
    ASSERT_EQ(runs[1].parameters.size(), runs[0].parameters.size()) << what;
    for (size_t i = 0; i < runs[0].parameters.size(); ++i) {
      EXPECT_EQ(runs[1].parameters[i].first, runs[0].parameters[i].first) << what;
      EXPECT_TRUE(at::equal(runs[1].parameters[i].second, runs[0].parameters[i].second))
          << what << ": " << runs[0].parameters[i].first;
    }
    if (test_mpi_world().rank == 0)
      std::printf("%s order-matched: losses %.17g %.17g %.17g, identical to the tag-matched run\n", what.c_str(),
                  runs[1].losses[0], runs[1].losses[1], runs[1].losses[2]);
  }
}

// Trains `l` with a switch on, then off (`set`), 3 steps each: both runs must give the same losses
// and parameters bit for bit, the per-action `count` summed over every step and rank must be
// positive with the switch on and 0 with it off. Returns the count with it on.
template <typename Set, typename Count>
int64_t count_on_and_off(Layout l, Set set, Count count, const std::string& key, const std::string& none_ran) {
  TrainOptions keep;
  keep.keep_parameters = true;
  keep.keep_pipeline_traces = true;
  std::vector<TrainSummary> runs;
  for (bool on : {true, false}) {
    set(l, on);
    const fs::path dir = shoestring::testing::shared_temp_dir("shoestring_pp_switch");
    runs.push_back(train(tiny_moe(l, dir), test_mpi_world(), keep));
    test_world()->barrier()->wait();
    if (test_mpi_world().rank == 0) fs::remove_all(dir);
  }
  const std::string what = describe(l);
  int64_t counted[2] = {0, 0};
  for (size_t r = 0; r < 2; ++r)
    for (const auto& step : runs[r].pipeline_traces)
      for (const auto& a : step) counted[r] += count(a);
  at::Tensor counts = at::tensor(std::vector<int64_t>{counted[0], counted[1]}, at::kLong);
  test_world()->all_reduce(counts)->wait();
  EXPECT_GT(counts[0].item<int64_t>(), 0) << what << ": " << none_ran;
  EXPECT_EQ(counts[1].item<int64_t>(), 0) << what << " with " << key << " false";
  EXPECT_EQ(runs[0].losses.size(), 3u) << what;
  EXPECT_EQ(runs[0].losses, runs[1].losses) << what;
  EXPECT_EQ(runs[0].parameters.size(), runs[1].parameters.size()) << what;
  for (size_t i = 0; i < std::min(runs[0].parameters.size(), runs[1].parameters.size()); ++i)
    EXPECT_TRUE(at::equal(runs[0].parameters[i].second, runs[1].parameters[i].second))
        << what << ": " << runs[0].parameters[i].first;
  return counts[0].item<int64_t>();
}

// DualPipe's FB pairs interleaved (the forward's MoE blocks each run a segment of the other
// micro-batch's backward while their dispatch and combine are in flight; pipeline_executor.h)
// give the losses and parameters of the pairs run one half after the other, bit for bit: the
// segment boundaries pass the same gradient sums and every ep rank interleaves alike. With 4
// ranks also pp 2 x dp 2 x ep 2 (token rows sent as they are, and as FP8), where the expert
// exchanges of both halves travel while the other half computes.
TEST(PipelineTraining, OverlappedPairsGiveTheSequentialRunExactly) {
  std::vector<Layout> layouts;
  for (const char* schedule : {"dualpipe", "dualpipev"}) {
    Layout l;
    l.schedule = schedule;
    l.pp = test_mpi_world().size;
    layouts.push_back(l);
  }
  if (test_mpi_world().size == 4) {
    Layout l;
    l.schedule = "dualpipev";
    l.pp = 2;
    l.ep = 2;
    layouts.push_back(l);
    l.ep_dispatch_dtype = "fp8";  // the token rows travel encoded; their gradients come back as they are
    layouts.push_back(l);
  }
  for (const Layout& l : layouts) {
    const int64_t n = count_on_and_off(
        l, [](Layout& x, bool on) { x.overlap_fb = on; }, [](const auto& a) { return a.overlapped; },
        "parallel.overlap_fb", "no backward block ran inside a forward");
    if (test_mpi_world().rank == 0)
      std::printf("%s: %lld backward segments ran inside forwards over 3 steps; losses identical to the sequential pairs\n",
                  describe(l).c_str(), static_cast<long long>(n));
  }
}

// In an I, each wait for an expert exchange's gradients runs a deferred weight-gradient closure
// first (parallel.fill_waits; pipeline_executor.h): losses and parameters are those of the run
// where only W runs them, bit for bit, since every weight's closures keep their order. Tied
// embeddings too: the last stage's copy gets the head's and the MTP lookup's gradients, both
// deferred (model::embedding); an immediate lookup gradient would be reordered against the head's.
TEST(PipelineTraining, FilledWaitsGiveTheUnfilledRunExactly) {
  if (test_mpi_world().size != 4) return std::printf("pp 2 x dp 2 with ep 2 runs on 4 ranks\n"), void();
  for (const auto& [schedule, tied] : {std::pair{"zb1p", false}, {"dualpipev", false}, {"zb1p", true}}) {
    Layout l;
    l.schedule = schedule;
    l.tie_embeddings = tied;
    l.pp = 2;
    l.ep = 2;
    const int64_t n = count_on_and_off(
        l, [](Layout& x, bool on) { x.fill_waits = on; }, [](const auto& a) { return a.filled; },
        "parallel.fill_waits", "no exchange wait ran a weight-gradient closure");
    if (test_mpi_world().rank == 0)
      std::printf("%s: %lld weight-gradient closures ran in exchange waits over 3 steps; losses identical to W alone\n",
                  describe(l).c_str(), static_cast<long long>(n));
  }
}

TEST(PipelineTraining, WithDataAndExpertParallelism) {
  // Not GTEST_SKIP: ctest would then count the whole 2-rank run as skipped.
  if (test_mpi_world().size != 4) return std::printf("pp 2 x dp 2 with ep 2 runs on 4 ranks\n"), void();
  for (const char* schedule : {"1f1b", "dualpipev", "dualpipe"})
    for (bool zero1 : {false, true}) {
      Layout l;
      l.schedule = schedule;
      l.pp = 2;
      l.ep = 2;
      l.zero1 = zero1;
      expect_matches_one_process(l);
    }
}

TEST(PipelineTraining, GradientNormAndValidationLossMatchOneProcess) {
  const fs::path ref_dir = fs::temp_directory_path() / ("shoestring_pp_eval_ref_" + std::to_string(::getpid()));
  fs::remove_all(ref_dir);
  Layout l;
  l.eval_interval = 3;
  train(tiny_moe(l, ref_dir), parallel::World{});
  const std::string ref = metrics_with(ref_dir, "\"val_loss\"");
  fs::remove_all(ref_dir);
  for (const char* schedule : {"1f1b", "dualpipe"}) {
    l.schedule = schedule;
    l.pp = test_mpi_world().size;
    const fs::path dir = shoestring::testing::shared_temp_dir("shoestring_pp_eval");
    train(tiny_moe(l, dir), test_mpi_world());
    if (test_mpi_world().rank == 0) {
      const std::string got = metrics_with(dir, "\"val_loss\"");
      ASSERT_FALSE(got.empty()) << schedule;
      EXPECT_NEAR(field(got, "val_loss"), field(ref, "val_loss"), 1e-12) << schedule;
      EXPECT_NEAR(field(got, "grad_norm"), field(ref, "grad_norm"), 1e-12 * field(ref, "grad_norm")) << schedule;
      EXPECT_NEAR(field(got, "expert_imbalance"), field(ref, "expert_imbalance"), 1e-12) << schedule;
    }
    test_world()->barrier()->wait();
    if (test_mpi_world().rank == 0) fs::remove_all(dir);
  }
}

// A checkpoint saved under a pipeline layout (DualPipe: every stage held twice, written once)
// resumes in one process, and one saved by one process resumes under a pipeline: step 3 then
// has the uninterrupted run's loss (1e-12 relative, as above).
TEST(PipelineTraining, CheckpointsMoveBetweenPipelineAndOneProcess) {
  const TrainSummary& one = one_process();
  const fs::path saved_pp = shoestring::testing::shared_temp_dir("shoestring_pp_ckpt");
  Layout l;
  l.schedule = "dualpipe";
  l.pp = test_mpi_world().size;
  l.steps = 2;
  l.checkpoint_interval = 2;
  const TrainSummary a = train(tiny_moe(l, saved_pp), test_mpi_world());
  ASSERT_FALSE(a.last_checkpoint.empty());

  // Every rank resumes it alone (read-only; its own run directory).
  const fs::path mine = fs::temp_directory_path() / ("shoestring_pp_resume_" + std::to_string(::getpid()));
  fs::remove_all(mine);
  TrainOptions resume;
  resume.resume = a.last_checkpoint;
  Layout single;
  const TrainSummary b = train(tiny_moe(single, mine), parallel::World{}, resume);
  fs::remove_all(mine);
  EXPECT_EQ(b.resumed_from_step, 2);
  ASSERT_EQ(b.losses.size(), 1u);
  EXPECT_NEAR(b.losses[0], one.losses[2], 1e-12 * std::abs(one.losses[2]));

  // The other way: rank 0 saves in one process, every rank resumes under zb1p.
  const fs::path saved_one = shoestring::testing::shared_temp_dir("shoestring_pp_ckpt1");
  std::string path;
  if (test_mpi_world().rank == 0) {
    single.steps = 2;
    single.checkpoint_interval = 2;
    path = train(tiny_moe(single, saved_one), parallel::World{}).last_checkpoint;
  }
  path = broadcast_string(*test_world(), path);  // rank 0's, to everyone
  Layout zb;
  zb.schedule = "zb1p";
  zb.pp = test_mpi_world().size;
  resume.resume = path;
  const fs::path resumed = shoestring::testing::shared_temp_dir("shoestring_pp_ckpt2");
  const TrainSummary c = train(tiny_moe(zb, resumed), test_mpi_world(), resume);
  EXPECT_EQ(c.resumed_from_step, 2);
  ASSERT_EQ(c.losses.size(), 1u);
  EXPECT_NEAR(c.losses[0], one.losses[2], 1e-12 * std::abs(one.losses[2]));
  test_world()->barrier()->wait();
  if (test_mpi_world().rank == 0)
    for (const auto& d : {saved_pp, saved_one, resumed}) fs::remove_all(d);
}

// Issue 10's resharding matrix on 4 ranks: a step-2 checkpoint saved under each (pp, dp, ep) of
// {(1,4,2), (2,2,2), (4,1,1)} resumes under each of the others and in one process, and step 3
// has the uninterrupted loss (1e-12 relative); resumed under its own layout it is bit-identical.
TEST(PipelineTraining, ReshardingMatrixAndExactResume) {
  if (test_mpi_world().size != 4) return std::printf("the resharding matrix runs on 4 ranks\n"), void();
  const TrainSummary& one = one_process();
  struct Shape {
    int pp, ep;
    const char* schedule;
  };
  const std::vector<Shape> shapes{{1, 2, "1f1b"}, {2, 2, "1f1b"}, {4, 1, "dualpipe"}};
  auto layout = [](const Shape& sh, int steps, int interval) {
    Layout l;
    l.pp = sh.pp;
    l.ep = sh.ep;
    l.schedule = sh.schedule;
    l.steps = steps;
    l.checkpoint_interval = interval;
    return l;
  };
  auto name = [](const Shape& sh) {
    return "(pp " + std::to_string(sh.pp) + ", dp " + std::to_string(4 / sh.pp) + ", ep " + std::to_string(sh.ep) + ")";
  };
  for (const Shape& from : shapes) {
    const fs::path saved = shoestring::testing::shared_temp_dir("shoestring_pp_matrix");
    const TrainSummary a = train(tiny_moe(layout(from, 2, 2), saved), test_mpi_world());
    ASSERT_FALSE(a.last_checkpoint.empty());
    TrainOptions resume;
    resume.resume = a.last_checkpoint;
    for (const Shape& to : shapes) {
      const fs::path dir = shoestring::testing::shared_temp_dir("shoestring_pp_matrix_to");
      const TrainSummary b = train(tiny_moe(layout(to, 3, 0), dir), test_mpi_world(), resume);
      ASSERT_EQ(b.losses.size(), 1u) << name(from) << " -> " << name(to);
      EXPECT_NEAR(b.losses[0], one.losses[2], 1e-12 * std::abs(one.losses[2])) << name(from) << " -> " << name(to);
      if (&from == &to) {  // the same layout: exactly the uninterrupted run
        const fs::path full_dir = shoestring::testing::shared_temp_dir("shoestring_pp_matrix_full");
        const TrainSummary full = train(tiny_moe(layout(from, 3, 0), full_dir), test_mpi_world());
        EXPECT_EQ(b.losses[0], full.losses[2]) << name(from) << ": resumed step 3 differs in the last bits";
        test_world()->barrier()->wait();
        if (test_mpi_world().rank == 0) fs::remove_all(full_dir);
      }
      test_world()->barrier()->wait();
      if (test_mpi_world().rank == 0) fs::remove_all(dir);
    }
    // And in one process, on every rank (read-only).
    const fs::path mine = fs::temp_directory_path() / ("shoestring_pp_matrix_one_" + std::to_string(::getpid()));
    fs::remove_all(mine);
    const TrainSummary c = train(tiny_moe(layout(Shape{1, 1, "1f1b"}, 3, 0), mine), parallel::World{}, resume);
    fs::remove_all(mine);
    ASSERT_EQ(c.losses.size(), 1u);
    EXPECT_NEAR(c.losses[0], one.losses[2], 1e-12 * std::abs(one.losses[2])) << name(from) << " -> one process";
    if (test_mpi_world().rank == 0)
      std::printf("%s -> every layout: step-3 loss within 1e-12 of the uninterrupted run\n", name(from).c_str());
    test_world()->barrier()->wait();
    if (test_mpi_world().rank == 0) fs::remove_all(saved);
  }
}

}  // namespace
