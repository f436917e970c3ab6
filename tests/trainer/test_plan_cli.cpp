// End to end: `shoestring plan schedule`, as a user runs it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "tests/run_cli.h"

namespace {

using shoestring::testing::run_shoestring;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }
size_t lines(const std::string& text) { return size_t(std::count(text.begin(), text.end(), '\n')); }

TEST(PlanCli, DualPipeTimelineAndSummary) {
  const auto r = run_shoestring("plan schedule --schedule dualpipe --pp 4 --microbatches 8");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("rank 0 |F0", 0), 0u) << r.output;
  for (const char* want : {"rank 3 |", "parameters x2", "makespan 26", "(PP/2-1)(F&B+B-3W) = 2", "worst rank 2",
                            "point-to-point order: one order per rank pair",
                            "in-order run (NCCL: one blocking stream of sends and receives per rank): finishes, makespan 26"})
    EXPECT_TRUE(has(r.output, want)) << want << " missing from\n" << r.output;
}

TEST(PlanCli, CostsAndSvg) {
  const auto svg = std::filesystem::temp_directory_path() / ("shoestring_plan_" + std::to_string(::getpid()) + ".svg");
  const auto r = run_shoestring("plan schedule --schedule zb1p --pp 4 --microbatches 8 --cost-f 2 --cost-b 3 --cost-w 1 --svg " +
                                svg.string());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "(PP-1)(F+B-2W) = 9; simulated rank 0 9, worst rank 9")) << r.output;
  std::ifstream in(svg);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str().rfind("<?xml", 0), 0u);
  EXPECT_TRUE(has(text.str(), "</svg>"));
  std::filesystem::remove(svg);
}

TEST(PlanCli, BadInputIsOneLineExitTwo) {
  const auto unknown = run_shoestring("plan schedule --schedule pipedream --pp 4 --microbatches 8");
  EXPECT_EQ(unknown.code, 2);
  EXPECT_EQ(unknown.output,
            "shoestring plan: unknown schedule 'pipedream' (schedules: gpipe, 1f1b, interleaved, zb1p, dualpipe, dualpipev)\n");
  const auto few = run_shoestring("plan schedule --schedule dualpipe --pp 4 --microbatches 6");
  EXPECT_EQ(few.code, 2);
  EXPECT_EQ(few.output, "shoestring plan: dualpipe with pp=4 needs at least 8 micro-batches (2 x pp), got 6\n");
  const auto odd = run_shoestring("plan schedule --schedule dualpipe --pp 3 --microbatches 6");
  EXPECT_EQ(odd.code, 2);
  EXPECT_EQ(odd.output, "shoestring plan: dualpipe needs an even pp, got 3\n");
  const auto missing = run_shoestring("plan schedule --schedule 1f1b");
  EXPECT_EQ(missing.code, 2);
  EXPECT_EQ(lines(missing.output), 1u) << missing.output;
  const auto what = run_shoestring("plan memory");
  EXPECT_EQ(what.code, 2);
  EXPECT_EQ(lines(what.output), 1u) << what.output;
  const auto unnamed = run_shoestring("plan schedule --schedule 1f1b --pp 2 --microbatches 4 --svg ''");
  EXPECT_EQ(unnamed.code, 2);
  EXPECT_EQ(unnamed.output, "shoestring plan: --svg: expected a file name, got an empty one\n");
}

// Each bad value is one line naming the flag, exit 2, before anything is built: a schedule of
// 10^9 micro-batches was killed for memory at 24 GB, pp 3000 ran for 42 s, and nan costs ended in
// std::bad_alloc.
TEST(PlanCli, ScheduleFlagsAreCheckedBeforeBuilding) {
  const std::string s = "plan schedule --schedule ";
  for (const auto& [args, line] : std::vector<std::pair<std::string, std::string>>{
           {s + "1f1b --pp 100000 --microbatches 4", "--pp 100000: at most 1024 pipeline ranks"},
           {s + "1f1b --pp 2 --microbatches 1000000000", "--microbatches 1000000000: at most 10000 micro-batch forwards per rank"},
           {s + "interleaved --pp 4 --microbatches 4000 --virtual-stages 4",
            "--microbatches 4000 x --virtual-stages 4 = 16000: at most 10000 micro-batch forwards per rank"},
           {s + "interleaved --pp 16 --microbatches 16 --virtual-stages 100",
            "--pp 16 x --virtual-stages 100 = 1600 model stages: at most 1024"},
           {s + "dualpipe --pp 256 --microbatches 512",
            "--pp 256 x --microbatches 512 x 2 chunks per rank (dualpipe) = 262144 micro-batch forwards: at most 65536, so "
            "that a plan takes seconds"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-f nan", "--cost-f nan: expected a finite number > 0 and at most 1e12"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-f inf", "--cost-f inf: expected a finite number > 0 and at most 1e12"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-comm nan", "--cost-comm nan: expected a finite number >= 0 and at most 1e12"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-b 0", "--cost-b 0: expected a finite number > 0 and at most 1e12"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-w -1", "--cost-w -1: expected a finite number >= 0 and at most 1e12"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-fb 1e300", "--cost-fb 1e+300: expected a finite number > 0 and at most 1e12"},
           {s + "1f1b --pp 4 --microbatches 4 --cost-w 3",
            "--cost-w 3 must be at most --cost-b 2 (W is the weight-gradient part of the backward)"},
       }) {
    const auto r = run_shoestring(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, "shoestring plan: " + line + "\n") << args;
    EXPECT_LT(r.seconds, 10) << args;
  }
}

// Costs of very different sizes would make rows of millions of text columns (2.4 GB, 20 s): the
// summary is printed, the timeline is not.
TEST(PlanCli, TimelineOfUnevenCostsIsNotDrawn) {
  const auto r = run_shoestring("plan schedule --schedule 1f1b --pp 4 --microbatches 8 --cost-comm 1e7");
  EXPECT_EQ(r.code, 0) << r.output.substr(0, 500);
  EXPECT_EQ(r.output.rfind("timeline not drawn: 4 rows of ", 0), 0u) << r.output.substr(0, 500);
  EXPECT_TRUE(has(r.output, "makespan ")) << r.output;
  EXPECT_LT(r.output.size(), 10000u);
  EXPECT_LT(r.seconds, 10);
}

// A stray word is refused, naming it, by both forms of `plan`.
TEST(PlanCli, StrayWordsAreRefused) {
  for (const std::string args : {"plan schedule --schedule 1f1b --pp 4 --microbatches 8 extra",
                                 "plan --json extra --config " SHOESTRING_SOURCE_DIR "/configs/tiny.yaml --gpus 1 --gpu h100"}) {
    const auto r = run_shoestring(args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_EQ(r.output, "shoestring: unexpected argument 'extra' (see --help)\n") << args;
  }
}

// --svg overwrites a file, as output flags do, but a directory is not one.
TEST(PlanCli, SvgMustBeAFileName) {
  const auto dir = std::filesystem::temp_directory_path() / ("shoestring_plan_svgdir_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string cmd = "plan schedule --schedule 1f1b --pp 2 --microbatches 2 --svg ";
  const auto r = run_shoestring(cmd + dir.string());
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output, "shoestring plan: --svg " + dir.string() + ": is a directory, expected a file name\n");
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::ofstream(dir / "old.svg") << "old";
  EXPECT_EQ(run_shoestring(cmd + (dir / "old.svg").string()).code, 0);
  std::ifstream in(dir / "old.svg");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str().rfind("<?xml", 0), 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

using shoestring::testing::run_shoestring;

const std::string kConfigs = SHOESTRING_SOURCE_DIR "/configs/";

TEST(PlanCli, PlannerReportAndJson) {
  const auto r = run_shoestring("plan --config " + kConfigs + "tiny-moe.yaml --gpus 1 --gpu h100");
  EXPECT_EQ(r.code, 0) << r.output;
  for (const char* want : {"parameters: total 735.84K (735840), activated per token 305.86K (305856)", "FITS",
                           "bubble", "tokens/s", "GPU-hours"})
    EXPECT_NE(r.output.find(want), std::string::npos) << want << " missing from\n" << r.output;
  const auto j = run_shoestring("plan --json --config " + kConfigs + "moe-16b.yaml --gpus 1 --gpu a100");
  EXPECT_EQ(j.code, 0) << j.output;
  EXPECT_EQ(j.output.rfind("{\"config\":\"moe-16b\"", 0), 0u) << j.output;
  EXPECT_NE(j.output.find("\"fits\":false"), std::string::npos) << j.output;
}

TEST(PlanCli, SearchPrintsATable) {
  const auto r = run_shoestring("plan --search --config " + kConfigs + "tiny-moe.yaml --gpus 4 --gpu h100 --set train.global_batch=32");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("valid layouts"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("  20 "), std::string::npos) << r.output;  // 20 rows
  EXPECT_EQ(r.output.find("  21 "), std::string::npos) << r.output;
}

TEST(PlanCli, PlannerErrorsAreOneLineExitTwo) {
  const auto gpu = run_shoestring("plan --config " + kConfigs + "tiny.yaml --gpus 1 --gpu v100");
  EXPECT_EQ(gpu.code, 2);
  EXPECT_EQ(gpu.output, "shoestring plan: unknown --gpu 'v100' (known: h100, h200, h800, a100, cpu)\n");
  const auto pp = run_shoestring("plan --config " + kConfigs + "tiny.yaml --set parallel.pp=2 --gpus 3 --gpu h100");
  EXPECT_EQ(pp.code, 2);
  EXPECT_EQ(pp.output, "shoestring plan: --gpus 3 is not divisible by parallel.pp=2\n");
  const auto missing = run_shoestring("plan --config " + kConfigs + "tiny.yaml --gpu h100");
  EXPECT_EQ(missing.code, 2);
  EXPECT_EQ(lines(missing.output), 1u) << missing.output;
}

// Non-finite and out-of-range numbers are refused naming the flag (they printed nan results, or
// --price -3 quietly meant the GPU table's price); so are models and pipelines beyond the
// planner's limits, at once (200,000 layers took over a minute).
TEST(PlanCli, PlannerFlagsAndSizesAreChecked) {
  const std::string plan = "plan --config " + kConfigs + "tiny.yaml --gpus 1 --gpu h100 ";
  for (const auto& [args, line] : std::vector<std::pair<std::string, std::string>>{
           {plan + "--price -3", "--price -3: expected a finite number of $ per GPU-hour >= 0"},
           {plan + "--price nan", "--price nan: expected a finite number of $ per GPU-hour >= 0"},
           {plan + "--tokens nan", "--tokens nan: expected a finite number > 0"},
           {plan + "--tokens inf", "--tokens inf: expected a finite number > 0"},
           {plan + "--efficiency nan", "--efficiency nan: expected a fraction in (0, 1]"},
           {plan + "--margin nan", "--margin nan: expected a fraction in [0, 1)"},
           {plan + "--search --top -1", "--top -1: expected at least 1 row"},
           {plan + "--set model.n_layers=200000", "model.n_layers=200000: the planner handles at most 4096 transformer blocks"},
           {"plan --config " + kConfigs + "tiny.yaml --gpus 16384 --gpu h100 --set parallel.pp=16384",
            "parallel.pp=16384: the planner handles at most 1024 pipeline ranks"},
       }) {
    const auto r = run_shoestring(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, "shoestring plan: " + line + "\n") << args;
    EXPECT_LT(r.seconds, 10) << args;
  }
  const auto free = run_shoestring(plan + "--price 0");
  EXPECT_EQ(free.code, 0) << free.output;
  EXPECT_NE(free.output.find("$0 at $0.00 per GPU-hour"), std::string::npos) << free.output;
}

}  // namespace

namespace {

// --help wins over missing required options, in every subcommand that has them.
TEST(PlanCli, HelpNeedsNoRequiredOptions) {
  for (const char* cmd : {"plan schedule --help", "plan --help", "launch slurm --help"}) {
    const auto r = run_shoestring(cmd);
    EXPECT_EQ(r.code, 0) << cmd << ": " << r.output;
    EXPECT_EQ(r.output.find("is required"), std::string::npos) << cmd << ": " << r.output;
  }
}

}  // namespace
