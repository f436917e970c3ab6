// End to end: the real executable, as a user runs it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/run_cli.h"

namespace fs = std::filesystem;

namespace {

using Result = shoestring::testing::CliResult;

Result run(const std::string& args) { return shoestring::testing::run_shoestring(args); }

size_t line_count(const fs::path& p) {
  std::ifstream in(p);
  size_t n = 0;
  for (std::string l; std::getline(in, l);) ++n;
  return n;
}

TEST(Cli, TrainTinyWritesMetrics) {
  const fs::path dir = fs::temp_directory_path() / ("shoestring_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const Result r = run("train --config configs/tiny.yaml --set data.source=synthetic --set train.steps=3 --set train.threads=1 --set log.run_dir=" + dir.string());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(line_count(dir / "metrics.jsonl"), 3u);
  EXPECT_NE(r.output.find("parameters"), std::string::npos) << "start banner missing";
  std::ifstream in(dir / "metrics.jsonl");
  std::string first;
  std::getline(in, first);
  for (const char* key : {"\"step\":1", "\"loss\":", "\"lr\":", "\"grad_norm\":", "\"tokens_per_s\":", "\"elapsed_s\":"})
    EXPECT_NE(first.find(key), std::string::npos) << key << " missing from " << first;
  fs::remove_all(dir);
}

TEST(Cli, BrokenConfigExitsTwoWithOneLine) {
  const fs::path bad = fs::temp_directory_path() / "shoestring_cli_bad.yaml";
  std::ofstream(bad) << "train:\n  steps: 5\noptim:\n  lr: abc\n";
  const Result r = run("train --config " + bad.string());
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output, "config error: " + bad.string() + ":4: optim.lr: expected a positive number, got \"abc\"\n");
  const Result s = run("train --config configs/tiny.yaml --set model.n_heads=5");
  EXPECT_EQ(s.code, 2);
  EXPECT_NE(s.output.find("--set model.n_heads=5: model.n_heads: must divide model.d_model (128), got 5"), std::string::npos);
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
  const Result r = run("train --config configs/tiny.yaml --no-such-flag");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("no-such-flag"), std::string::npos);
  EXPECT_EQ(run("train").code, 2);
  // LibTorch's allocator failure, said as what it is (1 PB: beyond any address space, so it fails
  // at once on every machine, whatever its overcommit policy).
  const fs::path oom_dir = fs::temp_directory_path() / "shoestring_cli_oom";
  fs::remove_all(oom_dir);
  const Result m = run("train --config configs/tiny.yaml --set data.source=synthetic --set train.steps=1 "
                       "--set model.intermediate_size=2000000000000 --set log.run_dir=" + oom_dir.string());
  EXPECT_EQ(m.code, 1);
  EXPECT_EQ(m.output.rfind("out of memory: you tried to allocate ", 0), 0u) << m.output;
  EXPECT_EQ(std::count(m.output.begin(), m.output.end(), '\n'), 1) << m.output;
  fs::remove_all(oom_dir);
  const Result b = run("bench comm --max-bytes 12Q");
  EXPECT_EQ(b.code, 2);
  EXPECT_EQ(b.output, "shoestring bench comm: --max-bytes: expected a size such as 4096, 64K, 16M or 1G, got '12Q'\n");
}

TEST(Cli, HelpAndVersion) {
  const Result h = run("--help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.output.find("train"), std::string::npos);
  EXPECT_NE(h.output.find("config"), std::string::npos);
  EXPECT_EQ(run("train --help").code, 0);
  EXPECT_EQ(run("config --help").code, 0);
  const Result v = run("--version");
  EXPECT_EQ(v.code, 0);
  for (const char* lib : {"LibTorch", "CUDA", "NCCL", "MPI", "HDF5", "git"}) EXPECT_NE(v.output.find(lib), std::string::npos) << lib;
}

TEST(Cli, VersionNamesTheCommitTheBinaryWasBuiltFrom) {
  // Checkpoints record this commit: one left over from an earlier configure would mislabel them.
  const shoestring::testing::CliResult head = shoestring::testing::run_command("git rev-parse --short=12 HEAD");
  if (head.code != 0) GTEST_SKIP() << "not a git checkout";
  const std::string commit = head.output.substr(0, head.output.find('\n'));
  EXPECT_NE(run("--version").output.find("(git " + commit), std::string::npos)
      << "HEAD is " << commit << " (rebuild after committing: CMake re-runs when HEAD moves)";
}

TEST(Cli, BenchTrainPrintsJson) {
  const Result r = run("bench train --config configs/tiny.yaml --set data.source=synthetic --set data.eval_interval=0 --set train.threads=1 --steps 2 --warmup 1");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("{\"bench\":\"train\",\"config\":\"tiny\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"steps\":2,"), std::string::npos);
  EXPECT_EQ(run("bench nope").code, 2);
  EXPECT_EQ(run("bench fp8 --help").code, 0);
  for (const char* bad : {"4096,7168", "4096,7168,0", "a,b,c", "1,2,3,4"}) {
    const Result r = run(std::string("bench fp8 --shape ") + bad);
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_NE(r.output.find(std::string("'") + bad + "'"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("M,N,K"), std::string::npos) << r.output;
  }
  const Result rounds = run("bench fp8 --rounds 0");
  EXPECT_EQ(rounds.code, 2);
  EXPECT_NE(rounds.output.find("--rounds must be >= 1, got 0"), std::string::npos) << rounds.output;
}

// MFU's inputs: FLOPs per token (model_flops_per_token, tested against a hand count in
// test_pipeline_stages), peak memory (RSS on the CPU) and, with a GPU from the planner's table,
// its peak for the run's precision.
TEST(Cli, BenchTrainReportsFlopsMemoryAndMfu) {
  const std::string cmd = "bench train --config configs/tiny.yaml --set data.source=synthetic --set data.eval_interval=0 "
                          "--set train.threads=1 --steps 1 --warmup 0";
  const Result r = run(cmd + " --gpu h100");
  EXPECT_EQ(r.code, 0) << r.output;
  for (const char* field : {"\"model_flops_per_token\":", "\"achieved_tflops\":", "\"peak_memory_bytes\":",
                            "\"peak_memory_of\":\"host_rss\"", "\"peak_tflops\":989.4,", "\"mfu\":"})
    EXPECT_NE(r.output.find(field), std::string::npos) << field << "\n" << r.output;
  const Result fp8 = run(cmd + " --set train.precision=fp8 --peak-tflops 100");
  EXPECT_EQ(fp8.code, 0) << fp8.output;
  EXPECT_NE(fp8.output.find("\"peak_tflops\":100.0,"), std::string::npos) << fp8.output;
  EXPECT_NE(run(cmd + " --gpu nosuchgpu").code, 0);
}

// Each bad option is named, checked before any training, and exits 2; nothing runs as if a stray
// word or an empty list entry were not there.
TEST(Cli, BenchOptionsAreCheckedOneByOne) {
  const std::string train = "bench train --config configs/tiny.yaml --set data.source=synthetic --steps 1 --warmup 0";
  const fs::path missing = fs::temp_directory_path() / "shoestring_cli_no_such_dir" / "x.json";
  for (const auto& [args, line] : std::vector<std::pair<std::string, std::string>>{
           {train + " --json " + fs::temp_directory_path().string(),
            "shoestring bench train: --json " + fs::temp_directory_path().string() + ": is a directory, expected a file name"},
           {train + " --json " + missing.string(), "shoestring bench train: --json " + missing.string() + ": folder " +
                                                       missing.parent_path().string() + " does not exist"},
           {train + " --gpu bogus", "shoestring bench train: unknown --gpu 'bogus' (known: h100, h200, h800, a100, cpu)"},
           {"bench train --config configs/tiny.yaml --warmup -1", "shoestring bench train: --warmup must be >= 0, got -1"},
           {"bench train --steps 1", "shoestring bench train: no config given; use --config FILE"},
           {"bench moe --top-k 0", "shoestring bench moe: --top-k must be >= 1, got 0"},
           {"bench moe --warmup -1", "shoestring bench moe: --warmup must be >= 0, got -1"},
           {"bench moe --top-k 9 --experts 8", "shoestring bench moe: --top-k 9 exceeds --experts 8"},
           {"bench moe stray", "shoestring: unexpected argument 'stray' (see --help)"},
           {"bench comm --ops all_reduce,,broadcast", "shoestring bench comm: --ops has an empty entry: 'all_reduce,,broadcast'"},
       }) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, line + "\n") << args;
  }
}

// Each one once ran, or failed naming something else: a --set the bench replaces, an empty --gpu,
// --rounds beside --quick (which times one round), a size that wrapped to 0, --steps + --warmup
// wrapped to a negative train.steps, names without the flag or the valid ones; the pipeline bench
// said only "needs at least 2 ranks" on one process.
TEST(Cli, BenchRefusesWhatItWouldIgnoreOrMisname) {
  const std::string train = "bench train --config configs/tiny.yaml --set data.source=synthetic --steps 1 --warmup 0";
  const std::string pipeline = "bench pipeline --config configs/tiny-moe.yaml --set data.source=synthetic";
  for (const auto& [args, line] : std::vector<std::pair<std::string, std::string>>{
           {train + " --set train.steps=5",
            "shoestring bench train: --set train.steps=5: the bench sets train.steps itself (train.steps from --warmup "
            "and --steps, log.* for a quiet run in a temporary directory)"},
           {train + " --set 'log.run_dir = /tmp/x'",
            "shoestring bench train: --set log.run_dir = /tmp/x: the bench sets log.run_dir itself (train.steps from "
            "--warmup and --steps, log.* for a quiet run in a temporary directory)"},
           {train + " --gpu ''", "shoestring bench train: unknown --gpu '' (known: h100, h200, h800, a100, cpu)"},
           {"bench train --config configs/tiny.yaml --steps 9223372036854775807 --warmup 5",
            "shoestring bench train: --steps 9223372036854775807 + --warmup 5 exceeds 9223372036854775807"},
           {"bench fp8 --quick --rounds 2",
            "shoestring bench fp8: --rounds has no effect with --quick (one round); give one of them"},
           {"bench comm --max-bytes 17179869184G",
            "shoestring bench comm: --max-bytes: expected a size such as 4096, 64K, 16M or 1G, got '17179869184G'"},
           {"bench comm --ops all_reduce,allreduce",
            "shoestring bench comm: --ops: unknown op 'allreduce' (ops: all_reduce, reduce_scatter, all_gather, "
            "broadcast, all_to_all)"},
           {"bench comm --dtype float8",
            "shoestring bench comm: --dtype must be float32, float64, bfloat16, float16, int64, int32 or uint8, got "
            "'float8'"},
           {"bench comm --backend gloo", "shoestring bench comm: --backend must be mpi or nccl, got 'gloo'"},
           {pipeline + " --schedules gpipe,1f2b",
            "shoestring bench pipeline: --schedules: unknown schedule '1f2b' (schedules: gpipe, 1f1b, interleaved, "
            "zb1p, dualpipe, dualpipev)"},
           {pipeline + " --set parallel.schedule=gpipe",
            "shoestring bench pipeline: --set parallel.schedule=gpipe: the bench sets parallel.schedule itself (pp = "
            "the ranks started; --schedules, --microbatches, --steps)"},
           {pipeline, "shoestring bench pipeline: needs at least 2 ranks (mpirun -np N, N = pipeline ranks)"},
       }) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, line + "\n") << args;
  }
}

TEST(Cli, ConfigParamsMatchesTheBanner) {
  const Result p = run("config --params --config configs/tiny-moe.yaml");
  EXPECT_EQ(p.code, 0);
  EXPECT_NE(p.output.find("parameters: 735840 total, 305856 activated per token"), std::string::npos) << p.output;
}

// A count over 10^12 layers is closed form (it once looped over them: a hang), and --keys, which
// reads no config, refuses options it would ignore.
TEST(Cli, ConfigParamsOfHugeModelsAndKeysAlone) {
  const Result p = run("config --params --config configs/tiny.yaml --set model.n_layers=1000000000000");
  EXPECT_EQ(p.code, 0) << p.output;
  EXPECT_LT(p.seconds, 10.0);
  EXPECT_NE(p.output.find("parameters: 196864000000065920 total"), std::string::npos) << p.output;
  for (const char* extra : {"--print", "--params", "--config configs/tiny.yaml", "--set train.steps=3"}) {
    const Result k = run(std::string("config --keys ") + extra);
    EXPECT_EQ(k.code, 2) << extra;
    EXPECT_EQ(k.output, "shoestring config: --keys lists the schema and takes no --print, --params, --config or --set\n") << extra;
  }
  EXPECT_EQ(run("config --keys").code, 0);
  // An empty --resume is not "no resume".
  const Result r = run("train --config configs/tiny.yaml --resume ''");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.output, "shoestring train: --resume takes auto or a checkpoint directory\n");
}

TEST(Cli, ConfigPrintIsResolvedYaml) {
  const Result r = run("config --print --config configs/tiny.yaml --set train.steps=7");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("  steps: 7\n"), std::string::npos);
  EXPECT_NE(r.output.find("  n_kv_heads: 2\n"), std::string::npos);  // from the file
  EXPECT_NE(r.output.find("  beta2: 0.95\n"), std::string::npos);     // a default
}

}  // namespace
