// `shoestring launch slurm`: the batch script rendered for a job, the checks made before anything is
// written (layout against ranks, bad options), the run directory the command creates, and the
// environment line of the training banner.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/run_cli.h"
#include "tests/run_files.h"
#include "trainer/cluster_env.h"
#include "trainer/config_loader.h"
#include "trainer/launch_slurm.h"

namespace fs = std::filesystem;
using namespace shoestring;

namespace {

SlurmJob two_nodes() {
  SlurmJob j;
  j.nodes = 2;
  j.gpus_per_node = 4;
  j.cpus_per_task = 12;
  j.time = "04:00:00";
  j.partition = "gpu";
  j.account = "proj7";
  j.job_name = "moe";
  j.run_dir = "/scratch/runs/moe-20261126-070000";
  j.workdir = "/home/me/shoestring";
  j.binary = "/home/me/shoestring/build/bin/shoestring";
  j.checkpoint_dir = j.run_dir + "/checkpoints";
  return j;
}

bool has_line(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (l == line) return true;
  return false;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(LaunchSlurm, ScriptAsksForTheJobShape) {
  const std::string s = render_sbatch(two_nodes());
  EXPECT_EQ(s.rfind("#!/bin/bash\n", 0), 0u);
  for (const char* line : {"#SBATCH --job-name=moe", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                           "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=12", "#SBATCH --time=04:00:00",
                           "#SBATCH --partition=gpu", "#SBATCH --account=proj7", "#SBATCH --signal=USR1@300",
                           "#SBATCH --requeue", "#SBATCH --open-mode=append",
                           "#SBATCH --output=/scratch/runs/moe-20261126-070000/slurm-%j.out",
                           "export OMP_NUM_THREADS=12", "cd /home/me/shoestring || exit 1"})
    EXPECT_TRUE(has_line(s, line)) << line << " missing from\n" << s;
  // sbatch stops reading #SBATCH lines at the first command: every one must come before it.
  EXPECT_LT(s.rfind("#SBATCH"), s.find("\nset -uo pipefail"));
  // No B: the signal must reach the trainer, and an untrapped USR1 would kill the batch shell.
  EXPECT_EQ(s.find("B:USR1"), std::string::npos);
}

TEST(LaunchSlurm, OptionalLinesAreLeftOutWhenNotGiven) {
  SlurmJob j = two_nodes();
  j.partition.clear();
  j.account.clear();
  const std::string s = render_sbatch(j);
  EXPECT_EQ(s.find("--partition"), std::string::npos);
  EXPECT_EQ(s.find("--account"), std::string::npos);
}

TEST(LaunchSlurm, ScriptResumesInItsRunDirAndRequeuesOnExit42) {
  const std::string s = render_sbatch(two_nodes());
  EXPECT_TRUE(has_line(s, "cmd=(srun --kill-on-bad-exit=1 --cpus-per-task=12 /home/me/shoestring/build/bin/shoestring "
                          "train --config \"$run_dir/config.yaml\" --set \"log.run_dir=$run_dir\" --resume auto)"))
      << s;
  EXPECT_TRUE(has_line(s, "run_dir=/scratch/runs/moe-20261126-070000")) << s;
  EXPECT_TRUE(has_line(s, "ckpt_dir=/scratch/runs/moe-20261126-070000/checkpoints")) << s;
  // The pointer is read before srun and compared after it.
  EXPECT_LT(s.find("before=$(newest)"), s.find("\"${cmd[@]}\"\n"));
  const auto branch = s.find("if ((rc == 42)) || { ((rc > 128)) && [[ $(newest) != \"$before\" ]]; }; then");
  ASSERT_NE(branch, std::string::npos) << s;
  const auto requeue = s.find("  scontrol requeue \"$SLURM_JOB_ID\"\n", branch);
  ASSERT_NE(requeue, std::string::npos) << s;
  EXPECT_LT(requeue, s.find("\nfi\n", branch));
  EXPECT_TRUE(has_line(s, "exit $rc")) << s;
}

TEST(LaunchSlurm, PathsWithSpacesAreQuotedForTheShell) {
  SlurmJob j = two_nodes();
  j.workdir = "/home/me/my clone";
  j.binary = "/home/me/my clone/build/bin/shoestring";
  const std::string s = render_sbatch(j);
  EXPECT_TRUE(has_line(s, "cd '/home/me/my clone' || exit 1")) << s;
  EXPECT_NE(s.find(" '/home/me/my clone/build/bin/shoestring' train"), std::string::npos) << s;
}

TEST(LaunchSlurm, TimeLimitIsHoursMinutesSeconds) {
  EXPECT_EQ(parse_time_limit("04:00:00"), 4 * 3600);
  EXPECT_EQ(parse_time_limit("100:30:05"), 100 * 3600 + 30 * 60 + 5);
  for (const char* bad : {"", "4h", "04:00", "04:60:00", "04:00:0", "1-00:00:00", "-1:00:00"})
    EXPECT_THROW(parse_time_limit(bad), LaunchError) << bad;
}

TEST(LaunchSlurm, BadJobOptionsAreNamed) {
  auto message = [](SlurmJob j) {
    try {
      validate_job(j);
    } catch (const LaunchError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(message(two_nodes()), "");
  SlurmJob j = two_nodes();
  j.nodes = 0;
  EXPECT_EQ(message(j), "--nodes must be at least 1, got 0");
  j = two_nodes();
  j.gpus_per_node = -1;
  EXPECT_EQ(message(j), "--gpus-per-node must be at least 1, got -1");
  j = two_nodes();
  j.time = "00:04:00";  // shorter than the 300 s warning
  EXPECT_NE(message(j).find("--signal-before 300 s must be positive and less than --time 00:04:00"), std::string::npos);
  j = two_nodes();
  j.partition = "gpu $(rm -rf ~)";
  EXPECT_NE(message(j).find("--partition"), std::string::npos);
}

TEST(LaunchSlurm, LayoutThatDoesNotFitTheJobIsAConfigErrorNamingTheKeys) {
  const Config c = load_config_text("parallel:\n  dp: 3\n  pp: 2\n", "x.yaml");
  SlurmJob j = two_nodes();  // 8 ranks
  try {
    check_layout(c, j);
    FAIL() << "6 ranks accepted for an 8-rank job";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "--nodes 2 x --gpus-per-node 4 = 8 ranks: parallel.dp=3 x parallel.pp=2 needs 6 ranks, the job has 8");
  }
  j.nodes = 1;
  j.gpus_per_node = 6;
  EXPECT_NO_THROW(check_layout(c, j));
  // dp auto: pp must divide the ranks; the batch must divide over dp.
  EXPECT_THROW(check_layout(load_config_text("parallel:\n  pp: 4\n", "x.yaml"), j), ConfigError);
  EXPECT_THROW(check_layout(load_config_text("train:\n  global_batch: 10\n  micro_batch_size: 1\n", "x.yaml"), j),
               ConfigError);
}

TEST(LaunchSlurm, JobConfigRunsInTheRunDirWithOneThreadPerCore) {
  const SlurmJob j = two_nodes();
  const Config c = job_config(load_config_text("", "x.yaml"), j);
  EXPECT_EQ(c.log.run_dir, j.run_dir);
  EXPECT_EQ(c.train.threads, 12);
  EXPECT_EQ(job_config(load_config_text("train:\n  threads: 3\n", "x.yaml"), j).train.threads, 3);  // set: kept
}

TEST(LaunchSlurm, CheckpointsGoWhereTheTrainerPutsThem) {
  const SlurmJob j = two_nodes();
  EXPECT_EQ(job_checkpoint_dir(load_config_text("", "x.yaml"), j), j.run_dir + "/checkpoints");
  EXPECT_EQ(job_checkpoint_dir(load_config_text("checkpoint:\n  dir: /ckpt/moe\n", "x.yaml"), j), "/ckpt/moe");
}

// The command a user runs: it writes config.yaml and job.sbatch into a new run directory and
// prints the sbatch line.
TEST(LaunchSlurmCli, WritesARunDirectoryAndPrintsTheSbatchCommand) {
  const fs::path out = shoestring::testing::fresh_dir("shoestring_slurm", "cli");
  const auto r = shoestring::testing::run_shoestring(
      "launch slurm --config configs/tiny.yaml --set train.steps=7 --nodes 1 --gpus-per-node 2 --time 01:00:00 "
      "--cpus-per-task 3 --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("\nsbatch (/\\S+/tiny-\\d{8}-\\d{6}/job.sbatch)\n$"))) << r.output;
  const fs::path script = m[1].str();
  const fs::path run_dir = script.parent_path();
  EXPECT_EQ(run_dir.parent_path(), out);
  const std::string text = slurp(script);
  EXPECT_TRUE(has_line(text, "#SBATCH --ntasks-per-node=2")) << text;
  EXPECT_TRUE(has_line(text, "cd " SHOESTRING_SOURCE_DIR " || exit 1")) << text;
  EXPECT_TRUE((fs::status(script).permissions() & fs::perms::owner_exec) != fs::perms::none);
  // The resolved config: what the job trains, with --set applied and the job's own settings.
  const Config c = load_config({(run_dir / "config.yaml").string()}, {});
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.train.threads, 3);
  EXPECT_EQ(c.log.run_dir, run_dir.string());
  EXPECT_EQ(c.model.d_model, 128);
  fs::remove_all(out);
}

TEST(LaunchSlurmCli, BadInputIsOneLineAndExitTwo) {
  const fs::path out = shoestring::testing::fresh_dir("shoestring_slurm", "bad");
  const std::string job = " --nodes 1 --gpus-per-node 2 --time 01:00:00 --out " + out.string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"launch slurm --nodes 1 --gpus-per-node 2 --time 01:00:00", "no config given"},
      {"launch slurm --config configs/tiny.yaml --nodes 0 --gpus-per-node 2 --time 01:00:00", "--nodes must be at least 1"},
      {"launch slurm --config configs/tiny.yaml --nodes 1 --gpus-per-node 2 --time 1h", "--time: expected HH:MM:SS"},
      {"launch slurm --config configs/tiny.yaml --nodes 1 --time 01:00:00", "--gpus-per-node is required"},
      {"launch slurm --config configs/tiny.yaml --set parallel.pp=4" + job, "parallel.pp=4 must divide"},
      {"launch slurm --config configs/tiny.yaml --set train.stepz=4" + job, "train.stepz"},
      {"launch pbs --config configs/tiny.yaml", "unknown launcher 'pbs'"},
      // Empty names were taken as not given: a job without the partition meant, a run directory
      // in the current one. 100000 x 100000 ranks wrapped around an int.
      {"launch slurm --config configs/tiny.yaml --partition ''" + job, "--partition: expected a name, got an empty one"},
      {"launch slurm --config configs/tiny.yaml --account ''" + job, "--account: expected a name, got an empty one"},
      {"launch slurm --config configs/tiny.yaml --job-name ''" + job, "--job-name: expected a name, got an empty one"},
      {"launch slurm --config configs/tiny.yaml --nodes 1 --gpus-per-node 2 --time 01:00:00 --out ''",
       "--out: expected a name, got an empty one"},
      {"launch slurm --config configs/tiny.yaml --nodes 100000 --gpus-per-node 100000 --time 01:00:00 --out " + out.string(),
       "--nodes 100000 x --gpus-per-node 100000 = 10000000000 ranks, more than 2147483647"},
  };
  for (const auto& [args, expected] : cases) {
    const auto r = shoestring::testing::run_shoestring(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
  }
  EXPECT_FALSE(fs::exists(out));  // nothing is written for a job that cannot run
  // --out naming a file was a filesystem error and exit 1.
  const fs::path file = shoestring::testing::fresh_dir("shoestring_slurm", "file");
  std::ofstream(file) << "not a folder\n";
  const auto r = shoestring::testing::run_shoestring("launch slurm --config configs/tiny.yaml --nodes 1 --gpus-per-node 2 "
                                                     "--time 01:00:00 --out " + file.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_EQ(r.output, "shoestring launch: --out " + file.string() + ": is a file, expected a folder for the run directory\n");
  fs::remove(file);
}

// A config file whose name holds a space names the job and the run directory after it: the error
// says where the name came from (it spoke of --job-name, never given), and --job-name mends both.
TEST(LaunchSlurmCli, JobNameFromTheConfigFileNameSaysSo) {
  const fs::path dir = shoestring::testing::fresh_dir("shoestring_slurm", "spaces");
  fs::create_directories(dir / "sp ace");
  fs::copy_file(SHOESTRING_SOURCE_DIR "/configs/tiny.yaml", dir / "sp ace" / "my cfg.yaml");
  const std::string cmd = "launch slurm --config '" + (dir / "sp ace" / "my cfg.yaml").string() +
                          "' --nodes 1 --gpus-per-node 1 --time 01:00:00 --out " + (dir / "out").string();
  const auto r = shoestring::testing::run_shoestring(cmd);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_EQ(r.output, "shoestring launch: the job name 'my cfg' comes from the config file's name (" +
                          (dir / "sp ace" / "my cfg.yaml").string() +
                          ") and must not contain spaces, quotes, '$' or backslashes; give one with --job-name NAME\n");
  EXPECT_FALSE(fs::exists(dir / "out"));
  const auto named = shoestring::testing::run_shoestring(cmd + " --job-name mycfg");
  ASSERT_EQ(named.code, 0) << named.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(named.output, m, std::regex("\nsbatch (/\\S+/mycfg-\\d{8}-\\d{6}/job.sbatch)\n$"))) << named.output;
  EXPECT_TRUE(has_line(slurp(m[1].str()), "#SBATCH --job-name=mycfg"));
  const auto slash = shoestring::testing::run_shoestring(cmd + " --job-name a/b");
  EXPECT_EQ(slash.code, 2);
  EXPECT_EQ(slash.output, "shoestring launch: --job-name 'a/b' must not contain '/': it names the run directory in --out\n");
  const auto stray = shoestring::testing::run_shoestring(cmd + " --job-name mycfg stray");
  EXPECT_EQ(stray.code, 2);
  EXPECT_EQ(stray.output, "shoestring: unexpected argument 'stray' (see --help)\n");
  fs::remove_all(dir);
}

TEST(LaunchSlurmCli, HelpNeedsNoOtherOption) {
  const auto r = shoestring::testing::run_shoestring("launch slurm --help");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("--gpus-per-node"), std::string::npos) << r.output;
}

// The banner line: only the variables that are set, in a fixed order.
class EnvironmentLine : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& name : reported_environment_variables()) {
      if (const char* v = getenv(name.c_str())) saved_.emplace_back(name, v);
      unsetenv(name.c_str());
    }
  }
  void TearDown() override {
    for (const auto& name : reported_environment_variables()) unsetenv(name.c_str());
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }
  std::vector<std::pair<std::string, std::string>> saved_;
};

TEST_F(EnvironmentLine, EmptyWhenNothingIsSet) {
  setenv("NCCL_SOMETHING_ELSE", "1", 1);  // not one of the reported ones
  EXPECT_EQ(environment_line(), "");
  unsetenv("NCCL_SOMETHING_ELSE");
}

TEST_F(EnvironmentLine, ListsWhatIsSetInItsOrder) {
  setenv("OMP_NUM_THREADS", "8", 1);
  setenv("NCCL_SOCKET_IFNAME", "eth0", 1);
  EXPECT_EQ(environment_line(), "  env      NCCL_SOCKET_IFNAME=eth0 OMP_NUM_THREADS=8");
  setenv("SLURM_PROCID", "3", 1);
  setenv("UCX_TLS", "rc,sm", 1);
  setenv("NCCL_DEBUG", "", 1);  // set but empty: NCCL sees it, so it is shown
  EXPECT_EQ(environment_line(),
            "  env      NCCL_SOCKET_IFNAME=eth0 NCCL_DEBUG= UCX_TLS=rc,sm OMP_NUM_THREADS=8 SLURM_PROCID=3");
}

TEST_F(EnvironmentLine, CoversTheSettingsThatDecideTransportAndPlacement) {
  const auto& names = reported_environment_variables();
  for (const char* name : {"NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_DEBUG", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE",
                           "NCCL_NET_GDR_LEVEL", "NCCL_ALGO", "NCCL_PROTO", "OMPI_MCA_btl", "OMPI_MCA_pml",
                           "OMPI_MCA_btl_tcp_if_include", "UCX_NET_DEVICES", "UCX_TLS", "CUDA_VISIBLE_DEVICES",
                           "OMP_NUM_THREADS", "SLURM_JOB_ID", "SLURM_PROCID"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
}

}  // namespace
