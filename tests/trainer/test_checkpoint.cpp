// Checkpoints in one process: exact resume (bit-identical metrics after a SIGTERM-stopped run is
// resumed), the on-disk format and its atomicity/pruning, corrupt checkpoints being detected and
// skipped, and the CLI (--resume, exit code 42, ckpt inspect/verify).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <random>
#include <thread>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/run_files.h"
#include "tests/trainer/ckpt_test_util.h"
#include "tests/run_cli.h"
#include "trainer/checkpoint/export_safetensors.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/config_loader.h"
#include "trainer/preemption.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;

using namespace shoestring::ckpt_test;

TEST(Checkpoint, SigtermThenResumeIsBitIdenticalToAnUninterruptedRun) {
  const fs::path a = fresh_dir("a"), b = fresh_dir("b"), c = fresh_dir("c");
  const TrainSummary sa = train(tiny_moe(a, 6, 3), parallel::World{});
  ASSERT_EQ(sa.steps, 6);
  EXPECT_EQ(sa.last_checkpoint, ckpt_dir(a, 6));

  const TrainSummary sb = train_until_sigterm(tiny_moe(b, 6, 0), 3);  // interval 0: only the signal saves
  EXPECT_TRUE(sb.preempted);
  EXPECT_EQ(sb.steps, 3);
  ASSERT_TRUE(fs::exists(ckpt_dir(b, 3) + "/manifest.json"));
  TrainOptions resume;
  resume.resume = "auto";
  const TrainSummary sb2 = train(tiny_moe(b, 6, 0), parallel::World{}, resume);
  EXPECT_FALSE(sb2.preempted);
  EXPECT_EQ(sb2.resumed_from_step, 3);
  EXPECT_EQ(sb2.losses.size(), 3u);
  const auto ma = deterministic_metrics(a), mb = deterministic_metrics(b);
  ASSERT_EQ(ma.size(), 6u);
  EXPECT_EQ(ma, mb);  // 17-digit text: equal bits, steps 1-3 kept and 4-6 continued

  // From A's own step-3 checkpoint into a new run directory: the same last three losses.
  resume.resume = ckpt_dir(a, 3);
  const TrainSummary sc = train(tiny_moe(c, 6, 0), parallel::World{}, resume);
  ASSERT_EQ(sc.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(sc.losses[i], sa.losses[3 + i]) << "step " << 4 + i;
  for (const auto& d : {a, b, c}) fs::remove_all(d);
}

TEST(Checkpoint, ResumingAFinishedRunSaysThereIsNothingToRun) {
  using shoestring::testing::run_shoestring;
  const fs::path dir = fresh_dir("finished");
  std::string args = "train --config configs/tiny-moe.yaml";
  for (const auto& kv : tiny_moe_sets(dir, 2, 2)) args += " --set " + kv;
  ASSERT_EQ(run_shoestring(args).code, 0);
  const auto again = run_shoestring(args + " --resume auto");
  EXPECT_EQ(again.code, 0) << again.output;
  EXPECT_NE(again.output.find("done: no steps to run (resumed at step 2 of 2)"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("0.0000 -> 0.0000"), std::string::npos) << again.output;
  fs::remove_all(dir);
}

TEST(Checkpoint, FormatLatestPointerAndPruning) {
  const fs::path a = fresh_dir("fmt");
  train(tiny_moe(a, 6, 2, /*keep=*/2), parallel::World{});
  const fs::path root = a / "checkpoints";
  // keep 2: step 2 deleted once step 6 was complete; no temporary directory left.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step_0000004", "step_0000006"}));
  std::ifstream latest(root / "latest");
  std::string pointed;
  latest >> pointed;
  EXPECT_EQ(pointed, "step_0000006");

  const ckpt::Manifest m = ckpt::read_manifest(ckpt_dir(a, 6));
  EXPECT_EQ(m.step, 6);
  EXPECT_EQ(m.adam_steps, 6);
  EXPECT_EQ(m.layout.dp, 1);
  EXPECT_EQ(m.loader_state, "seed=1234 epoch=0 position=24 samples=24");
  ASSERT_EQ(m.files.size(), 1u);
  EXPECT_EQ(m.files[0].sha256.size(), 64u);
  int biases = 0;
  const ckpt::TensorEntry* w1 = nullptr;
  for (const auto& t : m.tensors) {
    if (t.name.rfind("buffer/", 0) == 0 && t.name.find("router.bias") != std::string::npos) ++biases;
    if (t.name.rfind("param/", 0) == 0 && t.name.size() > 6 && t.name.compare(t.name.size() - 6, 6, "moe.w1") == 0) w1 = &t;
  }
  EXPECT_EQ(biases, 3);  // 2 MoE blocks + the MTP module's
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->shape[0], 8);  // the global [n_experts, ...] tensor
  EXPECT_NE(m.find("adam_m/" + w1->name.substr(6)), nullptr);
  EXPECT_NE(m.config_yaml.find("checkpoint:"), std::string::npos);
  EXPECT_TRUE(ckpt::verify(ckpt_dir(a, 6)).empty());

  // Resumed from the older step 4 with keep 1: the new step 5 stays, though step 6 is newer.
  TrainOptions o;
  o.resume = ckpt_dir(a, 4);
  train(tiny_moe(a, 5, 1, /*keep=*/1), parallel::World{}, o);
  names.clear();
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step_0000005"}));
  fs::remove_all(a);
}

TEST(Checkpoint, KeepEveryKeepsMilestonesForever) {
  // Every step saved, keep 2, keep_every 3: the newest two (7, 8) roll; 3 and 6 stay forever and
  // do not count towards the two.
  const fs::path a = fresh_dir("keep_every");
  Config c = tiny_moe(a, 8, 1, /*keep=*/2);
  c.checkpoint.keep_every = 3;
  train(c, parallel::World{});
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(a / "checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step_0000003", "step_0000006", "step_0000007", "step_0000008"}));
  fs::remove_all(a);
}

TEST(Checkpoint, CorruptCheckpointsAreSkippedWithAReasonAndExplicitOnesRefused) {
  const fs::path a = fresh_dir("corrupt");
  train(tiny_moe(a, 6, 2, /*keep=*/0), parallel::World{});
  const std::string root = (a / "checkpoints").string();
  // A half-written save of a later step: no step_N name, so never a candidate.
  fs::create_directories(root + "/step_0000008.tmp-999");
  fs::copy_file(ckpt_dir(a, 6) + "/manifest.json", root + "/step_0000008.tmp-999/manifest.json");
  std::vector<std::string> warnings;
  EXPECT_EQ(ckpt::choose_checkpoint("auto", root, warnings), ckpt_dir(a, 6));
  EXPECT_TRUE(warnings.empty());

  // One flipped byte in step 6: same size, different SHA-256.
  const std::string f6 = ckpt_dir(a, 6) + "/rank_00000.h5";
  {
    std::fstream f(f6, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4000);
    char ch = 0;
    f.read(&ch, 1);
    ch = char(ch ^ 0x5a);
    f.seekp(4000);
    f.write(&ch, 1);
  }
  auto problems = ckpt::verify(ckpt_dir(a, 6));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("SHA-256"), std::string::npos) << problems[0];
  // Shared verification: the file's hash is rank 0's share of 2 (index 0), nothing is rank 1's.
  EXPECT_EQ(ckpt::verify_share(ckpt_dir(a, 6), 0, 2), problems);
  EXPECT_TRUE(ckpt::verify_share(ckpt_dir(a, 6), 1, 2).empty());
  // Training with --resume auto falls back to step 4 (checkpoints read from another directory).
  const fs::path other = fresh_dir("corrupt_other");
  Config again = tiny_moe(other, 6, 0);
  again.checkpoint.dir = root;
  TrainOptions au;
  au.resume = "auto";
  EXPECT_EQ(train(again, parallel::World{}, au).resumed_from_step, 4);
  fs::remove_all(other);
  // Truncated file in step 4.
  fs::resize_file(ckpt_dir(a, 4) + "/rank_00000.h5", 1000);
  EXPECT_NE(ckpt::verify(ckpt_dir(a, 4))[0].find("truncated"), std::string::npos);
  warnings.clear();
  EXPECT_EQ(ckpt::choose_checkpoint("auto", root, warnings), ckpt_dir(a, 2));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("step_0000006"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("step_0000004"), std::string::npos) << warnings[1];
  // Explicit paths: one clean error each.
  EXPECT_THROW(ckpt::choose_checkpoint(ckpt_dir(a, 6), root, warnings), ckpt::CheckpointError);
  TrainOptions o;
  o.resume = ckpt_dir(a, 4);
  EXPECT_THROW(train(tiny_moe(a, 6, 2), parallel::World{}, o), ckpt::CheckpointError);
  // Missing manifest in step 2: nothing valid is left, which is an error, not a silent fresh start.
  fs::remove(ckpt_dir(a, 2) + "/manifest.json");
  EXPECT_NE(ckpt::verify(ckpt_dir(a, 2))[0].find("missing"), std::string::npos);
  EXPECT_THROW(ckpt::choose_checkpoint("auto", root, warnings), ckpt::CheckpointError);
  // An empty checkpoint directory: auto starts fresh.
  warnings.clear();
  EXPECT_EQ(ckpt::choose_checkpoint("auto", (a / "none").string(), warnings), "");
  fs::remove_all(a);
}

// The rank files are checked against the manifest's SHA-256 before libhdf5 parses them, so a
// corrupt HDF5 file never reaches libhdf5's parser (which has known memory errors on corrupt
// object headers, docs/data.md) on any path that loads weights: the errors below name the
// checksum, whereas the reader alone, unverified, fails inside H5Fopen.
TEST(Checkpoint, ChecksumsAreVerifiedBeforeAnyRankFileIsOpenedAsHdf5) {
  const fs::path a = fresh_dir("verify_first"), b = fresh_dir("verify_first_b");
  train(tiny_moe(a, 2, 2), parallel::World{});
  const std::string step2 = ckpt_dir(a, 2);
  {
    std::fstream f(step2 + "/rank_00000.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.write("NOT-HDF5", 8);  // the superblock signature: H5Fopen cannot open this
  }
  auto names_checksum_not_hdf5 = [](const std::string& what) {
    EXPECT_NE(what.find("SHA-256"), std::string::npos) << what;
    EXPECT_EQ(what.find("HDF5"), std::string::npos) << what;
  };
  TrainOptions o;
  o.resume = step2;
  try {
    train(tiny_moe(b, 4, 0), parallel::World{}, o);
    ADD_FAILURE() << "resumed from a checkpoint with a corrupt rank file";
  } catch (const ckpt::CheckpointError& e) {
    names_checksum_not_hdf5(e.what());
  }
  try {
    ckpt::export_safetensors(step2, (a / "export").string());
    ADD_FAILURE() << "exported a checkpoint with a corrupt rank file";
  } catch (const ckpt::CheckpointError& e) {
    names_checksum_not_hdf5(e.what());
  }
  // The same file read without verification: the failure comes from libhdf5.
  ckpt::CheckpointReader reader(step2);
  const ckpt::TensorEntry* t = nullptr;
  for (const auto& te : reader.manifest().tensors)
    if (!te.pieces.empty() && te.pieces[0].file == "rank_00000.h5") t = &te;
  ASSERT_NE(t, nullptr);
  try {
    reader.read(t->name, t->shape, 0, at::empty({t->numel()}, t->dtype == "float64" ? at::kDouble : at::kFloat));
    ADD_FAILURE() << "read a tensor from a file without an HDF5 signature";
  } catch (const ckpt::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open as HDF5"), std::string::npos) << e.what();
  }
  for (const auto& d : {a, b}) fs::remove_all(d);
}

TEST(Checkpoint, ModelMismatchNamesTheTensor) {
  const fs::path a = fresh_dir("mismatch"), b = fresh_dir("mismatch_b");
  train(tiny_moe(a, 2, 2), parallel::World{});
  Config other = tiny_moe(b, 4, 0);
  other.model.d_model = 48;
  TrainOptions o;
  o.resume = ckpt_dir(a, 2);
  try {
    train(other, parallel::World{}, o);
    ADD_FAILURE() << "a checkpoint of another model loaded";
  } catch (const ckpt::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("has shape"), std::string::npos) << e.what();
  }
  // Refused in its own run directory: the run's config.yaml, which resumes it, stays as it was.
  const std::string before = shoestring::testing::read_file(a / "config.yaml");
  Config same_dir = tiny_moe(a, 4, 0);
  same_dir.model.d_model = 48;
  EXPECT_THROW(train(same_dir, parallel::World{}, o), ckpt::CheckpointError);
  EXPECT_EQ(shoestring::testing::read_file(a / "config.yaml"), before);
  EXPECT_NE(before.find("d_model: 32"), std::string::npos) << before;
  // Another seed would change the sample order: refused, naming the checkpoint and the key.
  Config reseeded = tiny_moe(b, 4, 0);
  reseeded.train.seed = 99;
  try {
    train(reseeded, parallel::World{}, o);
    ADD_FAILURE() << "resumed with another seed";
  } catch (const ckpt::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(ckpt_dir(a, 2) + ": saved with train.seed 1234, this run has train.seed 99"),
              std::string::npos)
        << e.what();
  }
  for (const auto& d : {a, b}) fs::remove_all(d);
}

TEST(Checkpoint, CliSigtermExitCodeResumeAndInspect) {
  using shoestring::testing::run_shoestring;
  const fs::path a = fresh_dir("cli_a"), b = fresh_dir("cli_b");
  auto args = [](const fs::path& dir) {
    std::string s = "train --config configs/tiny-moe.yaml";
    for (const auto& kv : tiny_moe_sets(dir, 4, 0)) s += " --set " + kv;
    return s;
  };
  ASSERT_EQ(run_shoestring(args(a)).code, 0);
  const auto stopped = shoestring::testing::run_command("SHOESTRING_FAULT=rank=0,step=2,mode=sigterm " SHOESTRING_BINARY_DIR
                                            "/bin/shoestring " + args(b));
  EXPECT_EQ(stopped.code, 42) << stopped.output;
  EXPECT_NE(stopped.output.find("[rank 0] stop requested (SIGTERM)"), std::string::npos) << stopped.output;
  ASSERT_TRUE(fs::exists(ckpt_dir(b, 2) + "/manifest.json"));
  const auto resumed = run_shoestring(args(b) + " --resume auto");
  EXPECT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_EQ(deterministic_metrics(a), deterministic_metrics(b));

  const auto inspect = run_shoestring("ckpt inspect " + ckpt_dir(b, 2));
  EXPECT_EQ(inspect.code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("dp 1 ep 1 pp 1 zero1 off"), std::string::npos) << inspect.output;
  EXPECT_NE(inspect.output.find("param/tok_embed"), std::string::npos) << inspect.output;
  EXPECT_EQ(run_shoestring("ckpt verify " + ckpt_dir(b, 2)).code, 0);
  fs::resize_file(ckpt_dir(b, 2) + "/rank_00000.h5", 100);
  const auto bad = run_shoestring("ckpt verify " + ckpt_dir(b, 2));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("rank_00000.h5"), std::string::npos) << bad.output;
  const auto refused = run_shoestring(args(b) + " --resume " + ckpt_dir(b, 2));
  EXPECT_EQ(refused.code, 2) << refused.output;
  EXPECT_EQ(std::count(refused.output.begin(), refused.output.end(), '\n'), 1) << refused.output;
  EXPECT_NE(refused.output.find("checkpoint error:"), std::string::npos) << refused.output;
  for (const auto& d : {a, b}) fs::remove_all(d);
}

TEST(Checkpoint, FirstSignalRequestsAStopSecondExitsAtOnce) {
  {
    PreemptionHandlers h(0);
    EXPECT_EQ(preemption_signal(), 0);
    std::raise(SIGUSR1);
    EXPECT_EQ(preemption_signal(), SIGUSR1);
  }
  EXPECT_EXIT(
      {
        PreemptionHandlers h(0);
        std::raise(SIGTERM);
        std::raise(SIGTERM);
        std::exit(0);
      },
      ::testing::ExitedWithCode(128 + SIGTERM), "\\[rank 0\\] stop requested \\(SIGTERM\\)");
}

// The newest committed checkpoint's step under `checkpoints` (its directory name; a save is
// committed by renaming it there), or -1; tolerant of directories vanishing while it looks.
static int64_t newest_committed_step(const fs::path& checkpoints) {
  int64_t newest = -1;
  std::error_code ec;
  for (fs::directory_iterator it(checkpoints, ec), end; !ec && it != end; it.increment(ec))
    newest = std::max(newest, ckpt::parse_step_dir_name(it->path().filename().string()));
  return newest;
}

// kill -9 at random moments of a run that saves every step (bounded: 8 kills): whatever the
// moment, --resume auto finds a checkpoint that verifies, or none yet, and never a broken one.
// Even rounds kill at a random time after the launch (start-up included); odd rounds wait until the
// run has committed a new checkpoint first, so that progress is made however slow the machine's
// start-up is (CI once saw every kill land before the first save), then kill at a random time after.
TEST(Checkpoint, KillNineAtRandomMomentsNeverLeavesACorruptCheckpointChosen) {
  const fs::path dir = fresh_dir("kill9");
  std::vector<std::string> argv_s = {SHOESTRING_BINARY_DIR "/bin/shoestring", "train", "--config",
                                     SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml", "--resume", "auto"};
  for (const auto& kv : tiny_moe_sets(dir, 400, 1, 2)) argv_s.insert(argv_s.end(), {"--set", kv});
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::mt19937 rng(7);
  int64_t last_step = -1;
  for (int round = 0; round < 8; ++round) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      freopen("/dev/null", "w", stdout);
      freopen("/dev/null", "w", stderr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    int status = 0;
    bool exited = false;
    if (round % 2 == 1) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (newest_committed_step(dir / "checkpoints") <= last_step && std::chrono::steady_clock::now() < deadline)
        if ((exited = waitpid(pid, &status, WNOHANG) == pid)) break;
        else std::this_thread::sleep_for(std::chrono::milliseconds(20));
      EXPECT_GT(newest_committed_step(dir / "checkpoints"), last_step) << "round " << round << ": no new checkpoint in 120 s";
    }
    if (!exited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(
          round % 2 == 1 ? std::uniform_int_distribution<int>(0, 400)(rng) : std::uniform_int_distribution<int>(400, 1600)(rng)));
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    std::vector<std::string> warnings;
    const std::string chosen = ckpt::choose_checkpoint("auto", (dir / "checkpoints").string(), warnings);
    EXPECT_TRUE(warnings.empty()) << warnings.front();  // no complete-looking checkpoint is ever broken
    if (chosen.empty()) continue;
    EXPECT_TRUE(ckpt::verify(chosen).empty());
    const int64_t step = ckpt::read_manifest(chosen).step;
    EXPECT_GE(step, last_step);  // progress is never lost
    last_step = step;
  }
  EXPECT_GT(last_step, 0) << "no checkpoint was ever completed: the kills came too early";
  fs::remove_all(dir);
}

// checkpoint.async: the files are written by a background thread (slowed to 300 ms here, so the
// next steps run while it writes) from a host copy taken at the save. The checkpoints hold exactly
// what synchronous saves hold, the metrics are unchanged, the last save is committed before
// train() returns, and a SIGTERM-stopped run commits its save before exiting.
TEST(Checkpoint, AsyncSavesHoldWhatSyncSavesHold) {
  const fs::path a = fresh_dir("sync"), b = fresh_dir("async"), c = fresh_dir("async_sigterm");
  ::setenv("SHOESTRING_TEST_SAVE_DELAY_MS", "300", 1);
  const TrainSummary sa = train(tiny_moe(a, 6, 2), parallel::World{});
  Config async = tiny_moe(b, 6, 2);
  async.checkpoint.async = true;
  const TrainSummary sb = train(async, parallel::World{});
  // A synchronous save waits for the (slowed) write; the first asynchronous one only for the copy
  // (the later ones also for the previous write, which the 2 steps between saves do not cover).
  ASSERT_EQ(sa.save_blocked_s.size(), 3u);
  ASSERT_EQ(sb.save_blocked_s.size(), 3u);
  for (double s : sa.save_blocked_s) EXPECT_GE(s, 0.3);
  EXPECT_LT(sb.save_blocked_s[0], 0.3);
  EXPECT_EQ(sb.last_checkpoint, ckpt_dir(b, 6));
  EXPECT_EQ(deterministic_metrics(a), deterministic_metrics(b));
  for (int64_t step : {2, 4, 6}) {
    ASSERT_TRUE(ckpt::verify(ckpt_dir(b, step)).empty()) << ckpt_dir(b, step);
    ckpt::CheckpointReader ra(ckpt_dir(a, step)), rb(ckpt_dir(b, step));
    EXPECT_EQ(ra.manifest().loader_state, rb.manifest().loader_state);
    EXPECT_EQ(ra.manifest().adam_steps, rb.manifest().adam_steps);
    ASSERT_EQ(ra.manifest().tensors.size(), rb.manifest().tensors.size());
    for (const auto& t : ra.manifest().tensors) {
      const auto dtype = t.dtype == "float64" ? at::kDouble : at::kFloat;
      at::Tensor x = at::empty({t.numel()}, dtype), y = at::empty({t.numel()}, dtype);
      ra.read(t.name, t.shape, 0, x);
      rb.read(t.name, t.shape, 0, y);
      EXPECT_TRUE(x.equal(y)) << t.name << " at step " << step;
    }
  }
  std::ifstream latest(fs::path(b) / "checkpoints" / "latest");
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "step_0000006");

  Config stopped = tiny_moe(c, 6, 0);
  stopped.checkpoint.async = true;
  const TrainSummary sc = train_until_sigterm(stopped, 3);
  ::unsetenv("SHOESTRING_TEST_SAVE_DELAY_MS");
  EXPECT_TRUE(sc.preempted);
  EXPECT_EQ(sc.last_checkpoint, ckpt_dir(c, 3));
  EXPECT_TRUE(ckpt::verify(ckpt_dir(c, 3)).empty());
  EXPECT_EQ(sa.steps, 6);
  for (const auto& d : {a, b, c}) fs::remove_all(d);
}

// The launcher path: under mpirun (4 ranks, dp 4, ep 2, ZeRO-1) a SIGTERM on rank 3 ends the job
// with exit code 42 and a checkpoint from every rank; resuming on 2 ranks (dp 2, ep 1, no ZeRO-1)
// completes the run, with losses within 1e-12 relative of the uninterrupted 4-rank run (float64;
// the layouts differ only in summation order).
TEST(Checkpoint, MpirunJobExits42AndResumesOnAnotherLayout) {
  const fs::path ref = fresh_dir("mpirun_ref"), dir = fresh_dir("mpirun");
  auto sets = [](const fs::path& d) {
    std::string s = " --config configs/tiny-moe.yaml";
    for (const auto& kv : tiny_moe_sets(d, 5, 0)) s += " --set " + kv;
    return s + " --set train.global_batch=8 --set train.micro_batch_size=2 --set train.precision=fp64";
  };
  auto mpirun = [](int np) {
    return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " SHOESTRING_MPIEXEC
           " --oversubscribe -np " + std::to_string(np) + " ";
  };
  const std::string exe = SHOESTRING_BINARY_DIR "/bin/shoestring train";
  const std::string layout4 = " --set parallel.ep=2 --set parallel.zero1=true";
  const auto whole = shoestring::testing::run_command(mpirun(4) + exe + sets(ref) + layout4);
  ASSERT_EQ(whole.code, 0) << whole.output;
  const auto stopped = shoestring::testing::run_command(
      mpirun(4) + "-x SHOESTRING_FAULT=rank=3,step=2,mode=sigterm " + exe + sets(dir) + layout4 +
      " --set checkpoint.async=true");
  EXPECT_EQ(stopped.code, 42) << stopped.output;
  const ckpt::Manifest m = ckpt::read_manifest(ckpt_dir(dir, 2));
  EXPECT_EQ(m.files.size(), 4u);
  EXPECT_EQ(m.layout.ep, 2);
  EXPECT_TRUE(m.layout.zero1);
  const auto resumed = shoestring::testing::run_command(mpirun(2) + exe + sets(dir) + " --resume auto");
  EXPECT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("saved under dp 4 ep 2 pp 1 zero1 on"), std::string::npos) << resumed.output;
  auto losses = [](const fs::path& d) {
    std::vector<double> out;
    const std::regex loss(R"("loss":([0-9.eE+-]+))");
    for (const auto& line : deterministic_metrics(d)) {
      std::smatch mm;
      if (std::regex_search(line, mm, loss)) out.push_back(std::stod(mm[1]));
    }
    return out;
  };
  const std::vector<double> a = losses(ref), b = losses(dir);
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(a[i], b[i]);  // before the stop: the same layout
  for (size_t i = 2; i < 5; ++i) EXPECT_NEAR(b[i], a[i], 1e-12 * a[i]) << "step " << i + 1;
  for (const auto& d : {ref, dir}) fs::remove_all(d);
}

// ckpt convert: a one-process checkpoint re-saved under (dp 2, ep 2, ZeRO-1) by a 2-rank job, then
// back to one process. Every tensor reads back bit-identical from both, the layouts are the asked
// ones (2 rank files with ZeRO-1 slices), and the loader state and step are carried over.
TEST(Checkpoint, ConvertReshardsOfflineAndBack) {
  const fs::path dir = fresh_dir("convert");
  const TrainSummary s = train(tiny_moe(dir, 2, 2), parallel::World{});
  const std::string src = s.last_checkpoint;
  const std::string mpirun = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " SHOESTRING_MPIEXEC
                             " --oversubscribe -np 2 " SHOESTRING_BINARY_DIR "/bin/shoestring ckpt convert ";
  const auto two = shoestring::testing::run_command(mpirun + src + " --out " + (dir / "two").string() +
                                                    " --set parallel.ep=2 --set parallel.zero1=true");
  ASSERT_EQ(two.code, 0) << two.output;
  const std::string mid = (dir / "two" / "step_0000002").string();
  EXPECT_NE(two.output.find("-> " + mid + " (dp 2 ep 2 pp 1 zero1 on (2 ranks))"), std::string::npos) << two.output;
  const auto one = shoestring::testing::run_shoestring("ckpt convert " + mid + " --out " + (dir / "one").string() +
                                                       " --set parallel.ep=1 --set parallel.zero1=false");
  ASSERT_EQ(one.code, 0) << one.output;
  const std::string back = (dir / "one" / "step_0000002").string();
  ckpt::CheckpointReader a(src), b(mid), c(back);
  EXPECT_EQ(b.manifest().files.size(), 2u);
  EXPECT_EQ(b.manifest().layout.ep, 2);
  EXPECT_TRUE(b.manifest().layout.zero1);
  EXPECT_EQ(c.manifest().layout.to_string(), a.manifest().layout.to_string());
  for (const auto* r : {&b, &c}) {
    EXPECT_EQ(r->manifest().step, 2);
    EXPECT_EQ(r->manifest().loader_state, a.manifest().loader_state);
    EXPECT_EQ(r->manifest().adam_steps, a.manifest().adam_steps);
    EXPECT_TRUE(ckpt::verify(r->dir()).empty()) << r->dir();
  }
  for (const auto& t : a.manifest().tensors) {
    const auto dtype = t.dtype == "float64" ? at::kDouble : at::kFloat;
    at::Tensor x = at::empty({t.numel()}, dtype), y = at::empty({t.numel()}, dtype), z = at::empty({t.numel()}, dtype);
    a.read(t.name, t.shape, 0, x);
    b.read(t.name, t.shape, 0, y);
    c.read(t.name, t.shape, 0, z);
    EXPECT_TRUE(x.equal(y) && x.equal(z)) << t.name;
  }
  // The target exists, or the layout is impossible: one line, exit 2, nothing written.
  const auto again = shoestring::testing::run_shoestring("ckpt convert " + mid + " --out " + (dir / "one").string());
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.output.find(back + " already exists"), std::string::npos) << again.output;
  const auto bad = shoestring::testing::run_shoestring("ckpt convert " + src + " --out " + (dir / "bad").string() +
                                                       " --set parallel.ep=3");
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_NE(bad.output.find("parallel.ep"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(dir / "bad" / "step_0000002"));
  fs::remove_all(dir);
}

TEST(Checkpoint, AnUncreatableCheckpointDirectoryStopsTheRunBeforeItsFirstStep) {
  const fs::path dir = fresh_dir("unwritable");
  Config c = tiny_moe(dir, 2, 1);
  c.checkpoint.dir = "/dev/null/checkpoints";  // below a file: cannot be created, even as root
  try {
    train(c, parallel::World{});
    ADD_FAILURE() << "saving into " << c.checkpoint.dir << " succeeded";
  } catch (const ckpt::CheckpointError& e) {
    ADD_FAILURE() << "a filesystem failure is a runtime error (exit 1), not a checkpoint error: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/null/checkpoints: cannot create the checkpoint directory (checkpoint.dir)"),
              std::string::npos)
        << e.what();
  }
  // Found at start, not at the first save: no step was trained (or logged) for nothing.
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));
  fs::remove_all(dir);
}
