// kill -9 under mpirun: a 2-rank job (dp 2, ep 2) saving after every step is killed at seeded
// random moments inside saves (0-3 ms after a save's temporary directory appeared), either as a
// whole (SIGKILL to mpirun's process group: a node gone) or one rank alone (a rank's process dies;
// mpirun must then end the job). After every kill: no process of the
// job is left, every step_N/ left behind passes `shoestring ckpt verify` (temporary .tmp- dirs may
// remain), and the newest step never goes back. Finally `--resume auto` resumes from the newest
// and finishes. Bounded: at most 8 kills and 60 s of killing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/run_cli.h"
#include "tests/run_files.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kRanks = 2;
const std::string kExe = SHOESTRING_BINARY_DIR "/bin/shoestring";

std::vector<std::string> train_argv(const fs::path& dir, int64_t steps) {
  std::vector<std::string> a = {SHOESTRING_MPIEXEC, "--oversubscribe", "-np", std::to_string(kRanks), kExe, "train",
                                "--config", SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml", "--resume", "auto"};
  // The tiny MoE of test_checkpoint_mpi (float32 here: the test is about files, not bits).
  for (const std::string kv :
       {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
        "model.kv_lora_rank=16", "model.intermediate_size=64", "model.moe_intermediate_size=16", "train.seq_len=16",
        "train.micro_batch_size=2", "train.global_batch=8", "train.threads=1", "optim.warmup_steps=1",
        "train.router_bias_gamma=0.01", "parallel.bucket_mb=0.01", "parallel.ep=2", "log.progress=off",
        "log.every=1000", "checkpoint.interval=1", "checkpoint.keep=2"})
    a.insert(a.end(), {"--set", kv});
  a.insert(a.end(), {"--set", "train.steps=" + std::to_string(steps), "--set", "log.run_dir=" + dir.string()});
  return a;
}

// Starts the job as the leader of a new process group (so one kill reaches mpirun and every rank
// it forked), output appended to `log`.
pid_t start_job(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    if (!freopen(log.c_str(), "a", stdout) || !freopen(log.c_str(), "a", stderr)) _exit(126);
    for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1"})
      putenv(const_cast<char*>(kv));
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (pid > 0) setpgid(pid, pid);  // also here: the kill may come before the child ran setpgid
  return pid;
}

// Pids of live processes whose command line mentions `needle` (the unique run directory), and
// whether each is a rank (runs the shoestring executable) rather than mpirun.
std::vector<std::pair<pid_t, bool>> job_processes(const std::string& needle) {
  std::vector<std::pair<pid_t, bool>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (cmd.find(needle) == std::string::npos) continue;
    std::ifstream st(e.path() / "stat");
    std::string pid_s, comm, state;
    st >> pid_s >> comm >> state;
    if (state == "Z") continue;  // exited, waiting to be reaped by its parent
    out.emplace_back(pid_t(std::stol(name)), cmd.rfind(kExe, 0) == 0);
  }
  return out;
}

// Waits for `pid` (our child) up to `limit`; true when it exited.
bool wait_for(pid_t pid, std::chrono::seconds limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A save in progress (or one killed): a step_N.tmp-PID directory.
bool has_temporary(const fs::path& root) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (const std::string n = e.path().filename().string(); n.rfind("step_", 0) == 0 && n.find(".tmp-") != std::string::npos)
      return true;
  return false;
}

std::vector<std::pair<int64_t, fs::path>> step_dirs(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step_", 0) != 0 || n.find(".tmp-") != std::string::npos) continue;
    out.emplace_back(std::stoll(n.substr(5)), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(CheckpointKillMpi, KillNineAtRandomMomentsLeavesOnlyVerifiableCheckpoints) {
  const fs::path dir = shoestring::testing::fresh_dir("shoestring_ckkill", "np" + std::to_string(kRanks));
  const fs::path log = dir.string() + ".log";
  fs::remove(log);
  const std::string root = (dir / "checkpoints").string();
  std::mt19937 rng(11);
  int64_t newest = -1;
  int kills = 0, rank_kills = 0, mid_save = 0;
  const auto t0 = Clock::now();
  while (kills < 8 && Clock::now() - t0 < std::chrono::seconds(60)) {
    const pid_t job = start_job(train_argv(dir, 100000), log);
    ASSERT_GT(job, 0);
    // Startup (mpirun, LibTorch, the resume) takes seconds and varies with the machine's load:
    // wait for this run's first new checkpoint (it has resumed), then 0-0.5 s more.
    const auto started = Clock::now();
    while (Clock::now() - started < std::chrono::seconds(60)) {
      const auto s = step_dirs(root);
      if (!s.empty() && s.back().first > newest) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 500)(rng)));
    const bool one_rank = kills % 2 == 1;
    std::vector<pid_t> ranks;  // found before aiming: scanning /proc takes milliseconds
    if (one_rank)
      for (const auto& [pid, is_rank] : job_processes(dir.string()))
        if (is_rank) ranks.push_back(pid);
    // Then aim inside a save: a save of the tiny model takes milliseconds of a step's tens, so
    // wait for the next step_N.tmp- directory and kill 0-3 ms after it appeared (during the rank
    // files, the manifest, the rename, or just after).
    const auto aim = Clock::now();
    while (Clock::now() - aim < std::chrono::seconds(5) && !has_temporary(root))
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3000)(rng)));
    int status = 0;
    if (waitpid(job, &status, WNOHANG) == job) {  // each run resumes from the newest: that must work
      ADD_FAILURE() << "the job ended by itself before the kill; see " << log;
      break;
    }
    if (one_rank) {
      if (!ranks.empty()) {
        kill(ranks[std::uniform_int_distribution<size_t>(0, ranks.size() - 1)(rng)], SIGKILL);
        ++rank_kills;
        // mpirun notices the lost rank and ends the job; then the group is killed anyway.
        EXPECT_TRUE(wait_for(job, std::chrono::seconds(30))) << "mpirun did not end the job after a rank died";
      }
    }
    kill(-job, SIGKILL);
    wait_for(job, std::chrono::seconds(10));
    ++kills;
    // No orphans: every process of the job is gone (give the kernel a moment to reap them).
    std::vector<std::pair<pid_t, bool>> left;
    for (int i = 0; i < 100 && !(left = job_processes(dir.string())).empty(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(left.empty()) << left.size() << " process(es) of the killed job still run, e.g. pid " << left[0].first;
    for (const auto& [pid, is_rank] : left) kill(pid, SIGKILL);

    // Every step_N/ verifies; temporaries (step_N.tmp-PID) may be left by the killed save. Each
    // run's first save removed older ones, so one found now means this kill interrupted a save.
    mid_save += has_temporary(root);
    const auto steps = step_dirs(root);
    for (const auto& [step, path] : steps) {
      const auto v = shoestring::testing::run_shoestring("ckpt verify " + path.string());
      EXPECT_EQ(v.code, 0) << "after kill " << kills << ": " << v.output;
    }
    if (!steps.empty()) {
      EXPECT_GE(steps.back().first, newest) << "the newest checkpoint went back";
      newest = steps.back().first;
    }
  }
  std::printf("%d kills (%d of one rank, %d inside a save) in %.1f s; newest checkpoint step %lld\n", kills,
              rank_kills, mid_save, std::chrono::duration<double>(Clock::now() - t0).count(),
              static_cast<long long>(newest));
  ASSERT_GT(newest, 0) << "no checkpoint was ever completed: the kills came too early";
  EXPECT_GT(rank_kills, 0);

  // Resume from the newest and finish three more steps.
  std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1";
  for (const auto& a : train_argv(dir, newest + 3)) cmd += " '" + a + "'";
  const auto resumed = shoestring::testing::run_command(cmd);
  EXPECT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed  from " + root + "/step_" ), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("(step " + std::to_string(newest) + ","), std::string::npos) << resumed.output;
  const auto final_dirs = step_dirs(root);
  ASSERT_FALSE(final_dirs.empty());
  EXPECT_EQ(final_dirs.back().first, newest + 3);
  EXPECT_EQ(shoestring::testing::run_shoestring("ckpt verify " + final_dirs.back().second.string()).code, 0);
  if (!HasFailure()) {
    fs::remove_all(dir);
    fs::remove(log);
  }
}
