// Data parallelism end to end, under mpirun with 2 or 4 ranks: training the tiny MoE model on
// dp ranks (ZeRO-1 off and on) gives the losses and parameters of one process consuming the same
// global batch. Each rank also trains the single-process reference itself (a local world), so the
// comparison needs no communication.
//
// Tolerances: in float64 the only differences are the order of the gradient sums (per rank, then
// across ranks) and of the norm's sum, ~1e-16 relative per step: 1e-12 leaves room for the few
// steps' growth. In float32 the same reorderings are ~1e-7 relative, and Adam's normalisation
// can amplify them in near-zero gradient components: 1e-5 relative on losses and 1e-5 absolute on
// parameters (scale ~0.02-1) after 3 steps (measured: losses equal to 3e-8, parameters to 1.6e-7).
// The clip (0.5) is below the gradient norm, so clipping by the sharded global norm is exercised.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "tests/parallel/mpi_test_env.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;
using shoestring::testing::test_mpi_world;
using shoestring::testing::test_world;

namespace {

fs::path run_dir(const std::string& name) { return shoestring::testing::shared_temp_dir("shoestring_dp_" + name); }

Config tiny_moe(const std::string& precision, bool zero1, const fs::path& dir) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"},
                     {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
                      "model.kv_lora_rank=16", "model.intermediate_size=64", "model.moe_intermediate_size=16",
                      "train.seq_len=16", "train.micro_batch_size=2", "train.global_batch=8", "train.steps=3",
                      "train.threads=1", "optim.warmup_steps=1", "optim.grad_clip=0.5", "train.precision=" + precision,
                      "parallel.zero1=" + std::string(zero1 ? "true" : "false"), "parallel.bucket_mb=0.01",
                      "log.progress=off", "log.every=1000", "log.run_dir=" + dir.string()});
}

void expect_same_training(const std::string& precision, bool zero1, double loss_rtol, double param_atol) {
  const std::string tag = precision + (zero1 ? "_zero1" : "");
  TrainOptions keep;
  keep.keep_parameters = true;
  Config ref_cfg = tiny_moe(precision, false, fs::temp_directory_path() /
                                                  ("shoestring_dp_ref_" + tag + "_" + std::to_string(::getpid())));
  fs::remove_all(ref_cfg.log.run_dir);
  const TrainSummary ref = train(ref_cfg, parallel::World{}, keep);  // one process, 4 micro-batches
  const fs::path dir = run_dir(tag);
  const TrainSummary dp = train(tiny_moe(precision, zero1, dir), test_mpi_world(), keep);

  const int n = test_mpi_world().size;
  EXPECT_EQ(dp.accum_steps, 4 / n);
  ASSERT_EQ(dp.losses.size(), ref.losses.size());
  for (size_t i = 0; i < ref.losses.size(); ++i)
    EXPECT_NEAR(dp.losses[i], ref.losses[i], loss_rtol * std::abs(ref.losses[i])) << "step " << i + 1;
  ASSERT_EQ(dp.parameters.size(), ref.parameters.size());
  double worst = 0;
  for (size_t i = 0; i < ref.parameters.size(); ++i)
    worst = std::max(worst, (dp.parameters[i].second - ref.parameters[i].second).abs().max().item<double>());
  EXPECT_LE(worst, param_atol);
  // Replicas must not drift apart: every rank holds bit-identical parameters.
  at::Tensor mine = at::cat([&] {
    std::vector<at::Tensor> flat;
    for (const auto& p : dp.parameters) flat.push_back(p.second.reshape({-1}).to(at::kDouble));
    return flat;
  }());
  at::Tensor all = at::empty({n * mine.numel()}, mine.options());
  test_world()->all_gather(all, mine)->wait();
  for (int r = 1; r < n; ++r) EXPECT_TRUE(at::equal(all.narrow(0, 0, mine.numel()), all.narrow(0, r * mine.numel(), mine.numel())));
  if (test_mpi_world().rank == 0) {
    std::printf("%s dp=%d: final loss %.17g vs one process %.17g; max |param diff| %.3g\n", tag.c_str(), n,
                dp.losses.back(), ref.losses.back(), worst);
    EXPECT_TRUE(fs::exists(dir / "metrics.jsonl"));
  }
  if (test_mpi_world().rank == 1) {
    EXPECT_TRUE(fs::exists(dir / "rank-1.log"));
  }
  test_world()->barrier()->wait();
  if (test_mpi_world().rank == 0) fs::remove_all(dir);
  fs::remove_all(ref_cfg.log.run_dir);
}

TEST(DataParallel, Float64MatchesOneProcess) { expect_same_training("fp64", false, 1e-12, 1e-12); }
TEST(DataParallel, Float64Zero1MatchesOneProcess) { expect_same_training("fp64", true, 1e-12, 1e-12); }
TEST(DataParallel, Float32MatchesOneProcess) { expect_same_training("fp32", false, 1e-5, 1e-5); }
TEST(DataParallel, Float32Zero1MatchesOneProcess) { expect_same_training("fp32", true, 1e-5, 1e-5); }

TEST(DataParallel, Zero1ShardsTheOptimizerState) {
  const fs::path a = run_dir("mem_full"), b = run_dir("mem_zero1");
  Config full = tiny_moe("fp32", false, a), sharded = tiny_moe("fp32", true, b);
  full.train.steps = sharded.train.steps = 1;
  const TrainSummary f = train(full, test_mpi_world()), z = train(sharded, test_mpi_world());
  const int n = test_mpi_world().size;
  // Every moment element lives on exactly one rank, about 1/n of them on each (bucket shards are
  // equal up to the padding of each bucket to a multiple of n).
  at::Tensor total = at::full({1}, z.optimizer_state_bytes, at::kLong);
  test_world()->all_reduce(total)->wait();
  EXPECT_EQ(total.item<int64_t>(), f.optimizer_state_bytes);
  EXPECT_LE(double(z.optimizer_state_bytes), 1.05 * double(f.optimizer_state_bytes) / n + 4096);
  test_world()->barrier()->wait();
  if (test_mpi_world().rank == 0) fs::remove_all(a), fs::remove_all(b);
}

}  // namespace
