// The batch script of `shoestring launch slurm`, run for real on this machine with stand-ins for
// sbatch, srun and scontrol on PATH: the stand-ins record their arguments; srun starts its tasks
// with mpirun (one task: directly) and can play Slurm's --signal, sending USR1 when the run reaches
// a given step. One job trains to the end; one is preempted, requeued, and resumes to the end.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/run_cli.h"
#include "tests/run_files.h"

namespace fs = std::filesystem;
using shoestring::testing::CliResult;

namespace {

// sbatch: records, then runs the script at once (the real one queues it and returns).
constexpr const char* kSbatch = R"(#!/bin/bash
printf '%s\n' "$*" >> "$STUB_LOG/sbatch.args"
exec bash "$1"
)";

// srun: records; skips its own options (the script gives them all as --opt=value); runs the
// command on SLURM_NTASKS ranks. STUB_USR1_AT_STEP=S: USR1 once metrics.jsonl has step S, as
// slurmd does for --signal=USR1@T (to mpirun, which passes it on to every rank). STUB_EXIT=C:
// report C whatever the tasks did (137: a task killed); STUB_RUN=0: run nothing.
constexpr const char* kSrun = R"(#!/bin/bash
printf '%s\n' "$*" >> "$STUB_LOG/srun.args"
while [[ ${1:-} == -* ]]; do shift; done
run_dir=
for a in "$@"; do [[ $a == log.run_dir=* ]] && run_dir=${a#log.run_dir=}; done
if ((${SLURM_NTASKS:-1} > 1)); then
  # mpirun would take SLURM_* for an allocation to launch into: hide them from it, not the ranks.
  cmd=(env -u SLURM_JOB_ID -u SLURM_NTASKS mpirun --oversubscribe -np "$SLURM_NTASKS" -x "SLURM_JOB_ID=$SLURM_JOB_ID" "$@")
else
  cmd=("$@")
fi
if [[ ${STUB_RUN:-1} == 0 ]]; then
  rc=0
elif [[ -z ${STUB_USR1_AT_STEP:-} ]]; then
  "${cmd[@]}"
  rc=$?
else
  "${cmd[@]}" &
  pid=$!
  until grep -qs "\"step\":$STUB_USR1_AT_STEP," "$run_dir/metrics.jsonl" || ! kill -0 "$pid" 2> /dev/null; do sleep 0.05; done
  kill -USR1 "$pid"
  wait "$pid"
  rc=$?
fi
exit "${STUB_EXIT:-$rc}"
)";

constexpr const char* kScontrol = R"(#!/bin/bash
printf '%s\n' "$*" >> "$STUB_LOG/scontrol.args"
)";

struct Stubs {
  fs::path root, bin, log;
  explicit Stubs(const std::string& name) : root(shoestring::testing::fresh_dir("shoestring_slurm_job", name)) {
    bin = root / "bin";
    log = root / "log";
    fs::create_directories(bin);
    fs::create_directories(log);
    for (const auto& [file, text] : {std::pair{"sbatch", kSbatch}, {"srun", kSrun}, {"scontrol", kScontrol}}) {
      std::ofstream(bin / file) << text;
      fs::permissions(bin / file, fs::perms::owner_all);
    }
  }
  ~Stubs() { fs::remove_all(root); }
  std::vector<std::string> calls(const std::string& tool) const {
    std::ifstream in(log / (tool + ".args"));
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  // The printed `sbatch DIR/job.sbatch`, run as a Slurm job would be.
  CliResult submit(const std::string& sbatch_line, int ntasks, const std::string& env) const {
    return shoestring::testing::run_command(
        "env PATH=" + bin.string() + ":$PATH STUB_LOG=" + log.string() + " SLURM_JOB_ID=4242 SLURM_NTASKS=" +
        std::to_string(ntasks) +
        " OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_SOCKET_IFNAME=lo " + env + " " + sbatch_line);
  }
};

std::string tiny(int steps) {
  return " --config configs/tiny.yaml --set data.source=synthetic --set data.eval_interval=0 "
         "--set train.micro_batch_size=2 --set train.seq_len=16 --set train.threads=1 --set log.progress=off "
         "--set checkpoint.interval=0 --set train.steps=" + std::to_string(steps);
}

// `shoestring launch slurm ...`: the sbatch line it printed.
std::string generate(const std::string& args) {
  const CliResult r = shoestring::testing::run_shoestring("launch slurm" + args);
  EXPECT_EQ(r.code, 0) << r.output;
  std::smatch m;
  if (!std::regex_search(r.output, m, std::regex("\n(sbatch \\S+/job.sbatch)\n$"))) {
    ADD_FAILURE() << r.output;
    return "false";
  }
  return m[1].str();
}

fs::path run_dir_of(const std::string& sbatch_line) { return fs::path(sbatch_line.substr(7)).parent_path(); }

int64_t last_step(const fs::path& run_dir) {
  const auto lines = shoestring::testing::deterministic_metrics(run_dir);
  std::smatch m;
  if (lines.empty() || !std::regex_search(lines.back(), m, std::regex("^\\{\"step\":(\\d+),"))) return -1;
  return std::stoll(m[1]);
}

TEST(SlurmJob, OneTaskTrainsToTheEndAndPrintsItsEnvironment) {
  const Stubs stubs("one");
  const std::string sbatch =
      generate(tiny(3) + " --nodes 1 --gpus-per-node 1 --time 00:10:00 --cpus-per-task 1 --out " + (stubs.root / "runs").string());
  const CliResult r = stubs.submit(sbatch, 1, "");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(last_step(run_dir_of(sbatch)), 3) << r.output;
  EXPECT_NE(r.output.find("  env      NCCL_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 SLURM_JOB_ID=4242"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("  env NCCL_SOCKET_IFNAME=lo"), std::string::npos) << r.output;  // the script's own listing
  ASSERT_EQ(stubs.calls("srun").size(), 1u);
  EXPECT_NE(stubs.calls("srun")[0].find("--kill-on-bad-exit=1 --cpus-per-task=1 "), std::string::npos);
  EXPECT_TRUE(stubs.calls("scontrol").empty());
}

// --nodes 1 --gpus-per-node 2: two ranks through mpirun. USR1 at step 3 -> checkpoint, exit 42,
// `scontrol requeue 4242`; the script's second start resumes in the same run dir and finishes.
TEST(SlurmJob, PreemptedJobRequeuesAndResumesToTheEnd) {
  const Stubs stubs("preempt");
  // Enough steps that the stub's signal (it polls metrics.jsonl every 50 ms) lands mid-run even
  // when steps take a millisecond or two.
  constexpr int kSteps = 300;
  const std::string sbatch = generate(tiny(kSteps) + " --nodes 1 --gpus-per-node 2 --time 00:10:00 --cpus-per-task 1 --out " +
                                      (stubs.root / "runs").string());
  const fs::path run_dir = run_dir_of(sbatch);

  const CliResult first = stubs.submit(sbatch, 2, "STUB_USR1_AT_STEP=3");
  ASSERT_EQ(first.code, 42) << first.output;
  EXPECT_NE(first.output.find("parallel dp 2"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("on a signal; resume with --resume auto"), std::string::npos) << first.output;
  EXPECT_EQ(stubs.calls("scontrol"), std::vector<std::string>{"requeue 4242"});
  const int64_t stopped = last_step(run_dir);
  EXPECT_GE(stopped, 3);
  EXPECT_LT(stopped, kSteps);
  EXPECT_TRUE(fs::exists(run_dir / "checkpoints" / "latest"));

  const CliResult second = stubs.submit(sbatch, 2, "SLURM_RESTART_COUNT=1");
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("(restart 1)"), std::string::npos) << second.output;
  EXPECT_EQ(last_step(run_dir), kSteps) << second.output;
  // One line per step over both starts: the second continued where the first stopped.
  EXPECT_EQ(shoestring::testing::deterministic_metrics(run_dir).size(), size_t(kSteps));
  EXPECT_EQ(stubs.calls("scontrol").size(), 1u);  // finishing does not requeue
  const auto sruns = stubs.calls("srun");
  ASSERT_EQ(sruns.size(), 2u);
  for (const auto& call : sruns) {
    EXPECT_NE(call.find("train --config " + (run_dir / "config.yaml").string() + " --set log.run_dir=" + run_dir.string() +
                        " --resume auto"),
              std::string::npos)
        << call;
  }
}

// srun reports a task killed by a signal (137) over the others' 42, as when --kill-on-bad-exit
// kills the slower ranks: a new checkpoint makes that a requeue too; no new checkpoint, no requeue.
TEST(SlurmJob, AKilledStepRequeuesOnlyAfterANewCheckpoint) {
  const Stubs stubs("killed");
  const std::string sbatch = generate(tiny(2000) + " --nodes 1 --gpus-per-node 1 --time 00:10:00 --cpus-per-task 1 --out " +
                                      (stubs.root / "runs").string());
  const CliResult nothing = stubs.submit(sbatch, 1, "STUB_RUN=0 STUB_EXIT=137");
  EXPECT_EQ(nothing.code, 137) << nothing.output;
  EXPECT_TRUE(stubs.calls("scontrol").empty()) << nothing.output;

  const CliResult saved = stubs.submit(sbatch, 1, "STUB_USR1_AT_STEP=2 STUB_EXIT=137");
  EXPECT_EQ(saved.code, 137) << saved.output;
  EXPECT_NE(saved.output.find("on a signal; resume with --resume auto"), std::string::npos) << saved.output;
  EXPECT_EQ(stubs.calls("scontrol"), std::vector<std::string>{"requeue 4242"}) << saved.output;

  // The same checkpoint is no reason to requeue a second time.
  const CliResult again = stubs.submit(sbatch, 1, "STUB_RUN=0 STUB_EXIT=137");
  EXPECT_EQ(again.code, 137) << again.output;
  EXPECT_EQ(stubs.calls("scontrol").size(), 1u) << again.output;
}

}  // namespace
