// `shoestring bench ...`: benchmarks that print machine-readable JSON. Timings come from the same
// code paths users run (bench train calls train()), never from unit tests.
#include <unistd.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "ops/fp8_bench.h"
#include "parallel/comm_bench.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/moe_bench.h"
#include "trainer/pipeline_stages.h"
#include "trainer/planner/gpu_table.h"
#include "trainer/pipeline_bench.h"
#include "trainer/train.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace shoestring::cli {

namespace {

// "a,b,c" -> {a, b, c}; an empty entry ("a,,b", "a,") is a mistake worth naming, not skipping.
std::optional<std::vector<std::string>> split_commas(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = text.find(',', start);
    out.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (out.back().empty()) return std::nullopt;
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// A bad option of benchmark `name`: one line naming it, and exit code `rc`. Every rank finds the
// same bad option; rank 0 speaks for all, so the lines do not interleave.
int bench_error(const char* name, const parallel::World& world, const std::string& what, int rc = 2) {
  if (world.rank == 0) std::cerr << "shoestring bench " << name << ": " << what << "\n";
  return rc;
}

// The same for a benchmark reporting bad options through `error`.
int report_errors(const char* name, const parallel::World& world, const std::function<int(std::string&)>& run) {
  std::string error;
  const int rc = run(error);
  return rc == 0 ? 0 : bench_error(name, world, error, rc);
}

// The first --set of a key the bench sets itself, refused ("" when none): it would be silently
// replaced. The key is read as the config loader reads it, spaces around it ignored.
std::string replaced_set(const std::vector<std::string>& sets, std::initializer_list<const char*> keys,
                         const std::string& how) {
  for (const std::string& set : sets) {
    std::string key = set.substr(0, set.find('='));
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    for (const char* own : keys)
      if (key == own) return "--set " + set + ": the bench sets " + own + " itself (" + how + ")";
  }
  return "";
}

int bench_train(const Args& args, const parallel::World& world) {
  po::options_description opts(
      "shoestring bench train --config FILE [--set k=v ...] [--steps N] [--warmup W] [--gpu h100 | --peak-tflops T]\n\n"
      "Training throughput of the real training loop: W warm-up steps, then N timed steps. Also prints\n"
      "model FLOPs per token (3 x the forward of the planner's layer_flops: 6 x activated parameters\n"
      "plus attention scores, MTP included), peak memory (the GPU allocator's peak on CUDA, else the\n"
      "process's peak RSS) and, given a peak, MFU = FLOPs/token x tokens/s / peak");
  ConfigOptions cfg_opts;
  int64_t steps = 20, warmup = 5;
  double peak_tflops = 0;
  std::string json, gpu;
  opts.add_options()("help,h", "show this help")
      ("steps", po::value(&steps)->default_value(20), "timed steps")
      ("warmup", po::value(&warmup)->default_value(5), "untimed steps before them")
      ("gpu", po::value(&gpu), "peak from the planner's GPU table (h100, h200, ...): its dense fp8 rate with "
                              "train.precision fp8, else its dense bf16 rate")
      ("peak-tflops", po::value(&peak_tflops), "peak dense TFLOPS for MFU (overrides --gpu)")
      ("json", po::value(&json), "also write the result to this file");
  add_config_options(opts, cfg_opts);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  const auto usage_error = [&](const std::string& what) { return bench_error("train", world, what); };
  if (cfg_opts.files.empty()) return usage_error("no config given; use --config FILE");
  if (steps <= 0) return usage_error("--steps must be > 0, got " + std::to_string(steps));
  if (warmup < 0) return usage_error("--warmup must be >= 0, got " + std::to_string(warmup));
  // The run's train.steps is their sum: it must not wrap around to a negative count.
  if (steps > std::numeric_limits<int64_t>::max() - warmup)
    return usage_error("--steps " + std::to_string(steps) + " + --warmup " + std::to_string(warmup) + " exceeds " +
                       std::to_string(std::numeric_limits<int64_t>::max()));
  if (const std::string bad = replaced_set(cfg_opts.sets, {"train.steps", "log.run_dir", "log.progress", "log.every"},
                                           "train.steps from --warmup and --steps, log.* for a quiet run in a temporary directory");
      !bad.empty())
    return usage_error(bad);
  if (!(peak_tflops >= 0) || !std::isfinite(peak_tflops))
    return usage_error("--peak-tflops must be a finite number >= 0, got " + std::to_string(peak_tflops));
  // Checked before the run, not after minutes of training.
  if (const std::string bad = unwritable_output(vm, "--json", json); !bad.empty()) return usage_error(bad);
  planner::GpuSpec spec;
  if (vm.count("gpu")) {  // an empty name too: it is no GPU of the table, not "no --gpu"
    try {
      spec = planner::find_gpu(gpu);
    } catch (const planner::PlanError& e) {
      return usage_error(e.what());
    }
  }
  const fs::path dir = fs::temp_directory_path() / ("shoestring-bench-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto sets = cfg_opts.sets;
  sets.insert(sets.end(), {"train.steps=" + std::to_string(warmup + steps), "log.progress=off",
                           "log.every=1000000", "log.run_dir=" + dir.string()});
  const Config cfg = load_config(cfg_opts.files, sets);
  if (vm.count("gpu") && peak_tflops == 0) {
    peak_tflops = cfg.train.precision == "fp8" && spec.fp8_tflops > 0 ? spec.fp8_tflops : spec.bf16_tflops;
  }
  const TrainSummary s = train(cfg, world);
  fs::remove_all(dir);
  double seconds = 0;
  for (size_t i = size_t(warmup); i < s.step_seconds.size(); ++i) seconds += s.step_seconds[i];
  const double tokens_per_s = double(s.tokens_per_step * steps) / seconds;
  const double flops = model_flops_per_token(cfg.model, cfg.train.seq_len);
  const bool on_gpu = s.device.rfind("cuda", 0) == 0;
  char line[1024];
  int n = std::snprintf(
      line, sizeof line,
      "{\"bench\":\"train\",\"config\":\"%s\",\"precision\":\"%s\",\"device\":\"%s\",\"threads\":%d,"
      "\"steps\":%lld,\"tokens_per_step\":%lld,\"seconds\":%.6f,\"tokens_per_s\":%.2f,\"final_loss\":%.6f,"
      "\"model_flops_per_token\":%.6g,\"achieved_tflops\":%.4f,\"peak_memory_bytes\":%lld,\"peak_memory_of\":\"%s\"",
      cfg.name.c_str(), cfg.train.precision.c_str(), s.device.c_str(), s.threads, static_cast<long long>(steps),
      static_cast<long long>(s.tokens_per_step), seconds, tokens_per_s, s.final_loss, flops,
      flops * tokens_per_s / 1e12, static_cast<long long>(on_gpu ? s.peak_device_bytes : s.peak_rss_bytes),
      on_gpu ? "gpu_allocated" : "host_rss");
  if (peak_tflops > 0)
    n += std::snprintf(line + n, sizeof line - size_t(n), ",\"peak_tflops\":%.1f,\"mfu\":%.5f", peak_tflops,
                       flops * tokens_per_s / (peak_tflops * 1e12));
  std::snprintf(line + n, sizeof line - size_t(n), "}");
  if (world.rank != 0) return 0;  // under mpirun: one line, rank 0's timings (tokens are global)
  std::cout << line << "\n";
  if (!json.empty()) write_output(json, std::string(line) + "\n", "JSON result");
  return 0;
}

int bench_fp8(const Args& args) {
  po::options_description opts(
      "shoestring bench fp8 [--quick] [--no-check] [--rounds R] [--shape M,N,K ...] [--json FILE]\n\n"
      "TFLOPS of our FP8 GEMM vs cuBLASLt FP8 and cuBLAS BF16 on DeepSeek-V3 shapes, and GB/s of the\n"
      "quantization kernels vs a device-to-device copy (needs a GPU)");
  ops::Fp8BenchOptions o;
  bool no_check = false;
  std::string json;
  std::vector<std::string> shapes;
  opts.add_options()("help,h", "show this help")
      ("quick", po::bool_switch(&o.quick), "fewer shapes and repetitions")
      ("no-check", po::bool_switch(&no_check), "skip the calc_diff check of each GEMM")
      ("rounds", po::value(&o.rounds)->default_value(o.rounds), "GEMM rows: time every contender this often, interleaved, keep its best (>= 1)")
      ("shape", po::value(&shapes)->composing(), "only this dense GEMM, M,N,K (repeatable; no grouped or quantizer rows)")
      ("json", po::value(&json), "write the JSON result to this file (else to stdout)");
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  o.check = !no_check;
  if (o.rounds < 1) {
    std::cerr << "shoestring bench fp8: --rounds must be >= 1, got " << o.rounds << "\n";
    return 2;
  }
  if (o.quick && !vm["rounds"].defaulted()) {  // --quick times one round, whatever --rounds says
    std::cerr << "shoestring bench fp8: --rounds has no effect with --quick (one round); give one of them\n";
    return 2;
  }
  try {
    for (const std::string& s : shapes) o.shapes.push_back(ops::parse_gemm_shape(s));
  } catch (const std::invalid_argument& e) {
    std::cerr << "shoestring bench fp8: --shape " << e.what() << "\n";
    return 2;
  }
  if (const std::string bad = unwritable_output(vm, "--json", json); !bad.empty()) {
    std::cerr << "shoestring bench fp8: " << bad << "\n";
    return 2;
  }
  std::ostringstream out;
  std::string error;
  if (const int rc = ops::run_fp8_bench(o, out, std::cout, error); rc != 0) {
    std::cerr << "shoestring bench fp8: " << error << "\n";
    return rc;
  }
  if (json.empty()) std::cout << out.str();
  else write_output(json, out.str(), "JSON result");
  return 0;
}

int bench_comm(const Args& args, const parallel::World& world) {
  po::options_description opts(
      "mpirun -np N shoestring bench comm [--backend mpi|nccl] [--ops all_reduce,...] [--min-bytes 1K]\n"
      "    [--max-bytes 64M] [--iters N] [--warmup N] [--rounds R] [--dtype float32]\n\n"
      "Bus bandwidth of our process-group collectives and of the raw MPI or NCCL call, sizes x4 apart;\n"
      "rank 0 prints one JSON line per (op, size). One rank of --backend nccl also runs without mpirun");
  parallel::CommBenchOptions o;
  std::string ops = "all_reduce,reduce_scatter,all_gather,broadcast,all_to_all", min_bytes = "1K", max_bytes = "64M";
  opts.add_options()("help,h", "show this help")
      ("backend", po::value(&o.backend)->default_value(o.backend), "mpi or nccl")
      ("ops", po::value(&ops)->default_value(ops), "comma-separated collectives")
      ("min-bytes", po::value(&min_bytes)->default_value(min_bytes), "smallest size (K, M, G suffixes)")
      ("max-bytes", po::value(&max_bytes)->default_value(max_bytes), "largest size")
      ("iters", po::value(&o.iters)->default_value(o.iters), "timed iterations per round")
      ("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed iterations first")
      ("rounds", po::value(&o.rounds)->default_value(o.rounds), "timed rounds (ours and raw alternate; best kept)")
      ("dtype", po::value(&o.dtype)->default_value(o.dtype), "float32 float64 bfloat16 float16 int64 int32 uint8");
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  const auto op_list = split_commas(ops);
  if (!op_list) return bench_error("comm", world, "--ops has an empty entry: '" + ops + "'");
  o.ops = *op_list;
  o.min_bytes = parallel::parse_byte_size(min_bytes);
  o.max_bytes = parallel::parse_byte_size(max_bytes);
  for (const auto& [flag, text, bytes] : {std::tuple{"--min-bytes", min_bytes, o.min_bytes}, {"--max-bytes", max_bytes, o.max_bytes}})
    if (bytes < 0)
      return bench_error("comm", world, std::string(flag) + ": expected a size such as 4096, 64K, 16M or 1G, got '" + text + "'");
  return report_errors("comm", world, [&](std::string& error) { return parallel::run_comm_bench(world, o, std::cout, error); });
}

int bench_pipeline(const Args& args, const parallel::World& world) {
  po::options_description opts(
      "mpirun -np PP shoestring bench pipeline --config FILE [--set k=v ...] [--schedules gpipe,1f1b,...]\n"
      "    [--microbatches M] [--steps N] [--warmup W]\n\n"
      "Measured pipeline bubble of each schedule (idle time per rank from action timestamps) against the\n"
      "simulator's prediction for the per-action costs measured in the same run; pp = all ranks, one machine;\n"
      "rank 0 prints one JSON line per schedule");
  ConfigOptions cfg_opts;
  PipelineBenchOptions o;
  std::string schedules;
  opts.add_options()("help,h", "show this help")
      ("schedules", po::value(&schedules)->default_value("gpipe,1f1b,interleaved,zb1p,dualpipe,dualpipev"), "comma-separated schedules")
      ("microbatches", po::value(&o.microbatches)->default_value(0), "micro-batches per step; 0 = 4 x pp")
      ("steps", po::value(&o.steps)->default_value(o.steps), "timed steps per schedule")
      ("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed steps first");
  add_config_options(opts, cfg_opts);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  o.config_files = cfg_opts.files;
  o.sets = cfg_opts.sets;
  const auto schedule_list = split_commas(schedules);
  if (!schedule_list) return bench_error("pipeline", world, "--schedules has an empty entry: '" + schedules + "'");
  o.schedules = *schedule_list;
  // The bench sets the layout itself (pp = the ranks, one schedule at a time).
  if (const std::string bad = replaced_set(o.sets, {"parallel.pp", "parallel.dp", "parallel.ep", "parallel.schedule",
                                                   "parallel.microbatches", "train.steps", "train.global_batch",
                                                   "train.grad_accum"},
                                           "pp = the ranks started; --schedules, --microbatches, --steps");
      !bad.empty())
    return bench_error("pipeline", world, bad);
  return report_errors("pipeline", world, [&](std::string& error) { return run_pipeline_bench(world, o, std::cout, error); });
}

int bench_moe(const Args& args, const parallel::World& world) {
  po::options_description opts(
      "mpirun -np N shoestring bench moe [--tokens 4096] [--d-model 1024] [--experts 64] [--top-k 8]\n"
      "    [--iters N] [--warmup N] [--rounds R] [--dtype bfloat16] [--dispatch-dtype auto|fp8]\n\n"
      "Expert-parallel dispatch + combine (identity experts) against the raw all-to-all-v of the same\n"
      "token rows there and back (fp8: FP8-sized rows there); every rank is one ep rank; rank 0 prints\n"
      "one JSON line");
  MoeBenchOptions o;
  opts.add_options()("help,h", "show this help")
      ("tokens", po::value(&o.tokens)->default_value(o.tokens), "tokens per rank")
      ("d-model", po::value(&o.d_model)->default_value(o.d_model), "row width")
      ("experts", po::value(&o.experts)->default_value(o.experts), "routed experts (divisible by the ranks)")
      ("top-k", po::value(&o.top_k)->default_value(o.top_k), "experts per token (uniformly random)")
      ("iters", po::value(&o.iters)->default_value(o.iters), "timed calls per round")
      ("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed calls first")
      ("rounds", po::value(&o.rounds)->default_value(o.rounds), "timed rounds (ours and raw alternate; best kept)")
      ("dtype", po::value(&o.dtype)->default_value(o.dtype), "bfloat16, float32 or float64")
      ("dispatch-dtype", po::value(&o.dispatch_dtype)->default_value(o.dispatch_dtype),
       "auto (rows travel in --dtype) or fp8 (E4M3 + 1x128 scales there, --dtype back)");
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  return report_errors("moe", world, [&](std::string& error) { return run_moe_bench(world, o, std::cout, error); });
}

}  // namespace

int cmd_bench(const Args& args, const parallel::World& world) {
  const std::string usage = "usage: shoestring bench {train|fp8|comm|moe|pipeline} [options]   (see shoestring bench train --help)\n";
  if (const auto rc = usage_exit(args, usage.c_str())) return *rc;
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "train") return bench_train(rest, world);
  if (args[0] == "fp8") return bench_fp8(rest);
  if (args[0] == "comm") return bench_comm(rest, world);
  if (args[0] == "moe") return bench_moe(rest, world);
  if (args[0] == "pipeline") return bench_pipeline(rest, world);
  std::cerr << "shoestring bench: unknown benchmark '" << args[0] << "'\n" << usage;
  return 2;
}

}  // namespace shoestring::cli
