// The `shoestring` executable: dispatches to a subcommand and turns every error into one line on
// stderr and an exit code (2: usage or config, 1: runtime). No stack traces reach the user.
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "data/data_error.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/cli/commands.h"
#include "trainer/config_loader.h"

namespace {

constexpr const char* kUsage =
    "usage: shoestring <command> [options]\n"
    "\n"
    "Train DeepSeek-V3-style language models on a budget.\n"
    "\n"
    "commands:\n"
    "  train    train a model from a YAML config\n"
    "  config   check, print or list configuration keys\n"
    "  bench    benchmarks printing JSON: train, fp8, comm, moe, pipeline (see bench --help)\n"
    "  data     token datasets: prepare, inspect, train-tokenizer, bench (loader tokens/s)\n"
    "  ckpt     checkpoints: inspect, verify, convert (to another layout), export (safetensors)\n"
    "  plan     pipeline schedules: validate, simulate and draw one (plan schedule)\n"
    "           and the cost/memory planner: a config on N GPUs (plan --config ... --gpus N --gpu h100)\n"
    "  launch   write a Slurm batch script for a training job (launch slurm)\n"
    "  sweep    many runs from one sweep file: plan, run (resumable, Slurm arrays), report\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help (each command has its own --help)\n"
    "  --version      print versions of shoestring and the libraries it was built with\n";

int dispatch(const std::string& cmd, const shoestring::cli::Args& rest, const shoestring::parallel::World& world) {
  using namespace shoestring::cli;
  if (cmd == "train") return cmd_train(rest, world);
  if (cmd == "config") return cmd_config(rest);
  if (cmd == "bench") return cmd_bench(rest, world);
  if (cmd == "data") return cmd_data(rest);
  if (cmd == "ckpt") return cmd_ckpt(rest, world);
  if (cmd == "plan") return cmd_plan(rest);
  if (cmd == "launch") return cmd_launch(rest);
  if (cmd == "sweep") return cmd_sweep(rest);
  std::cerr << "shoestring: unknown command '" << cmd << "' (commands: train, config, bench, data, ckpt, plan, launch, sweep; see --help)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    (argc < 2 ? std::cerr : std::cout) << kUsage;
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::cout << shoestring::cli::version_text();
    return 0;
  }
  const std::string cmd = argv[1];
  const shoestring::cli::Args rest(argv + 2, argv + argc);
  shoestring::parallel::World world;
  int rc = 1;
  std::string error;  // one line; empty when the command succeeded or failed quietly
  bool uniform = false;  // every rank fails the same way (config errors): rank 0 speaks for all
  try {
    world = shoestring::parallel::init_world(&argc, &argv);
    rc = dispatch(cmd, rest, world);
  } catch (const shoestring::ConfigError& e) {
    error = std::string("config error: ") + e.what();
    rc = 2;
    uniform = true;
  } catch (const shoestring::ckpt::CheckpointError& e) {
    // Not `uniform`: a read error may hit one rank only, and the others must not wait for it.
    error = std::string("checkpoint error: ") + e.what();
    rc = 2;
  } catch (const shoestring::data::DataError& e) {
    error = std::string("data error: ") + e.what();
    rc = 2;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    error = "error: " + what;
    // LibTorch's allocators say it in their own terms ("[enforce fail at alloc_cpu.cpp:...]", "CUDA
    // out of memory. Tried to allocate ..."): say what happened and what to change.
    const size_t cpu = what.find("you tried to allocate"), gpu = what.find("Tried to allocate");
    if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr || cpu != std::string::npos) {
      std::string detail = cpu != std::string::npos ? what.substr(cpu) : gpu != std::string::npos ? what.substr(gpu) : what;
      // Up to the end of the sentence: sizes such as "2.00 GiB" hold a '.' of their own.
      detail = detail.substr(0, std::min(detail.find(". "), detail.find('\n')));
      error = "out of memory: " + detail +
              "; shrink the model (model.*), train.micro_batch_size or train.seq_len, or use more ranks "
              "(`shoestring plan` estimates the memory per rank)";
    }
  } catch (const std::exception& e) {
    error = std::string("error: ") + e.what();
  }
  if (!error.empty()) {
    // One write per line, so that lines of ranks sharing mpirun's stderr never interleave.
    const std::string line = (world.size == 1 ? "" : "[rank " + std::to_string(world.rank) + "] ") + error + "\n";
    if (world.size == 1 || !uniform || world.rank == 0) std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
    // A rank that fails alone would leave the others waiting in a collective: take the job down.
    // Other ranks give rank 0 (usually the first to see the cause) a moment to print.
    if (world.size > 1 && !uniform) {
      if (world.rank != 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
      shoestring::parallel::abort_world(rc);
    }
  }
  shoestring::parallel::finalize_world(world);
  return rc;
}
