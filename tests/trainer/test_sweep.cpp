// Sweeps (docs/sweeps.md): expansion of grids, random samples and seeds; errors naming the sweep
// file and key; and a 4-run sweep of the real executable that is interrupted mid-way, resumed
// without retraining finished runs, reported and turned into a Slurm array script.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "tests/run_cli.h"
#include "tests/run_files.h"
#include "trainer/config_loader.h"
#include "trainer/sweep/sweep_file.h"
#include "trainer/sweep/sweep_report.h"
#include "trainer/sweep/sweep_state.h"

namespace fs = std::filesystem;
using namespace shoestring;
using namespace shoestring::sweep;
using shoestring::testing::run_shoestring;

namespace {

const std::string kSource = SHOESTRING_SOURCE_DIR;

SweepFile parse(const std::string& yaml) { return parse_sweep_text(yaml, "test-sweep.yaml", kSource); }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool is_png(const fs::path& p) { return slurp(p).rfind("\x89PNG\r\n\x1a\n", 0) == 0; }

std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(SweepFile, GridTimesSeedsInOrderWithStableNames) {
  const std::string yaml =
      "base: configs/tiny.yaml\n"
      "grid:\n"
      "  optim.lr: [0.001, 0.003]\n"
      "  model.d_model: [32, 64, 96]\n"
      "seeds: [1, 2]\n";
  const SweepFile s = parse(yaml);
  EXPECT_EQ(s.name, "test-sweep");
  EXPECT_EQ(s.dir, "runs/sweeps/test-sweep");
  EXPECT_EQ(s.base, kSource + "/configs/tiny.yaml");  // found beside the sweep file first
  const auto runs = expand(s);
  ASSERT_EQ(runs.size(), 12u);
  EXPECT_EQ(runs[0].name, "r000-lr=0.001-d_model=32-seed=1");
  EXPECT_EQ(runs[1].name, "r001-lr=0.001-d_model=32-seed=2");  // seeds vary fastest
  EXPECT_EQ(runs[2].name, "r002-lr=0.001-d_model=64-seed=1");
  EXPECT_EQ(runs[11].name, "r011-lr=0.003-d_model=96-seed=2");
  std::set<std::string> names;
  for (const auto& r : runs) names.insert(r.name);
  EXPECT_EQ(names.size(), 12u);
  const auto again = expand(parse(yaml));
  for (size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].name, again[i].name);
  const Config c = resolve_run(s, runs[11]);
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.003);
  EXPECT_EQ(c.model.d_model, 96);
  EXPECT_EQ(c.train.seed, 2);
  EXPECT_EQ(c.log.run_dir, "runs/sweeps/test-sweep/" + runs[11].name);
  // tiny.yaml has no periodic checkpoints: the sweep adds them so interrupted runs lose little.
  EXPECT_EQ(c.checkpoint.interval, sweep_checkpoint_interval(c.train.steps));
  EXPECT_EQ(c.checkpoint.interval, 30);
}

TEST(SweepFile, RandomSamplesAreDeterministicAndWithinBounds) {
  auto yaml = [](int seed) {
    return "base: configs/tiny.yaml\nname: rnd\nset:\n  optim.min_lr: 1.0e-5\nrandom:\n  samples: 20\n  seed: " + std::to_string(seed) +
           "\n  axes:\n    optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}\n    optim.weight_decay: {uniform: [0.0, 0.2]}\n"
           "    train.micro_batch_size: {choice: [2, 4, 8]}\n    optim.warmup_steps: {uniform: [5, 10]}\n";
  };
  const auto a = expand(parse(yaml(7))), b = expand(parse(yaml(7))), c = expand(parse(yaml(8)));
  ASSERT_EQ(a.size(), 20u);
  std::set<std::string> lrs, batches;
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    differ += a[i].name != c[i].name;
    ASSERT_EQ(a[i].overrides.size(), 4u);
    const double lr = std::stod(a[i].overrides[0].second), wd = std::stod(a[i].overrides[1].second);
    EXPECT_GE(lr, 1e-4);
    EXPECT_LE(lr, 1e-2);
    EXPECT_GE(wd, 0.0);
    EXPECT_LE(wd, 0.2);
    batches.insert(a[i].overrides[2].second);
    EXPECT_TRUE(a[i].overrides[2].second == "2" || a[i].overrides[2].second == "4" || a[i].overrides[2].second == "8");
    const std::string& warmup = a[i].overrides[3].second;  // integer bounds: integer draws
    EXPECT_EQ(warmup.find('.'), std::string::npos) << warmup;
    EXPECT_GE(std::stoi(warmup), 5);
    EXPECT_LE(std::stoi(warmup), 10);
    lrs.insert(a[i].overrides[0].second);
    EXPECT_NO_THROW(resolve_run(parse(yaml(7)), a[i])) << a[i].name;
  }
  EXPECT_GT(differ, 15);           // another seed, other draws
  EXPECT_GT(lrs.size(), 15u);      // not one value repeated
  EXPECT_EQ(batches.size(), 3u);   // every choice drawn in 20 samples
  // Log-uniform: about half the draws below the geometric middle (1e-3); a uniform draw would put
  // ~90% above it.
  int below = 0;
  for (const auto& r : a) below += std::stod(r.overrides[0].second) < 1e-3;
  EXPECT_GE(below, 4);
  EXPECT_LE(below, 16);
}

TEST(SweepFile, ErrorsNameTheSweepFileAndKey) {
  std::string e = error_of("base: configs/tiny.yaml\ngrid:\n  optim.lrr: [0.1, 0.2]\n");
  EXPECT_NE(e.find("test-sweep.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("optim.lrr"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean optim.lr"), std::string::npos) << e;
  e = error_of("base: configs/tiny.yaml\ngrid:\n  optim.lr: []\n");
  EXPECT_NE(e.find("test-sweep.yaml:3: optim.lr: empty axis"), std::string::npos) << e;
  e = error_of("base: configs/tiny.yaml\ngrid:\n  optim.lr: [0.1, abc]\n");  // the second value: at resolve
  EXPECT_EQ(e, "(no error)");
  const SweepFile s = parse("base: configs/tiny.yaml\ngrid:\n  optim.lr: [0.1, abc]\n");
  try {
    resolve_run(s, expand(s)[1]);
    ADD_FAILURE() << "a bad value resolved";
  } catch (const ConfigError& ex) {
    EXPECT_NE(std::string(ex.what()).find("test-sweep.yaml:3: optim.lr: expected"), std::string::npos) << ex.what();
  }
  e = error_of("base: configs/tiny.yaml\nset:\n  train.stepz: 3\n");
  EXPECT_NE(e.find("test-sweep.yaml:3: train.stepz: unknown key"), std::string::npos) << e;
  e = error_of("base: configs/tiny.yaml\ngrid: [1, 2\n");
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;
  e = error_of("grid:\n  optim.lr: [0.1]\n");
  EXPECT_NE(e.find("base: missing"), std::string::npos) << e;
  e = error_of("base: configs/tiny.yaml\nrandom:\n  samples: 2\n  axes:\n    optim.lr: {log_uniform: [0, 1]}\n");
  EXPECT_NE(e.find("test-sweep.yaml:5: optim.lr: log_uniform needs lo > 0"), std::string::npos) << e;
  e = error_of("base: configs/tiny.yaml\ngird:\n  optim.lr: [0.1]\n");
  EXPECT_NE(e.find("test-sweep.yaml:2: gird: unknown key"), std::string::npos) << e;
}

// YAML allows a list or a mapping as a key; those were yaml-cpp's bare "bad conversion" (exit 1,
// no file, no line). A negative or fractional random seed was converted to uint64_t as it came.
TEST(SweepFile, OddKeysAndSeedsNameTheLine) {
  const std::string base = "base: configs/tiny.yaml\n";
  EXPECT_EQ(error_of(base + "[a, b]: 1\n"), "test-sweep.yaml:2: expected a key such as optim.lr, got a list");
  EXPECT_EQ(error_of(base + "set:\n  {a: 1}: 2\n"), "test-sweep.yaml:3: expected a key such as optim.lr, got a mapping");
  EXPECT_EQ(error_of(base + "grid:\n  [optim.lr]: [1, 2]\n"), "test-sweep.yaml:3: expected a key such as optim.lr, got a list");
  const std::string random = base + "random:\n  samples: 2\n  axes:\n    optim.weight_decay: {uniform: [0, 0.2]}\n";
  EXPECT_EQ(error_of(random + "  [seed]: 1\n"), "test-sweep.yaml:6: expected a key such as optim.lr, got a list");
  EXPECT_EQ(error_of(base + "random:\n  samples: 2\n  axes:\n    [optim.lr]: {log_uniform: [1e-4, 1e-2]}\n"),
            "test-sweep.yaml:5: expected a key such as optim.lr, got a list");
  EXPECT_EQ(error_of(base + "random:\n  samples: 2\n  axes:\n    optim.lr: {[log_uniform]: [1e-4, 1e-2]}\n"),
            "test-sweep.yaml:5: expected a key such as optim.lr, got a list");
  for (const std::string seed : {"-1", "1.5", "1e30"})
    EXPECT_EQ(error_of(random + "  seed: " + seed + "\n"),
              "test-sweep.yaml:6: random.seed: expected an integer from 0 to 2^64-1, got " + seed);
  EXPECT_EQ(parse(random + "  seed: 18446744073709549568\n").random_seed, 18446744073709549568ull);  // 2^64 - 2^11
  // Integers are read exactly, not through a double: 2^64-1 is in range, 2^53+1 is not 2^53.
  EXPECT_EQ(parse(random + "  seed: 18446744073709551615\n").random_seed, 18446744073709551615ull);
  EXPECT_EQ(parse(random + "  seed: 9007199254740993\n").random_seed, 9007199254740993ull);
  EXPECT_EQ(parse(random + "  seed: 1e3\n").random_seed, 1000u);
  EXPECT_EQ(error_of(random + "  seed: 18446744073709551616\n"),
            "test-sweep.yaml:6: random.seed: expected an integer from 0 to 2^64-1, got 18446744073709551616");
}

// What would make identical runs, runs the sweep cannot keep apart, or more runs than anyone reads
// is refused while parsing, naming the line and key (10^8 samples ran for minutes).
TEST(SweepFile, RunDirAxesDuplicatesAndTooManyRunsAreErrors) {
  const std::string base = "base: configs/tiny.yaml\n";
  EXPECT_EQ(error_of(base + "grid:\n  log.run_dir: [a, b]\n"),
            "test-sweep.yaml:3: log.run_dir: the sweep sets it for every run (<dir>/<run name>); set dir: instead");
  EXPECT_EQ(error_of(base + "set:\n  log.run_dir: a\n"),
            "test-sweep.yaml:3: log.run_dir: the sweep sets it for every run (<dir>/<run name>); set dir: instead");
  EXPECT_EQ(error_of(base + "seeds: [1, 1]\n"), "test-sweep.yaml:2: seeds: 1 appears twice: the two runs would be identical");
  EXPECT_EQ(error_of(base + "grid:\n  optim.lr: [0.001, 0.002, 1e-3]\n"),
            "test-sweep.yaml:3: optim.lr: 1e-3 (= 0.001) appears twice: the two runs would be identical");
  EXPECT_EQ(error_of(base + "grid:\n  train.precision: [fp32, fp32]\n"),
            "test-sweep.yaml:3: train.precision: fp32 appears twice: the two runs would be identical");
  EXPECT_EQ(error_of(base + "random:\n  samples: 100000000\n  axes:\n    optim.lr: {log_uniform: [1e-4, 1e-2]}\n"),
            "test-sweep.yaml: 100000000 runs (random.samples 100000000): at most 10000 runs per sweep; split it into several "
            "sweep files");
  EXPECT_EQ(error_of(base + "grid:\n  optim.lr: [0.1, 0.2]\nrandom:\n  samples: 2501\n  axes:\n"
                            "    optim.weight_decay: {uniform: [0, 1]}\nseeds: [1, 2]\n"),
            "test-sweep.yaml: 10004 runs (random.samples 2501 x optim.lr 2 x seeds 2): at most 10000 runs per sweep; split it "
            "into several sweep files");
  EXPECT_EQ(expand(parse(base + "random:\n  samples: 10000\n  axes:\n    optim.lr: {uniform: [0.1, 0.2]}\n")).size(), 10000u);
}

TEST(SweepCli, BadSweepFileIsOneLineExitTwo) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "badfile");
  fs::create_directories(dir);
  std::ofstream(dir / "bad.yaml") << "base: " << kSource << "/configs/tiny.yaml\ngrid:\n  model.d_modle: [32]\n";
  const auto r = run_shoestring("sweep plan " + (dir / "bad.yaml").string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_EQ(r.output, "config error: " + (dir / "bad.yaml").string() +
                          ":3: model.d_modle: unknown key; did you mean model.d_model?\n");
  // A directory reads as nothing at all: say what it is.
  fs::create_directories(dir / "folder.yaml");
  const auto folder = run_shoestring("sweep plan " + (dir / "folder.yaml").string());
  EXPECT_EQ(folder.code, 2) << folder.output;
  EXPECT_EQ(folder.output, "config error: " + (dir / "folder.yaml").string() + ": is a directory, expected a sweep file (YAML)\n");
  // --print-config takes a run number: -1 printed the whole plan.
  std::ofstream(dir / "good.yaml") << "base: " << kSource << "/configs/tiny.yaml\nset:\n  data.source: synthetic\n"
                                   << "grid:\n  optim.lr: [0.001, 0.002]\n";
  for (const char* n : {"-1", "2"}) {
    const auto bad = run_shoestring("sweep plan " + (dir / "good.yaml").string() + " --print-config " + n);
    EXPECT_EQ(bad.code, 2) << n << ": " << bad.output;
    EXPECT_EQ(std::count(bad.output.begin(), bad.output.end(), '\n'), 1) << bad.output;
  }
  EXPECT_EQ(run_shoestring("sweep plan " + (dir / "good.yaml").string() + " --print-config -1").output,
            "shoestring sweep plan: --print-config -1: expected a run number from 0\n");
  // A model the planner does not estimate is planned at once, saying why there is no estimate.
  std::ofstream(dir / "deep.yaml") << "base: " << kSource << "/configs/tiny.yaml\nset:\n  data.source: synthetic\n"
                                   << "grid:\n  model.n_layers: [1000000]\n";
  const auto deep = run_shoestring("sweep plan " + (dir / "deep.yaml").string());
  EXPECT_EQ(deep.code, 0) << deep.output;
  EXPECT_NE(deep.output.find("estimate   n/a: model.n_layers=1000000: the planner handles at most 4096 transformer blocks"),
            std::string::npos) << deep.output;
  EXPECT_LT(deep.seconds, 10);
  fs::remove_all(dir);
}

// docs/sweeps.md has users add lines to sweep.sbatch: a second --slurm keeps their edits and puts
// the fresh script beside it; a script it wrote and nobody edited is simply rewritten.
TEST(SweepCli, SlurmKeepsAnEditedScript) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "sbatch");
  fs::create_directories(dir);
  const fs::path file = dir / "s.yaml", out = dir / "out";
  std::ofstream(file) << "base: " << kSource << "/configs/tiny.yaml\nset:\n  data.source: synthetic\n"
                      << "grid:\n  optim.lr: [0.001, 0.002]\ndir: " << out.string() << "\n";
  const std::string slurm = "sweep run " + file.string() + " --slurm";
  ASSERT_EQ(run_shoestring(slurm).code, 0);
  const std::string fresh = slurp(out / "sweep.sbatch");
  // Regenerated with other options, unedited: rewritten.
  ASSERT_EQ(run_shoestring(slurm + " --np 2").code, 0);
  const std::string np2 = slurp(out / "sweep.sbatch");
  EXPECT_NE(np2.find("#SBATCH --ntasks=2\n"), std::string::npos) << np2;
  EXPECT_FALSE(fs::exists(out / "sweep.sbatch.new"));
  // Edited: kept, the fresh script beside it, one line saying so.
  std::ofstream(out / "sweep.sbatch", std::ios::app) << "#SBATCH --partition=gpu\n";
  const auto again = run_shoestring(slurm);
  EXPECT_EQ(again.code, 0) << again.output;
  EXPECT_EQ(again.output, "kept " + (out / "sweep.sbatch").string() + ": edited since it was written; the fresh script is " +
                              (out / "sweep.sbatch.new").string() + " (compare them, then merge or move it over)\n");
  EXPECT_EQ(slurp(out / "sweep.sbatch"), np2 + "#SBATCH --partition=gpu\n");
  EXPECT_EQ(slurp(out / "sweep.sbatch.new"), fresh);
  // --submit does not guess which of the two is meant.
  const auto submit = run_shoestring(slurm + " --submit");
  EXPECT_EQ(submit.code, 1) << submit.output;
  EXPECT_NE(submit.output.find("not submitted: choose between"), std::string::npos) << submit.output;
  EXPECT_EQ(slurp(out / "sweep.sbatch"), np2 + "#SBATCH --partition=gpu\n");
  fs::remove_all(dir);
}

// --np 2: each run trains under mpirun on two data-parallel ranks and finishes.
TEST(SweepCli, RunsUnderMpirunWithNp) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "np2");
  fs::create_directories(dir);
  const fs::path file = dir / "np2.yaml", out = dir / "out";
  std::ofstream(file) << "base: " << kSource << "/configs/tiny.yaml\nname: np2\ndir: " << out.string() << "\n"
                      << "set:\n  data.source: synthetic\n  data.eval_interval: 0\n  train.steps: 4\n"
                      << "  train.micro_batch_size: 2\n  train.seq_len: 16\n  train.threads: 1\n  model.d_model: 32\n"
                      << "  model.n_heads: 2\n  model.n_kv_heads: 1\n  model.intermediate_size: 64\n"
                      << "  model.max_seq_len: 16\n  log.progress: 'off'\n"
                      << "grid:\n  optim.lr: [0.003]\n";
  const auto r = shoestring::testing::run_command("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                                                  SHOESTRING_BINARY_DIR "/bin/shoestring sweep run " + file.string() +
                                                  " --np 2");
  ASSERT_EQ(r.code, 0) << r.output;
  const fs::path run = out / "r000-lr=0.003";
  EXPECT_NE(slurp(run / "metrics.jsonl").find("\"step\":4,"), std::string::npos) << r.output;
  EXPECT_NE(slurp(run / "train.log").find("2 rank(s)"), std::string::npos) << slurp(run / "train.log");
  fs::remove_all(dir);
}

namespace {

// A sweep over a very small tiny.yaml (milliseconds per step) with `axes` (grid:/seeds: lines).
void write_tiny_sweep(const fs::path& file, const std::string& name, const fs::path& out, int steps, int eval_interval,
                      const std::string& axes) {
  std::ofstream(file) << "base: " << kSource << "/configs/tiny.yaml\n"
                      << "name: " << name << "\ndir: " << out.string() << "\n"
                      << "set:\n  data.source: synthetic\n  data.eval_interval: " << eval_interval
                      << "\n  train.steps: " << steps << "\n"
                      << "  train.micro_batch_size: 2\n  train.seq_len: 16\n  train.threads: 1\n"
                      << "  model.d_model: 32\n  model.n_heads: 2\n  model.n_kv_heads: 1\n  model.intermediate_size: 64\n"
                      << "  model.max_seq_len: 16\n  optim.warmup_steps: 2\n  log.progress: 'off'\n"
                      << axes;
}

// The "step" of every line of the run's metrics.jsonl (-1 for a line without one), and 1..n.
std::vector<int64_t> logged_steps(const fs::path& run) {
  std::vector<int64_t> steps;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    double step = -1;
    steps.push_back(json_number(line, "step", step) ? int64_t(step) : -1);
  }
  return steps;
}

std::vector<int64_t> steps_up_to(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (chdir(SHOESTRING_SOURCE_DIR) != 0) _exit(126);
    FILE* out = std::freopen(log.c_str(), "w", stdout);
    if (!out || dup2(fileno(stdout), 2) < 0) _exit(126);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

// The whole life of a sweep: plan, run (interrupted by SIGTERM during the second run), run again
// (finished runs untouched, the interrupted one resumed), report, Slurm script.
TEST(SweepCli, RunInterruptResumeReportSlurm) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "e2e");
  fs::create_directories(dir);
  const fs::path file = dir / "e2e.yaml", out = dir / "out";
  write_tiny_sweep(file, "e2e", out, 60, 10, "grid:\n  optim.lr: [0.001, 0.01]\nseeds: [1, 2]\n");
  const auto plan = run_shoestring("sweep plan " + file.string());
  ASSERT_EQ(plan.code, 0) << plan.output;
  EXPECT_NE(plan.output.find("sweep e2e: 4 runs"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("r003-lr=0.01-seed=2  [pending]"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("32 per step x 60 steps = 1,920"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("optim.lr 0.003 -> 0.01"), std::string::npos) << plan.output;  // tiny.yaml's lr
  EXPECT_NE(plan.output.find("checkpoint.interval 0 -> 6"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("MiB/rank model state + activations"), std::string::npos) << plan.output;  // the planner's
  const auto yaml = run_shoestring("sweep plan " + file.string() + " --print-config 3");
  ASSERT_EQ(yaml.code, 0) << yaml.output;
  const Config printed = load_config_text(yaml.output, "printed");
  EXPECT_DOUBLE_EQ(printed.optim.lr, 0.01);
  EXPECT_EQ(printed.train.seed, 2);

  // Start the sweep and stop it (SIGTERM, as Slurm would) once the second run has logged a step.
  const fs::path r0 = out / "r000-lr=0.001-seed=1", r1 = out / "r001-lr=0.001-seed=2";
  const pid_t pid = spawn({SHOESTRING_BINARY_DIR "/bin/shoestring", "sweep", "run", file.string()}, dir / "first.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(r1 / "metrics.jsonl") || fs::file_size(r1 / "metrics.jsonl") == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << slurp(dir / "first.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string first = slurp(dir / "first.log");
  ASSERT_TRUE(WIFEXITED(status)) << first;
  EXPECT_EQ(WEXITSTATUS(status), 42) << first;
  EXPECT_NE(first.find("stopped by signal 15"), std::string::npos) << first;
  SweepFile where;
  where.dir = out.string();
  EXPECT_EQ(read_status(where, r0.filename()).status, "done") << first;
  const RunStatus stopped = read_status(where, r1.filename());
  EXPECT_EQ(stopped.status, "preempted") << first;
  EXPECT_FALSE(fs::exists(out / "r002-lr=0.01-seed=1")) << "a run started after the signal";
  const std::string r0_metrics = slurp(r0 / "metrics.jsonl");
  const auto r0_mtime = fs::last_write_time(r0 / "metrics.jsonl");
  EXPECT_NE(slurp(out / "sweep.json").find("\"status\": \"preempted\""), std::string::npos);

  const auto second = run_shoestring("sweep run " + file.string());
  EXPECT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("r000-lr=0.001-seed=1] done already"), std::string::npos) << second.output;
  // The trainer had logged a step, so its handlers were in place: it saved a checkpoint and said 42.
  EXPECT_EQ(stopped.exit_code, 42) << first;
  EXPECT_NE(second.output.find("r001-lr=0.001-seed=2] resuming (metrics at step"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("  resumed  from "), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("4 of 4 runs done"), std::string::npos) << second.output;
  EXPECT_EQ(slurp(r0 / "metrics.jsonl"), r0_metrics);
  EXPECT_EQ(fs::last_write_time(r0 / "metrics.jsonl"), r0_mtime);
  // The resumed run logged every step exactly once.
  EXPECT_EQ(logged_steps(r1), steps_up_to(60));
  const auto third = run_shoestring("sweep run " + file.string());
  EXPECT_EQ(third.code, 0) << third.output;
  EXPECT_EQ(third.output.find("starting"), std::string::npos) << third.output;

  const auto report = run_shoestring("sweep report " + file.string());
  ASSERT_EQ(report.code, 0) << report.output;
  std::ifstream csv(out / "report.csv");
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 5u) << slurp(out / "report.csv");
  EXPECT_EQ(lines[0].rfind("name,optim.lr,train.seed,status,steps_done,steps,final_loss,best_loss,final_val_loss", 0), 0u) << lines[0];
  EXPECT_EQ(lines[4].rfind("r003-lr=0.01-seed=2,0.01,2,done,60,60,", 0), 0u) << lines[4];
  EXPECT_EQ(lines[4].substr(lines[4].rfind(',') + 1), "1920") << lines[4];  // 60 steps x 2 x 16 tokens
  const std::string md = slurp(out / "report.md");
  EXPECT_NE(md.find("| r002-lr=0.01-seed=1 | 0.01 | 1 | done | 60/60 |"), std::string::npos) << md;
  if (report.output.find("plots skipped") == std::string::npos) {
    EXPECT_TRUE(is_png(out / "report-loss.png"));
    EXPECT_TRUE(is_png(out / "report-final-loss-optim_lr.png"));
    EXPECT_NE(md.find("![report-loss.png](report-loss.png)"), std::string::npos) << md;
  } else {
    ADD_FAILURE() << "gnuplot is part of launch/setup; " << report.output;
  }
  // Without gnuplot the tables are still written and one line says why there are no plots.
  const auto bare = shoestring::testing::run_command("PATH=/nonexistent " SHOESTRING_BINARY_DIR "/bin/shoestring sweep report " +
                                                     file.string());
  EXPECT_EQ(bare.code, 0) << bare.output;
  EXPECT_NE(bare.output.find("plots skipped: gnuplot is not installed"), std::string::npos) << bare.output;

  const auto slurm = run_shoestring("sweep run " + file.string() + " --slurm --np 2");
  ASSERT_EQ(slurm.code, 0) << slurm.output;
  const std::string script = slurp(out / "sweep.sbatch");
  EXPECT_EQ(script.rfind("#!/bin/bash\n", 0), 0u);
  EXPECT_NE(script.find("#SBATCH --array=0-3\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --ntasks=2\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --requeue\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --signal=B:USR1@120\n"), std::string::npos) << script;
  EXPECT_NE(script.find("\n  r000-lr=0.001-seed=1\n  r001-lr=0.001-seed=2\n  r002-lr=0.01-seed=1\n  r003-lr=0.01-seed=2\n)\n"),
            std::string::npos) << script;
  EXPECT_NE(script.find("name=${runs[$SLURM_ARRAY_TASK_ID]}\n"), std::string::npos) << script;
  EXPECT_NE(script.find("/bin/shoestring' sweep run '" + file.string() + "' --only \"$name\" --np 2 &\n"), std::string::npos) << script;
  EXPECT_NE(script.find("if [ $rc -eq 42 ]; then\n  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\""),
            std::string::npos) << script;
  const auto syntax = shoestring::testing::run_command("bash -n " + (out / "sweep.sbatch").string());
  EXPECT_EQ(syntax.code, 0) << syntax.output;
  // --submit hands the script to sbatch (a stub here that records its arguments); without sbatch
  // on the PATH it is one line and exit 2.
  fs::create_directories(dir / "sbatch-bin");
  std::ofstream(dir / "sbatch-bin" / "sbatch") << "#!/bin/sh\necho \"$@\" > " << (dir / "submitted").string()
                                                 << "\necho Submitted batch job 99\n";
  fs::permissions(dir / "sbatch-bin" / "sbatch", fs::perms::owner_all);
  const auto submitted = shoestring::testing::run_command("PATH=" + (dir / "sbatch-bin").string() + ":" + std::getenv("PATH") +
                                                          " " SHOESTRING_BINARY_DIR "/bin/shoestring sweep run " +
                                                          file.string() + " --slurm --submit");
  EXPECT_EQ(submitted.code, 0) << submitted.output;
  EXPECT_NE(submitted.output.find("Submitted batch job 99"), std::string::npos) << submitted.output;
  EXPECT_EQ(slurp(dir / "submitted"), (out / "sweep.sbatch").string() + "\n");
  const auto no_sbatch = shoestring::testing::run_command("PATH=/nonexistent " SHOESTRING_BINARY_DIR "/bin/shoestring sweep run " +
                                                          file.string() + " --slurm --submit");
  EXPECT_EQ(no_sbatch.code, 2) << no_sbatch.output;
  EXPECT_NE(no_sbatch.output.find("cannot run sbatch"), std::string::npos) << no_sbatch.output;
  // As array task 0 (without --np, so no mpirun): it picks run r000, which is done, and exits 0
  // without asking a (fake) scontrol to requeue it.
  ASSERT_EQ(run_shoestring("sweep run " + file.string() + " --slurm").code, 0);
  fs::create_directories(dir / "bin");
  std::ofstream(dir / "bin" / "scontrol") << "#!/bin/sh\necho \"$@\" >> " << (dir / "requeued").string() << "\n";
  fs::permissions(dir / "bin" / "scontrol", fs::perms::owner_all);
  const std::string env = "PATH=" + (dir / "bin").string() + ":" + std::getenv("PATH") + " SLURM_ARRAY_JOB_ID=77 ";
  const auto task = shoestring::testing::run_command(env + "SLURM_ARRAY_TASK_ID=0 bash " + (out / "sweep.sbatch").string());
  EXPECT_EQ(task.code, 0) << task.output;
  EXPECT_NE(task.output.find("r000-lr=0.001-seed=1] done already"), std::string::npos) << task.output;
  EXPECT_FALSE(fs::exists(dir / "requeued"));
  // Task 3 on a fresh run, sent USR1 as Slurm would before the time limit: the script passes it
  // on, the run checkpoints, and the task requeues itself.
  const fs::path r3 = out / "r003-lr=0.01-seed=2";
  fs::remove_all(r3);
  const pid_t task3 = spawn({"/usr/bin/env", "PATH=" + (dir / "bin").string() + ":" + std::getenv("PATH"), "SLURM_ARRAY_JOB_ID=77",
                             "SLURM_ARRAY_TASK_ID=3", "bash", (out / "sweep.sbatch").string()},
                            dir / "task3.log");
  while (!fs::exists(r3 / "metrics.jsonl") || fs::file_size(r3 / "metrics.jsonl") == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline + std::chrono::seconds(60)) << slurp(dir / "task3.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(task3, SIGUSR1);
  waitpid(task3, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << slurp(dir / "task3.log");
  EXPECT_EQ(WEXITSTATUS(status), 42) << slurp(dir / "task3.log");
  EXPECT_EQ(slurp(dir / "requeued"), "requeue 77_3\n") << slurp(dir / "task3.log");
  EXPECT_EQ(read_status(where, r3.filename()).status, "preempted");
  fs::remove_all(dir);
}

namespace {

// Whether any process's command line holds `needle` (the trainer a killed sweep left behind).
bool process_with(const std::string& needle) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = slurp(e.path() / "cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

// A sweep killed outright (SIGKILL: an OOM killer, a node reboot of the login shell) cannot
// forward anything; its trainer gets SIGTERM from the kernel (PR_SET_PDEATHSIG), checkpoints and
// exits. Rerunning the sweep resumes the interrupted run (its status still says "running") and
// every step is logged exactly once.
TEST(SweepCli, SigkilledSweepResumesOnRerun) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "sigkill");
  fs::create_directories(dir);
  const fs::path file = dir / "k.yaml", out = dir / "out";
  write_tiny_sweep(file, "k", out, 400, 0, "grid:\n  optim.lr: [0.001, 0.01]\n");
  const fs::path r0 = out / "r000-lr=0.001";
  const pid_t pid = spawn({SHOESTRING_BINARY_DIR "/bin/shoestring", "sweep", "run", file.string()}, dir / "first.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(r0 / "metrics.jsonl") || fs::file_size(r0 / "metrics.jsonl") == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << slurp(dir / "first.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  const std::string needle = (r0 / "sweep-config.yaml").string();
  while (process_with(needle)) {  // the orphaned trainer checkpoints and exits
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the trainer outlived its sweep";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(slurp(out / "sweep.json").find("\"status\": \"running\""), std::string::npos);  // nobody updated it

  const auto second = run_shoestring("sweep run " + file.string());
  EXPECT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("r000-lr=0.001] resuming (metrics at step"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("  resumed  from "), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("2 of 2 runs done"), std::string::npos) << second.output;
  EXPECT_EQ(logged_steps(r0), steps_up_to(400));
  fs::remove_all(dir);
}

// metrics.jsonl is read strictly: a record per line, except what a killed trainer leaves (an
// incomplete last line) and what its resume drops (empty lines).
TEST(SweepMetrics, ReadStrictlyNamingFileAndLine) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "metrics");
  fs::create_directories(dir);
  const std::string file = (dir / "metrics.jsonl").string();
  auto read = [&](const std::string& text) {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
    return read_metrics(dir.string());
  };
  const std::string r1 = "{\"step\":1,\"loss\":5.5,\"lr\":0.001,\"elapsed_s\":0.1}\n";
  const std::string r2 = "{\"step\":2,\"loss\":null,\"lr\":0.001,\"skipped\":true}\n";  // a skipped step
  const std::string r3 = "{\"step\":3,\"loss\":4.25,\"val_loss\":nan}\n";
  MetricsFile m = read(r1 + r2 + r3);
  EXPECT_EQ(m.error, "");
  EXPECT_EQ(m.last_step, 3);
  EXPECT_EQ(m.records, 3);
  int seen = 0;
  read_metrics(dir.string(), [&](const std::string&) { ++seen; });
  EXPECT_EQ(seen, 3);
  m = read(r1 + r2 + "\n" + r3 + "{\"step\":4,\"lo");  // killed mid-write: not an error
  EXPECT_EQ(m.error, "");
  EXPECT_EQ(m.last_step, 3);
  EXPECT_EQ(m.torn_line, 5);
  const std::string expected = ": expected a JSON record with an integer \"step\" and a numeric \"loss\", as the trainer writes, got '";
  EXPECT_EQ(read(r1 + "garbage\n" + r3).error, file + ":2" + expected + "garbage'");
  EXPECT_EQ(read(r1 + r2 + "{\"step\":3,\"loss\":4.2x}\n").error, file + ":3" + expected + "{\"step\":3,\"loss\":4.2x}'");
  EXPECT_EQ(read(r1 + "{\"step\":-2,\"loss\":1}\n").error, file + ":2" + expected + "{\"step\":-2,\"loss\":1}'");
  EXPECT_EQ(read(r1 + "{\"step\":2.5,\"loss\":1}\n").error, file + ":2" + expected + "{\"step\":2.5,\"loss\":1}'");
  EXPECT_EQ(read(r1 + "{\"loss\":1}\n").error, file + ":2" + expected + "{\"loss\":1}'");
  // A bad last line that does end in a newline is damage, not a torn write.
  EXPECT_EQ(read(r1 + "{\"step\":2,\"lo\n").error, file + ":2" + expected + "{\"step\":2,\"lo'");
  // CRLF line endings (a file edited on Windows): the message says why a record-looking line is bad.
  EXPECT_EQ(read(r1 + "{\"step\":2,\"loss\":4.5}\r\n").error,
            file + ":2" + expected + "{\"step\":2,\"loss\":4.5}?' (the line ends in \\r\\n; the trainer writes \\n, and its "
                                     "resume would drop such lines)");
  // Binary garbage (a file of zeros after a crash): one printable line, cut at 40 bytes.
  m = read(std::string(100, '\0') + "\n" + r1);
  EXPECT_EQ(m.error, file + ":1" + expected + std::string(40, '?') + "...'");
  EXPECT_EQ(m.last_step, 0);
  fs::remove(file);
  fs::create_directories(file);
  EXPECT_EQ(read_metrics(dir.string()).error, file + ": is a directory, expected the trainer's metrics file");
  fs::remove_all(dir);
}

// A run whose checkpoints reached train.steps but whose metrics did not cannot be resumed into
// readable metrics (the trainer has no steps left to log): that is a problem too.
TEST(SweepMetrics, FinishedRunWithShortMetricsIsAProblem) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "short");
  fs::create_directories(dir / "checkpoints" / "step_0000004");
  Config cfg;
  cfg.train.steps = 8;
  cfg.log.run_dir = dir.string();
  const std::string file = (dir / "metrics.jsonl").string();
  std::ofstream(file) << "{\"step\":1,\"loss\":5}\n{\"step\":2,\"loss\":4}\n{\"step\":3,\"lo";
  // Checkpoint short of train.steps: an interrupted run, to be resumed.
  EXPECT_EQ(newest_checkpoint_step(cfg), -1);  // no manifest.json yet: not a checkpoint
  std::ofstream(dir / "checkpoints" / "step_0000004" / "manifest.json") << "{}";
  EXPECT_EQ(newest_checkpoint_step(cfg), 4);
  EXPECT_EQ(metrics_problem(cfg, read_metrics(dir.string())), "");
  fs::create_directories(dir / "checkpoints" / "step_0000008");
  std::ofstream(dir / "checkpoints" / "step_0000008" / "manifest.json") << "{}";
  fs::create_directories(dir / "checkpoints" / "step_0000009.tmp-77");  // an unfinished save: ignored
  EXPECT_EQ(newest_checkpoint_step(cfg), 8);
  EXPECT_EQ(metrics_problem(cfg, read_metrics(dir.string())),
            file + ": ends at step 2 (then an incomplete line 3), but the run's checkpoint step_0000008 reached train.steps 8: "
                   "the file was truncated or replaced");
  fs::remove(file);
  EXPECT_EQ(metrics_problem(cfg, read_metrics(dir.string())),
            file + ": missing, but the run's checkpoint step_0000008 reached train.steps 8: the file was truncated or replaced");
  // A bad line is reported as such, checkpoint or not.
  std::ofstream(file) << "{\"step\":1,\"loss\":5}\nxx\n";
  EXPECT_NE(metrics_problem(cfg, read_metrics(dir.string())).find(file + ":2: expected"), std::string::npos);
  fs::remove_all(dir);
}

// `sweep plan a b` names the stray word as every other command does (parse_command_line).
TEST(SweepCli, StrayArgumentsAreNamed) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "stray");
  fs::create_directories(dir);
  const fs::path file = dir / "s.yaml";
  std::ofstream(file) << "base: " << kSource << "/configs/tiny.yaml\nset:\n  data.source: synthetic\ndir: " << (dir / "out").string()
                      << "\ngrid:\n  optim.lr: [0.001, 0.002]\n";
  for (const std::string action : {"plan", "run", "report"}) {
    const auto r = run_shoestring("sweep " + action + " " + file.string() + " extra");
    EXPECT_EQ(r.code, 2) << action << ": " << r.output;
    EXPECT_EQ(r.output, "shoestring: unexpected argument 'extra' (see --help)\n") << action;
    const auto two = run_shoestring("sweep " + action + " a b c");
    EXPECT_EQ(two.code, 2) << action << ": " << two.output;
    EXPECT_EQ(two.output, "shoestring: unexpected argument 'b' (see --help)\n") << action;
  }
  EXPECT_FALSE(fs::exists(dir / "out")) << "a refused command started work";
  // An empty --only (an array task past the end of the run list) trained every run.
  const auto empty_only = run_shoestring("sweep run " + file.string() + " --only ''");
  EXPECT_EQ(empty_only.code, 2) << empty_only.output;
  EXPECT_EQ(empty_only.output,
            "shoestring sweep run: --only: expected a run name (`shoestring sweep plan FILE` lists them), got ''\n");
  EXPECT_FALSE(fs::exists(dir / "out")) << "an empty --only started work";
  // dir: naming a file was "error: filesystem error: cannot create directories: File exists", exit 1.
  std::ofstream(dir / "out") << "not a folder\n";
  for (const std::string action : {"plan", "run", "report"}) {
    const auto r = run_shoestring("sweep " + action + " " + file.string());
    EXPECT_EQ(r.code, 2) << action << ": " << r.output;
    EXPECT_EQ(r.output, "shoestring sweep " + action + ": " + file.string() + ": dir " + (dir / "out").string() +
                            " is a file, expected a folder for the sweep's runs\n");
  }
  fs::remove_all(dir);
}

namespace {

std::vector<std::string> csv_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

// A finished run whose metrics.jsonl was damaged afterwards (a garbage line, a truncated file, a
// file of zeros) used to be resumed on every `sweep run` (the trainer, at train.steps already,
// dropped the bad lines and logged nothing: "failed: exit 0", again and again) and reported with
// exit 0. Now: one line naming the file and line, the run left alone, exit 1; the report keeps the
// other runs and leaves the damaged one's numbers empty.
TEST(SweepCli, UnreadableMetricsOfAFinishedRun) {
  const fs::path dir = shoestring::testing::fresh_dir("sweep", "unreadable");
  fs::create_directories(dir);
  const fs::path file = dir / "u.yaml", out = dir / "out";
  write_tiny_sweep(file, "u", out, 6, 0, "grid:\n  optim.lr: [0.001, 0.01]\n");
  const fs::path r0 = out / "r000-lr=0.001", r1 = out / "r001-lr=0.01";
  const auto first = run_shoestring("sweep run " + file.string());
  ASSERT_EQ(first.code, 0) << first.output;
  ASSERT_EQ(logged_steps(r1), steps_up_to(6));
  ASSERT_TRUE(fs::exists(r1 / "checkpoints" / "step_0000006" / "manifest.json"));
  const std::string metrics = (r1 / "metrics.jsonl").string(), good = slurp(r1 / "metrics.jsonl");
  auto lines_of = [](const std::string& text) {
    std::vector<std::string> v;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  };
  const auto good_lines = lines_of(good);
  const std::string expected = ": expected a JSON record with an integer \"step\" and a numeric \"loss\", as the trainer writes, got '";
  const std::string advice = "; not trained again (resuming would drop what it cannot read): repair the file, or delete " +
                             r1.string() + " to train the run afresh\n";
  struct Damage {
    std::string what, text, problem;
  };
  const std::vector<Damage> damages = {
      {"garbage line", good_lines[0] + "\n" + good_lines[1] + "\nnot json at all\n" + good.substr(good_lines[0].size() + good_lines[1].size() + 2),
       metrics + ":3" + expected + "not json at all'"},
      {"truncated", good.substr(0, good_lines[0].size() + 1 + good_lines[1].size() / 2),
       metrics + ": ends at step 1 (then an incomplete line 2), but the run's checkpoint step_0000006 reached train.steps 6: the "
                 "file was truncated or replaced"},
      {"zeros", std::string(64, '\0') + "\n" + good, metrics + ":1" + expected + std::string(40, '?') + "...'"},
  };
  for (const auto& d : damages) {
    std::ofstream(metrics, std::ios::binary | std::ios::trunc) << d.text;
    const auto run = run_shoestring("sweep run " + file.string());
    EXPECT_EQ(run.code, 1) << d.what << ": " << run.output;
    EXPECT_NE(run.output.find("sweep [2/2 r001-lr=0.01] unreadable metrics: " + d.problem + advice), std::string::npos)
        << d.what << ": " << run.output;
    EXPECT_NE(run.output.find("r000-lr=0.001] done already"), std::string::npos) << d.what << ": " << run.output;
    EXPECT_EQ(run.output.find("] resuming ("), std::string::npos) << d.what << ": " << run.output;
    EXPECT_NE(run.output.find("sweep u: 1 of 2 runs done, 1 with unreadable metrics"), std::string::npos) << d.what << ": " << run.output;
    EXPECT_EQ(slurp(metrics), d.text) << d.what << ": the damaged file was changed";

    const auto report = shoestring::testing::run_command("PATH=/nonexistent " SHOESTRING_BINARY_DIR "/bin/shoestring sweep report " +
                                                         file.string());
    EXPECT_EQ(report.code, 1) << d.what << ": " << report.output;
    EXPECT_NE(report.output.find("shoestring sweep report: r001-lr=0.01: unreadable metrics: " + d.problem + "\n"), std::string::npos)
        << d.what << ": " << report.output;
    EXPECT_NE(report.output.find("sweep u: 1 of 2 runs done, 1 with unreadable metrics"), std::string::npos) << report.output;
    const auto csv = csv_lines(out / "report.csv");
    ASSERT_EQ(csv.size(), 3u) << slurp(out / "report.csv");
    EXPECT_EQ(csv[1].rfind("r000-lr=0.001,0.001,done,6,6,", 0), 0u) << csv[1];
    EXPECT_EQ(csv[2], "r001-lr=0.01,0.01,unreadable,,6,,,,,,,") << d.what;
    const std::string md = slurp(out / "report.md");
    EXPECT_NE(md.find("| r001-lr=0.01 | 0.01 | unreadable | -/6 | - | - | - | - | - | - | - |"), std::string::npos) << md;
    EXPECT_NE(md.find("- r001-lr=0.01: `" + d.problem + "`"), std::string::npos) << md;
  }
  // Repaired: nothing to do, exit 0. Deleted: trained afresh.
  std::ofstream(metrics, std::ios::binary | std::ios::trunc) << good;
  const auto repaired = run_shoestring("sweep run " + file.string());
  EXPECT_EQ(repaired.code, 0) << repaired.output;
  EXPECT_NE(repaired.output.find("r001-lr=0.01] done already"), std::string::npos) << repaired.output;
  EXPECT_EQ(run_shoestring("sweep report " + file.string()).code, 0);
  fs::remove_all(r1);
  const auto again = run_shoestring("sweep run " + file.string());
  EXPECT_EQ(again.code, 0) << again.output;
  EXPECT_NE(again.output.find("r001-lr=0.01] starting"), std::string::npos) << again.output;
  EXPECT_EQ(logged_steps(r1), steps_up_to(6));
  // A report that cannot be written says which file, exit 1, and does not claim to have written it.
  fs::remove(out / "report.csv");
  fs::create_directories(out / "report.csv");
  const auto unwritable = shoestring::testing::run_command("PATH=/nonexistent " SHOESTRING_BINARY_DIR "/bin/shoestring sweep report " +
                                                         file.string());
  EXPECT_EQ(unwritable.code, 1) << unwritable.output;
  EXPECT_EQ(unwritable.output, "error: " + (out / "report.csv").string() + ": cannot write the sweep report\n");
  fs::remove_all(dir);
}
