// Expert parallelism end to end, under mpirun with 2 or 4 ranks: training the tiny MoE model with
// experts sharded over ep ranks (dp = all ranks, ep = 2 and, with 4 ranks, 4) gives the losses
// and parameters of the same run with ep = 1 and of one process consuming the same global batch.
// Each rank also trains the single-process reference itself, so its comparison needs no
// communication; a sharded expert parameter is compared with its slice of the whole one.
//
// Tolerance 1e-12 in float64 (relative on losses, absolute on parameters of scale 0.02-1): EP
// changes only summation orders (a token's expert outputs are summed per destination rank first;
// an expert's weight gradient is one sum over the rows it received from every rank), ~1e-16
// relative per step, as in the data-parallel test.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/parallel/mpi_test_env.h"
#include "trainer/config_loader.h"
#include "trainer/model/transformer.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;
using shoestring::testing::test_mpi_world;
using shoestring::testing::test_world;

namespace {

fs::path run_dir(const std::string& name) { return shoestring::testing::shared_temp_dir("shoestring_ep_" + name); }

// The data-parallel test's tiny MoE, in float64, with the router biases moving (gamma 0.01, so
// they change visibly in 3 steps) and the given ep.
Config tiny_moe(int ep, const fs::path& dir, bool zero1 = false, int64_t steps = 3,
                const std::string& dispatch = "auto") {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"},
                     {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
                      "model.kv_lora_rank=16", "model.intermediate_size=64", "model.moe_intermediate_size=16",
                      "train.seq_len=16", "train.micro_batch_size=2", "train.global_batch=8", "train.steps=" + std::to_string(steps),
                      "train.threads=1", "optim.warmup_steps=1", "optim.grad_clip=0.5", "train.precision=fp64",
                      "train.router_bias_gamma=0.01", "parallel.bucket_mb=0.01", "parallel.ep=" + std::to_string(ep),
                      "parallel.zero1=" + std::string(zero1 ? "true" : "false"), "parallel.ep_dispatch_dtype=" + dispatch,
                      "log.progress=off", "log.every=1000", "log.run_dir=" + dir.string()});
}

// Max |a - b| over parameters, a sharded expert parameter against its slice of b's.
double worst_param_diff(const TrainSummary& sharded, const TrainSummary& whole, int ep_rank) {
  EXPECT_EQ(sharded.parameters.size(), whole.parameters.size());
  double worst = 0;
  for (size_t i = 0; i < whole.parameters.size(); ++i) {
    const auto& [name, p] = sharded.parameters[i];
    EXPECT_EQ(name, whole.parameters[i].first);
    at::Tensor ref = whole.parameters[i].second;
    if (model::is_routed_expert(name)) ref = ref.narrow(0, ep_rank * p.size(0), p.size(0));
    EXPECT_EQ(p.sizes(), ref.sizes()) << name;
    worst = std::max(worst, (p - ref).abs().max().item<double>());
  }
  return worst;
}

TrainSummary run(int ep, const std::string& tag, bool zero1 = false, int64_t steps = 3,
                 const std::string& dispatch = "auto") {
  TrainOptions keep;
  keep.keep_parameters = true;
  const fs::path dir = run_dir(tag);
  TrainSummary s = train(tiny_moe(ep, dir, zero1, steps, dispatch), test_mpi_world(), keep);
  if (test_mpi_world().rank == 0) {
    // metrics.jsonl carries the EP traffic only when ep > 1. Per step a rank has 128 / n tokens
    // in 3 MoE layers (2 main, 1 MTP on 15 of 16 positions), each sent to 1 or 2 (top-2) ranks.
    std::ifstream in(dir / "metrics.jsonl");
    std::string line;
    std::getline(in, line);
    const size_t at = line.find("\"ep_rows_sent\":");
    EXPECT_EQ(at != std::string::npos, ep > 1) << line;
    EXPECT_EQ(line.find("\"ep_rows_received\":") != std::string::npos, ep > 1) << line;
    if (at != std::string::npos) {
      const long long sent = std::stoll(line.substr(at + 15));
      const long long tokens = 128 / test_mpi_world().size;
      EXPECT_GE(sent, 2 * tokens) << line;
      EXPECT_LE(sent, 3 * 2 * tokens) << line;
      // Bytes: every row is d_model 32 float64 values, or 32 E4M3 codes and one fp32 scale.
      auto field = [&](const std::string& key) {
        const size_t k = line.find("\"" + key + "\":");
        return k == std::string::npos ? -1LL : std::stoll(line.substr(k + key.size() + 3));
      };
      const long long row_bytes = dispatch == "fp8" ? 32 + 4 : 32 * 8;
      EXPECT_EQ(field("ep_bytes_sent"), sent * row_bytes) << line;
      EXPECT_EQ(field("ep_bytes_received"), field("ep_rows_received") * row_bytes) << line;
    }
  }
  test_world()->barrier()->wait();
  if (test_mpi_world().rank == 0) fs::remove_all(dir);
  return s;
}

void expect_identical_on_every_rank(const std::vector<at::Tensor>& tensors, const std::string& what) {
  std::vector<at::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.reshape({-1}).to(at::kDouble));
  const at::Tensor mine = at::cat(flat);
  const int n = test_world()->size();
  at::Tensor all = at::empty({n * mine.numel()}, mine.options());
  test_world()->all_gather(all, mine)->wait();
  for (int r = 1; r < n; ++r)
    EXPECT_TRUE(at::equal(all.narrow(0, 0, mine.numel()), all.narrow(0, r * mine.numel(), mine.numel())))
        << what << ": rank " << r << " differs from rank 0";
}

TEST(ExpertParallelTraining, Float64MatchesEp1AndOneProcess) {
  const int n = test_mpi_world().size;
  TrainOptions keep;
  keep.keep_parameters = true;
  const fs::path ref_dir = fs::temp_directory_path() / ("shoestring_ep_ref_" + std::to_string(::getpid()));
  fs::remove_all(ref_dir);
  const TrainSummary one = train(tiny_moe(1, ref_dir), parallel::World{}, keep);
  fs::remove_all(ref_dir);
  const TrainSummary ep1 = run(1, "ep1");

  std::vector<int> eps{2};
  if (n >= 4) eps.push_back(4);
  for (int ep : eps) {
    const TrainSummary s = run(ep, "ep" + std::to_string(ep));
    const int ep_rank = test_mpi_world().rank % ep;  // pp = 1: dp rank = rank, ep innermost
    ASSERT_EQ(s.losses.size(), one.losses.size());
    for (size_t i = 0; i < one.losses.size(); ++i) {
      EXPECT_NEAR(s.losses[i], ep1.losses[i], 1e-12 * std::abs(ep1.losses[i])) << "ep " << ep << " step " << i + 1;
      EXPECT_NEAR(s.losses[i], one.losses[i], 1e-12 * std::abs(one.losses[i])) << "ep " << ep << " step " << i + 1;
    }
    const double vs_ep1 = worst_param_diff(s, ep1, ep_rank), vs_one = worst_param_diff(s, one, ep_rank);
    EXPECT_LE(vs_ep1, 1e-12) << "ep " << ep;
    EXPECT_LE(vs_one, 1e-12) << "ep " << ep;

    // Dense parameters and router biases are bit-identical on every rank (the biases move by
    // the global load, summed in float64 over dp).
    std::vector<at::Tensor> dense = s.router_biases;
    ASSERT_FALSE(dense.empty());
    for (const auto& [name, p] : s.parameters)
      if (!model::is_routed_expert(name)) dense.push_back(p);
    expect_identical_on_every_rank(dense, "ep " + std::to_string(ep) + " dense parameters and router biases");
    for (size_t i = 0; i < s.router_biases.size(); ++i)
      EXPECT_TRUE(at::equal(s.router_biases[i], one.router_biases[i])) << "ep " << ep << " router " << i;
    if (test_mpi_world().rank == 0)
      std::printf("dp=%d ep=%d: final loss %.17g vs ep=1 %.17g vs one process %.17g; max |param diff| %.3g vs ep=1, "
                  "%.3g vs one process\n",
                  n, ep, s.losses.back(), ep1.losses.back(), one.losses.back(), vs_ep1, vs_one);
  }
}

}  // namespace

namespace {

TEST(ExpertParallelTraining, Zero1WithExpertShards) {
  // ZeRO-1 shards the expert buckets over the ep-replica group: the same result as without it.
  const TrainSummary plain = run(2, "plain"), zero1 = run(2, "zero1", /*zero1=*/true);
  for (size_t i = 0; i < plain.losses.size(); ++i)
    EXPECT_NEAR(zero1.losses[i], plain.losses[i], 1e-12 * std::abs(plain.losses[i])) << "step " << i + 1;
  const double worst = worst_param_diff(zero1, plain, /*ep_rank=*/0);  // both sharded alike: no slicing
  EXPECT_LE(worst, 1e-12);
}

TEST(ExpertParallelTraining, RouterBiasesStayIdenticalOverManySteps) {
  // 30 steps with gamma 0.01: the biases move every step, from loads summed over all ranks.
  const int ep = test_world()->size() >= 4 ? 4 : 2;
  const TrainSummary s = run(ep, "bias", false, 30);
  ASSERT_FALSE(s.router_biases.empty());
  double moved = 0;
  for (const auto& b : s.router_biases) moved = std::max(moved, b.abs().max().item<double>());
  EXPECT_GT(moved, 0.05);  // else the biases were not exercised
  expect_identical_on_every_rank(s.router_biases, "router biases after 30 steps");
}

TEST(ExpertParallelTraining, Fp8DispatchTrainsCloseToAuto) {
  // parallel.ep_dispatch_dtype reaches the dispatcher: the losses move off the auto run's from the
  // first step on, by E4M3 rounding of the routed experts' inputs only (d_model 32: one ragged
  // tile per row), far below the 1e-2 relative bound.
  const TrainSummary plain = run(2, "dispatch_auto"), fp8 = run(2, "dispatch_fp8", false, 3, "fp8");
  ASSERT_EQ(fp8.losses.size(), plain.losses.size());
  for (size_t i = 0; i < plain.losses.size(); ++i) {
    EXPECT_NE(fp8.losses[i], plain.losses[i]) << "step " << i + 1;
    EXPECT_NEAR(fp8.losses[i], plain.losses[i], 1e-2 * std::abs(plain.losses[i])) << "step " << i + 1;
  }
  if (test_mpi_world().rank == 0)
    std::printf("ep 2: final loss with fp8 dispatch %.17g, auto %.17g\n", fp8.losses.back(), plain.losses.back());
}

}  // namespace
