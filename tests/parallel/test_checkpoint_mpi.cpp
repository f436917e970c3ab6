// Checkpoints under mpirun (2 or 4 ranks): a run with dp = all ranks, ep 2 and ZeRO-1 is stopped
// by SIGTERM on the last rank after step 3 (every rank must stop there and save), resumed, and
// compared bit for bit with the uninterrupted run; its step-3 checkpoint is then loaded under
// another layout (ep 1, no ZeRO-1) and into one process: the parameters and router biases equal
// the saved ones exactly, and the losses of steps 4-6 match the uninterrupted run to 1e-12
// relative (float64; only summation orders change with the layout, as in test_ep_training).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/run_files.h"
#include "tests/parallel/mpi_test_env.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/config_loader.h"
#include "trainer/model/transformer.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;
using shoestring::testing::test_mpi_world;
using shoestring::testing::test_world;

namespace {

using shoestring::testing::deterministic_metrics;

fs::path run_dir(const std::string& name) { return shoestring::testing::shared_temp_dir("shoestring_ckmpi_" + name); }

Config tiny_moe(int ep, bool zero1, const fs::path& dir, int64_t steps, int64_t interval) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"},
                     {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
                      "model.kv_lora_rank=16", "model.intermediate_size=64", "model.moe_intermediate_size=16",
                      "train.seq_len=16", "train.micro_batch_size=2", "train.global_batch=8",
                      "train.steps=" + std::to_string(steps), "train.threads=1", "optim.warmup_steps=1",
                      "optim.grad_clip=0.5", "train.precision=fp64", "train.router_bias_gamma=0.01",
                      "parallel.bucket_mb=0.01", "parallel.ep=" + std::to_string(ep),
                      "parallel.zero1=" + std::string(zero1 ? "true" : "false"), "log.progress=off", "log.every=1000",
                      "log.run_dir=" + dir.string(), "checkpoint.interval=" + std::to_string(interval)});
}

// Max |a - b| over parameters; `sharded` holds ep rank `ep_rank`'s block of each routed expert.
double worst_param_diff(const TrainSummary& sharded, const TrainSummary& whole, int ep_rank) {
  EXPECT_EQ(sharded.parameters.size(), whole.parameters.size());
  double worst = 0;
  for (size_t i = 0; i < whole.parameters.size() && i < sharded.parameters.size(); ++i) {
    const auto& [name, p] = sharded.parameters[i];
    at::Tensor ref = whole.parameters[i].second;
    if (model::is_routed_expert(name) && ref.size(0) != p.size(0)) ref = ref.narrow(0, ep_rank * p.size(0), p.size(0));
    EXPECT_EQ(p.sizes(), ref.sizes()) << name;
    worst = std::max(worst, (p - ref).abs().max().item<double>());
  }
  for (size_t i = 0; i < whole.router_biases.size(); ++i)
    worst = std::max(worst, (sharded.router_biases[i] - whole.router_biases[i]).abs().max().item<double>());
  return worst;
}

double worst_rel(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double w = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) w = std::max(w, std::abs(a[i] - b[i]) / std::abs(b[i]));
  return w;
}

}  // namespace

TEST(CheckpointMpi, ExactResumeAfterSigtermAndResharding) {
  const parallel::World& world = test_mpi_world();
  if (world.size < 2) GTEST_SKIP() << "needs mpirun with 2 or 4 ranks";
  const fs::path a = run_dir("a"), b = run_dir("b"), c = run_dir("c");
  const TrainSummary sa = train(tiny_moe(2, true, a, 6, 3), world);
  ASSERT_EQ(sa.losses.size(), 6u);

  // SIGTERM reaches only the last rank, inside step 3: all ranks agree to stop after step 3.
  ::setenv("SHOESTRING_FAULT", ("rank=" + std::to_string(world.size - 1) + ",step=3,mode=sigterm").c_str(), 1);
  TrainOptions keep;
  keep.keep_parameters = true;
  const TrainSummary sb = train(tiny_moe(2, true, b, 6, 0), world, keep);
  ::unsetenv("SHOESTRING_FAULT");
  EXPECT_TRUE(sb.preempted);
  EXPECT_EQ(sb.steps, 3);
  const std::string step3 = (b / "checkpoints" / ckpt::step_dir_name(3)).string();
  ASSERT_TRUE(fs::exists(step3 + "/manifest.json"));
  const ckpt::Manifest m = ckpt::read_manifest(step3);
  EXPECT_EQ(m.layout.dp, world.size);
  EXPECT_EQ(m.layout.ep, 2);
  EXPECT_TRUE(m.layout.zero1);
  EXPECT_EQ(int(m.files.size()), world.size);

  TrainOptions resume;
  resume.resume = "auto";
  const TrainSummary sb2 = train(tiny_moe(2, true, b, 6, 0), world, resume);
  EXPECT_EQ(sb2.resumed_from_step, 3);
  if (world.rank == 0) {
    const auto ma = deterministic_metrics(a), mb = deterministic_metrics(b);
    ASSERT_EQ(ma.size(), 6u);
    EXPECT_EQ(ma, mb);
  }

  // Another layout on the same ranks: experts whole on every rank, moments not sharded. With
  // train.steps = 3 nothing is trained: the parameters are what was loaded.
  TrainOptions load_only;
  load_only.resume = step3;
  load_only.keep_parameters = true;
  const TrainSummary loaded = train(tiny_moe(1, false, c, 3, 0), world, load_only);
  EXPECT_EQ(worst_param_diff(sb, loaded, world.rank % 2), 0.0);
  TrainOptions reshard;
  reshard.resume = step3;
  const fs::path d = run_dir("d");
  const TrainSummary sd = train(tiny_moe(1, false, d, 6, 0), world, reshard);
  const std::vector<double> tail(sa.losses.begin() + 3, sa.losses.end());
  const double rel = worst_rel(sd.losses, tail);
  EXPECT_LT(rel, 1e-12);
  if (world.rank == 0) std::printf("resharded to ep 1, no zero1: worst relative loss difference %.3g\n", rel);

  // One process (rank 0 alone): every expert and moment slice gathered from all ranks' files.
  if (world.rank == 0) {
    const fs::path e = fs::temp_directory_path() / ("shoestring_ckmpi_one_" + std::to_string(::getpid()));
    fs::remove_all(e);
    const TrainSummary one = train(tiny_moe(1, false, e, 3, 0), parallel::World{}, load_only);
    EXPECT_EQ(worst_param_diff(sb, one, 0), 0.0);
    fs::remove_all(e);
    const TrainSummary one6 = train(tiny_moe(1, false, e, 6, 0), parallel::World{}, reshard);
    const double rel1 = worst_rel(one6.losses, tail);
    EXPECT_LT(rel1, 1e-12);
    std::printf("resharded to 1 process: worst relative loss difference %.3g\n", rel1);
    fs::remove_all(e);
  }
  test_world()->barrier()->wait();
  if (world.rank == 0)
    for (const auto& dir : {a, b, c, d}) fs::remove_all(dir);
}
