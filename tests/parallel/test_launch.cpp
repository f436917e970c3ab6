// Multi-process training as users launch it: mpirun on the real executable (and launch/train
// --np), a layout that does not fit the ranks started, and faults -- a rank that exits mid-step
// and one that hangs -- which must end the whole job with a message naming the rank, not hang it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/run_cli.h"
#include "tests/run_files.h"

namespace fs = std::filesystem;
using shoestring::testing::CliResult;

namespace {

fs::path fresh_dir(const std::string& name) { return shoestring::testing::fresh_dir("shoestring_launch", name); }

constexpr const char* kMpirun =
    "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 ";

std::string tiny_args(const fs::path& dir, int steps) {
  return " --config configs/tiny-moe.yaml --set data.source=synthetic --set model.vocab_size=64 "
         "--set data.eval_interval=0 --set train.micro_batch_size=2 --set train.seq_len=16 --set train.steps=" +
         std::to_string(steps) + " --set train.threads=1 --set log.progress=off --set log.run_dir=" + dir.string();
}

// `shoestring ARGS` under mpirun with np ranks.
CliResult mpirun(int np, const std::string& env, const std::string& args) {
  return shoestring::testing::run_command(std::string(kMpirun) + env + " mpirun -np " + std::to_string(np) +
                                          " " SHOESTRING_BINARY_DIR "/bin/shoestring " + args);
}

// A fault injected into one of 3 ranks must end the whole job, non-zero and well within the
// time a user would wait, with output that contains `expected`.
void expect_fault_ends_job(const std::string& name, const std::string& fault, double timeout_s,
                           const std::string& expected) {
  const fs::path dir = fresh_dir(name);
  const CliResult r = mpirun(3, "SHOESTRING_FAULT=" + fault,
                             "train" + tiny_args(dir, 20) + " --set parallel.timeout_s=" + std::to_string(timeout_s));
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_LT(r.seconds, 60) << r.output;
  EXPECT_NE(r.output.find("SHOESTRING_FAULT: injecting"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
  // mpirun may SIGTERM the survivors before it kills them: their line must point at the failure.
  if (r.output.find("stop requested") != std::string::npos)
    EXPECT_NE(r.output.find("If another rank failed, this is mpirun stopping the job"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Launch, TwoRanksTrainWithOneMetricsFileAndALogPerRank) {
  const fs::path dir = fresh_dir("two");
  const CliResult r = mpirun(2, "", "train" + tiny_args(dir, 3) + " --set train.global_batch=4");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("parallel dp 2 x pp 1"), std::string::npos) << r.output;
  // Only rank 0 talks: one banner, not two.
  EXPECT_EQ(r.output.find("shoestring train:"), r.output.rfind("shoestring train:")) << r.output;
  EXPECT_TRUE(fs::exists(dir / "metrics.jsonl"));
  EXPECT_TRUE(fs::exists(dir / "train.log"));
  EXPECT_TRUE(fs::exists(dir / "rank-1.log"));
  fs::remove_all(dir);
}

// The bench sets the layout itself; a --set of it would be silently replaced. Every rank finds the
// same mistake and rank 0 alone says it, so the line is whole.
TEST(Launch, BenchPipelineRefusesLayoutOverridesOnce) {
  const CliResult r = mpirun(2, "", "bench pipeline --config configs/tiny-moe.yaml --set parallel.pp=4");
  EXPECT_EQ(r.code, 2) << r.output;
  const std::string line = "shoestring bench pipeline: --set parallel.pp=4: the bench sets parallel.pp itself";
  EXPECT_NE(r.output.find(line), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(line), r.output.rfind(line)) << r.output;
  const CliResult m = mpirun(2, "", "bench pipeline --config configs/tiny-moe.yaml --microbatches -1");
  EXPECT_EQ(m.code, 2) << m.output;
  EXPECT_NE(m.output.find("--microbatches must be >= 0 (0: 4 x pp), got -1"), std::string::npos) << m.output;
}

// The other benches' option errors too (each rank printed its own copy).
TEST(Launch, BenchOptionErrorsAreSaidOnce) {
  for (const auto& [args, line] : std::vector<std::pair<std::string, std::string>>{
           {"bench comm --min-bytes 1Q",
            "shoestring bench comm: --min-bytes: expected a size such as 4096, 64K, 16M or 1G, got '1Q'"},
           {"bench train --config configs/tiny.yaml --steps 0", "shoestring bench train: --steps must be > 0, got 0"}}) {
    const CliResult r = mpirun(2, "", args);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find(line), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find(line), r.output.rfind(line)) << r.output;
  }
}

TEST(Launch, LayoutThatDoesNotFitTheRanksIsAConfigError) {
  const fs::path dir = fresh_dir("mismatch");
  const CliResult r = mpirun(2, "", "train" + tiny_args(dir, 1) + " --set parallel.dp=3");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("parallel.dp=3 x parallel.pp=1 needs 3 ranks, mpirun started 2"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir));
}

TEST(Launch, ARuntimeErrorIsPrefixedWithItsRankAndEndsTheJob) {
  const fs::path parent = fresh_dir("blocked");
  std::ofstream(parent.string()) << "a file, not a folder\n";  // rank 0 cannot create the run directory below it
  const fs::path dir = parent / "run";
  const CliResult r = mpirun(2, "", "train" + tiny_args(dir, 2));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_LT(r.seconds, 60) << r.output;
  EXPECT_NE(r.output.find("[rank 0] error: " + dir.string() + ": cannot create run directory"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("[rank 1] error: rank 0 could not prepare the run directory"), std::string::npos) << r.output;
  fs::remove(parent);
}

TEST(Launch, ATakenRunDirectoryIsOneConfigErrorAndKeepsItsData) {
  const fs::path dir = fresh_dir("taken");
  fs::create_directories(dir);
  std::ofstream(dir / "metrics.jsonl") << "{}\n";  // an earlier run: rank 0 refuses to overwrite it
  const CliResult r = mpirun(2, "", "train" + tiny_args(dir, 2));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_LT(r.seconds, 60) << r.output;
  const std::string line = "config error: " + dir.string() + ": already holds a run";
  const size_t at = r.output.find("[rank 0] " + line);
  ASSERT_NE(at, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(line, at + 9 + line.size()), std::string::npos) << "printed once, by rank 0:\n" << r.output;
  std::ifstream kept(dir / "metrics.jsonl");
  std::string first;
  std::getline(kept, first);
  EXPECT_EQ(first, "{}");  // the earlier run's data is untouched
  fs::remove_all(dir);
}

// mpirun notices the exit and names the rank ("process rank 1 ... exited"); our timeout is the
// backstop when a launcher does not.
TEST(Launch, ARankThatExitsEndsTheJob) { expect_fault_ends_job("exit", "rank=1,step=2,mode=exit", 20, "rank 1"); }

// The hung rank is alive (its comm thread answers the roll call) but not in the collective.
TEST(Launch, AHungRankTimesOutWithAMessageNamingIt) {
  expect_fault_ends_job("hang", "rank=2,step=2,mode=hang", 4, "not in communication: rank 2");
}

TEST(Launch, LaunchTrainStartsRanksWithMpirun) {
  const fs::path dir = fresh_dir("launch_train");
  // launch/train runs build/bin/shoestring of the clone: only meaningful when that is this build.
  std::error_code ec;
  if (!fs::equivalent(SHOESTRING_BINARY_DIR, fs::path(SHOESTRING_SOURCE_DIR) / "build", ec))
    GTEST_SKIP() << "launch/train uses " SHOESTRING_SOURCE_DIR "/build, this test was built in " SHOESTRING_BINARY_DIR;
  const CliResult r = shoestring::testing::run_command(
      std::string(kMpirun) + "SHOESTRING_NO_SETUP=1 launch/train configs/tiny-moe.yaml --np 4" +
      tiny_args(dir, 2).substr(std::string(" --config configs/tiny-moe.yaml").size()));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("mpirun"), std::string::npos) << r.output;  // the command it ran is echoed
  EXPECT_NE(r.output.find("-np 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("parallel dp 4"), std::string::npos) << r.output;
  // Every rank ran: rank 0 writes train.log, the others rank-N.log.
  for (int k = 1; k < 4; ++k)
    EXPECT_TRUE(fs::exists(dir / ("rank-" + std::to_string(k) + ".log"))) << "rank " << k;
  fs::remove_all(dir);
}

TEST(Launch, LaunchTrainUsesAHostfile) {
  std::error_code ec;
  if (!fs::equivalent(SHOESTRING_BINARY_DIR, fs::path(SHOESTRING_SOURCE_DIR) / "build", ec))
    GTEST_SKIP() << "launch/train uses " SHOESTRING_SOURCE_DIR "/build, this test was built in " SHOESTRING_BINARY_DIR;
  const fs::path dir = fresh_dir("hostfile");
  const fs::path hosts = fresh_dir("hosts");
  std::ofstream(hosts) << "localhost slots=2\n";
  const CliResult r = shoestring::testing::run_command(
      std::string(kMpirun) + "SHOESTRING_NO_SETUP=1 env -u LD_LIBRARY_PATH launch/train configs/tiny-moe.yaml --np 2 --hostfile " +
      hosts.string() + tiny_args(dir, 2).substr(std::string(" --config configs/tiny-moe.yaml").size()));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("--hostfile " + hosts.string()), std::string::npos) << r.output;
  // -x of an unset variable: mpirun would warn "could not find environment variable" on every run.
  EXPECT_EQ(r.output.find("LD_LIBRARY_PATH"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("parallel dp 2"), std::string::npos) << r.output;
  fs::remove_all(dir);
  fs::remove(hosts);
}

TEST(Launch, LaunchTrainRefusesBadLauncherOptions) {
  const CliResult np = shoestring::testing::run_command("SHOESTRING_NO_SETUP=1 launch/train configs/tiny.yaml --np two");
  EXPECT_EQ(np.code, 2) << np.output;
  EXPECT_NE(np.output.find("--np needs a positive whole number, not 'two'"), std::string::npos) << np.output;
  const CliResult hf = shoestring::testing::run_command("SHOESTRING_NO_SETUP=1 launch/train configs/tiny.yaml --hostfile /nonexistent/hosts");
  EXPECT_EQ(hf.code, 2) << hf.output;
  EXPECT_NE(hf.output.find("--hostfile: cannot read '/nonexistent/hosts'"), std::string::npos) << hf.output;
}

}  // namespace
