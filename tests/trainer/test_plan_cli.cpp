// End to end: `shoestring plan schedule`, as a user runs it.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

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
