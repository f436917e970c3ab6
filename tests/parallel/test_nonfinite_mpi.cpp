// train.nonfinite=skip under mpirun with dp 2: only rank 1 poisons its loss (SHOESTRING_FAULT
// mode=nan) in step 2; the loss sum over dp makes both ranks see it, so both skip the same step
// without any extra collective: after the 2-step run the parameters equal the 1-step run's, on
// every rank, and a third (good) step trains on.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "tests/parallel/mpi_test_env.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;
using shoestring::testing::test_mpi_world;
using shoestring::testing::test_world;

namespace {

fs::path run_dir(const std::string& name) { return shoestring::testing::shared_temp_dir("shoestring_nfmpi_" + name); }

Config tiny(const fs::path& dir, int64_t steps) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny.yaml"},
                     {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
                      "model.intermediate_size=64", "train.seq_len=16", "train.micro_batch_size=2",
                      "train.global_batch=4", "optim.schedule=constant", "train.steps=" + std::to_string(steps),
                      "train.threads=1", "log.progress=off", "log.every=1000", "log.run_dir=" + dir.string()});
}

TrainSummary run(const std::string& name, int64_t steps, bool fault) {
  if (fault) ::setenv("SHOESTRING_FAULT", "rank=1,step=2,mode=nan", 1);
  TrainOptions o;
  o.keep_parameters = true;
  TrainSummary s = train(tiny(run_dir(name), steps), test_mpi_world(), o);
  ::unsetenv("SHOESTRING_FAULT");
  return s;
}

TEST(NonfiniteMpi, OnlyRankOnePoisonsItsLossAndEveryRankSkipsTheStep) {
  if (test_mpi_world().size != 2) GTEST_SKIP() << "needs 2 ranks";
  const TrainSummary one = run("one", 1, false);
  const TrainSummary two = run("two", 2, true);
  EXPECT_EQ(two.steps, 2);
  EXPECT_EQ(two.skipped_steps, 1);
  ASSERT_EQ(two.losses.size(), 2u);
  EXPECT_FALSE(std::isfinite(two.losses[1]));  // rank 0's own loss was finite: it sees the sum
  ASSERT_EQ(one.parameters.size(), two.parameters.size());
  for (size_t i = 0; i < one.parameters.size(); ++i)
    EXPECT_TRUE(one.parameters[i].second.equal(two.parameters[i].second)) << one.parameters[i].first;
  // And the run goes on: a good step after the skipped one moves finite parameters.
  const TrainSummary three = run("three", 3, true);
  EXPECT_EQ(three.skipped_steps, 1);
  EXPECT_TRUE(std::isfinite(three.losses[2]));
  bool moved = false;
  for (size_t i = 0; i < two.parameters.size(); ++i) {
    EXPECT_TRUE(three.parameters[i].second.isfinite().all().item<bool>());
    moved = moved || !two.parameters[i].second.equal(three.parameters[i].second);
  }
  EXPECT_TRUE(moved);
  test_world()->barrier()->wait();
  if (test_mpi_world().rank == 0)
    for (const char* n : {"one", "two", "three"}) fs::remove_all(fs::temp_directory_path() / ("shoestring_nfmpi_" + std::string(n) + "_" + std::to_string(::getpid())));
}

}  // namespace
