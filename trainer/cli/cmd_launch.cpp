// shoestring launch slurm ...: check a config against a job's shape, write a run directory with the
// resolved config and a batch script, and print the sbatch command that submits it (docs/cluster.md).
#include <sys/stat.h>

#include <boost/program_options.hpp>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <utility>

#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/launch_slurm.h"
#include "trainer/train.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace shoestring::cli {

namespace {

constexpr const char* kUsage =
    "usage: shoestring launch slurm --config FILE [--set key=value ...] --nodes N --gpus-per-node G --time HH:MM:SS\n"
    "                               [--partition P] [--account A] [--job-name J] [--out DIR] [--cpus-per-task K]\n"
    "                               [--signal-before SECONDS]\n"
    "  write a run directory with the resolved config and a Slurm batch script; print the sbatch command\n";

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out.flush()) throw std::runtime_error(path.string() + ": cannot write");
}

int launch_slurm(const Args& args) {
  SlurmJob job;
  ConfigOptions cfg_opts;
  std::string out_root = "runs";
  po::options_description opts("shoestring launch slurm");
  opts.add_options()
      ("help,h", "show this help")
      ("nodes", po::value(&job.nodes), "nodes to allocate")
      ("gpus-per-node", po::value(&job.gpus_per_node), "GPUs per node = ranks per node")
      ("time", po::value(&job.time), "wall-clock limit, HH:MM:SS")
      ("partition", po::value(&job.partition), "Slurm partition")
      ("account", po::value(&job.account), "Slurm account")
      ("job-name", po::value(&job.job_name), "job name, also the run directory's (default: the config file's name)")
      ("out", po::value(&out_root)->default_value("runs"), "the run directory is made in here")
      ("cpus-per-task", po::value(&job.cpus_per_task)->default_value(8), "cores per rank (OMP_NUM_THREADS)")
      ("signal-before", po::value(&job.signal_before_s)->default_value(300),
       "seconds before the time limit at which the ranks get USR1, save and exit 42 (requeued)");
  add_config_options(opts, cfg_opts);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  if (cfg_opts.files.empty()) {
    std::cerr << "shoestring launch: no config given; use --config FILE (e.g. configs/tiny.yaml)\n";
    return 2;
  }
  // Checked here rather than marked required: Program_options would refuse --help without them.
  for (const char* needed : {"nodes", "gpus-per-node", "time"})
    if (!vm.count(needed)) {
      std::cerr << "shoestring launch: --" << needed << " is required (see --help)\n";
      return 2;
    }
  // Given empty, these are mistakes, not "not given": a script would run without the partition or
  // account the user meant, or in the current directory.
  for (const auto& [flag, value] : {std::pair{"partition", &job.partition}, {"account", &job.account},
                                    {"job-name", &job.job_name}, {"out", &out_root}})
    if (vm.count(flag) && value->empty()) {
      std::cerr << "shoestring launch: --" << flag << ": expected a name, got an empty one\n";
      return 2;
    }
  if (std::error_code ec; fs::exists(out_root, ec) && !fs::is_directory(out_root, ec)) {
    std::cerr << "shoestring launch: --out " << out_root << ": is a file, expected a folder for the run directory\n";
    return 2;
  }
  try {
    validate_job(job);
  } catch (const LaunchError& e) {
    std::cerr << "shoestring launch: " << e.what() << "\n";
    return 2;
  }
  const Config loaded = load_config(cfg_opts.files, cfg_opts.sets);
  check_layout(loaded, job);
  // Unless given, the job is named after the config file, which may hold a space ("my cfg.yaml");
  // the run directory carries the job name, so --job-name alone mends both.
  const bool named_by_file = job.job_name.empty();
  if (job.job_name.find('/') != std::string::npos) {
    std::cerr << "shoestring launch: --job-name '" << job.job_name << "' must not contain '/': it names the run directory in --out\n";
    return 2;
  }
  if (named_by_file) job.job_name = loaded.name;
  job.workdir = fs::current_path().string();
  job.binary = fs::canonical("/proc/self/exe").string();
  job.run_dir = (fs::absolute(out_root) / (job.job_name + "-" + utc_stamp())).lexically_normal().string();
  try {
    validate_job(job);  // again, now with the run directory and job name filled in
  } catch (const LaunchError& e) {
    std::string why = e.what();
    if (named_by_file && why.rfind("--job-name:", 0) == 0)
      why = "the job name '" + job.job_name + "' comes from the config file's name (" + cfg_opts.files.back() + ") and" +
            why.substr(why.find("' must not") + 1) + "; give one with --job-name NAME";
    std::cerr << "shoestring launch: " << why << "\n";
    return 2;
  }
  if (fs::exists(job.run_dir)) throw std::runtime_error(job.run_dir + ": already exists; wait a second or use --out");
  fs::create_directories(job.run_dir);
  const Config cfg = job_config(loaded, job);
  job.checkpoint_dir = job_checkpoint_dir(cfg, job);
  write_file(fs::path(job.run_dir) / "config.yaml", to_yaml(cfg));
  const fs::path script = fs::path(job.run_dir) / "job.sbatch";
  write_file(script, render_sbatch(job));
  fs::permissions(script, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);

  const parallel::MeshShape shape = mesh_shape(cfg, job.ranks());
  std::cout << "shoestring launch: " << cfg.name << " on " << job.nodes << " node(s) x " << job.gpus_per_node
            << " GPU(s) = " << job.ranks() << " ranks (dp " << shape.dp << " x pp " << shape.pp << ", ep " << shape.ep
            << "), " << cfg.train.threads << " threads/rank, time " << job.time << ", USR1 " << job.signal_before_s
            << " s before the limit\n"
            << "  run dir  " << job.run_dir << "\n"
            << "submit with:\n"
            << "sbatch " << script.string() << "\n";
  return 0;
}

}  // namespace

int cmd_launch(const Args& args) {
  if (const auto rc = usage_exit(args, kUsage)) return *rc;
  if (args[0] != "slurm") {
    std::cerr << "shoestring launch: unknown launcher '" << args[0] << "' (launchers: slurm; see shoestring launch --help)\n";
    return 2;
  }
  return launch_slurm(Args(args.begin() + 1, args.end()));
}

}  // namespace shoestring::cli
