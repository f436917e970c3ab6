#pragma once
// `shoestring launch slurm`: a Slurm batch script for one training job, rendered from the job's
// shape and checked against the config before anything is submitted (docs/cluster.md).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "trainer/config.h"

namespace shoestring {

// Bad launcher options (nodes 0, a malformed time): the CLI reports them as usage errors (exit 2).
struct LaunchError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct SlurmJob {
  int nodes = 0;
  int gpus_per_node = 0;     // = tasks (ranks) per node: one rank drives one GPU
  int cpus_per_task = 8;     // cores of each rank: OMP_NUM_THREADS and train.threads
  std::string time;          // HH:MM:SS wall-clock limit
  std::string partition;     // optional
  std::string account;       // optional
  std::string job_name;      // empty: the config name
  int signal_before_s = 300; // USR1 this long before the time limit: time to finish a step and save
  std::string run_dir;       // absolute: config.yaml, job.sbatch, the Slurm log, metrics, checkpoints
  std::string workdir;       // absolute: where the job runs (relative paths in the config resolve here)
  std::string binary;        // absolute path of the shoestring executable
  std::string checkpoint_dir;  // the job's checkpoint.dir (absolute, or relative to workdir)

  int ranks() const { return nodes * gpus_per_node; }
};

// Seconds in an "HH:MM:SS" limit (hours may exceed 24); LaunchError for anything else.
int64_t parse_time_limit(const std::string& hhmmss);

// LaunchError naming the option when the job cannot be run as given.
void validate_job(const SlurmJob& job);

// parallel.* and the batch size against job.ranks() ranks; a ConfigError naming the keys.
void check_layout(const Config& cfg, const SlurmJob& job);

// The config as the job runs it: log.run_dir = the run directory; train.threads = cpus-per-task
// when it was auto (a rank sees every core of its node, but Slurm gives it only its own).
Config job_config(Config cfg, const SlurmJob& job);

// Where the job's checkpoints go: checkpoint.dir, or <run dir>/checkpoints when it is empty.
std::string job_checkpoint_dir(const Config& cfg, const SlurmJob& job);

// The batch script (bash with #SBATCH lines).
std::string render_sbatch(const SlurmJob& job);

}  // namespace shoestring
