#include "trainer/launch_slurm.h"

#include <limits>
#include <regex>
#include <sstream>

#include "trainer/config_loader.h"
#include "trainer/distributed.h"

namespace shoestring {

namespace {

// A word for bash, single-quoted unless it is plainly safe.
std::string sh_quote(const std::string& s) {
  if (!s.empty() && std::regex_match(s, std::regex(R"([A-Za-z0-9_./:=@%+,-]+)"))) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// #SBATCH lines are not read by a shell: a value there must be one plain word.
void plain_word(const std::string& option, const std::string& value) {
  if (value.find_first_of(" \t\n'\"\\$`") != std::string::npos)
    throw LaunchError(option + ": '" + value + "' must not contain spaces, quotes, '$' or backslashes");
}

}  // namespace

int64_t parse_time_limit(const std::string& hhmmss) {
  std::smatch m;
  if (!std::regex_match(hhmmss, m, std::regex(R"((\d{1,4}):([0-5]\d):([0-5]\d))")))
    throw LaunchError("--time: expected HH:MM:SS (e.g. 04:00:00), got '" + hhmmss + "'");
  return std::stoll(m[1]) * 3600 + std::stoll(m[2]) * 60 + std::stoll(m[3]);
}

void validate_job(const SlurmJob& job) {
  if (job.nodes < 1) throw LaunchError("--nodes must be at least 1, got " + std::to_string(job.nodes));
  if (job.gpus_per_node < 1)
    throw LaunchError("--gpus-per-node must be at least 1, got " + std::to_string(job.gpus_per_node));
  // MPI numbers ranks with an int: a product beyond it would wrap (and no cluster has that many).
  if (int64_t(job.nodes) * job.gpus_per_node > std::numeric_limits<int>::max())
    throw LaunchError("--nodes " + std::to_string(job.nodes) + " x --gpus-per-node " + std::to_string(job.gpus_per_node) +
                      " = " + std::to_string(int64_t(job.nodes) * job.gpus_per_node) + " ranks, more than " +
                      std::to_string(std::numeric_limits<int>::max()));
  if (job.cpus_per_task < 1)
    throw LaunchError("--cpus-per-task must be at least 1, got " + std::to_string(job.cpus_per_task));
  const int64_t limit = parse_time_limit(job.time);
  if (job.signal_before_s < 1 || job.signal_before_s >= limit)
    throw LaunchError("--signal-before " + std::to_string(job.signal_before_s) + " s must be positive and less than --time " +
                      job.time + " (" + std::to_string(limit) + " s)");
  plain_word("--partition", job.partition);
  plain_word("--account", job.account);
  plain_word("--job-name", job.job_name);
  plain_word("--out", job.run_dir);
}

void check_layout(const Config& cfg, const SlurmJob& job) {
  try {
    const parallel::MeshShape shape = mesh_shape(cfg, job.ranks());
    accumulation_steps(cfg, shape.dp);
  } catch (const ConfigError& e) {
    std::string why = e.what();
    // mesh_shape speaks of the ranks a launcher started; here they are yet to be asked for.
    if (const auto at = why.find("mpirun started"); at != std::string::npos) why.replace(at, 14, "the job has");
    throw ConfigError("--nodes " + std::to_string(job.nodes) + " x --gpus-per-node " + std::to_string(job.gpus_per_node) +
                      " = " + std::to_string(job.ranks()) + " ranks: " + why);
  }
}

Config job_config(Config cfg, const SlurmJob& job) {
  cfg.log.run_dir = job.run_dir;
  if (cfg.train.threads == 0) cfg.train.threads = job.cpus_per_task;
  return cfg;
}

std::string job_checkpoint_dir(const Config& cfg, const SlurmJob& job) {
  return cfg.checkpoint.dir.empty() ? job.run_dir + "/checkpoints" : cfg.checkpoint.dir;
}

std::string render_sbatch(const SlurmJob& job) {
  const std::string run = job.run_dir;
  const std::string name = job.job_name;
  std::ostringstream s;
  s << "#!/bin/bash\n"
    << "# " << name << ": a shoestring training job written by `shoestring launch slurm` (docs/cluster.md).\n"
    << "# Submit with: sbatch " << sh_quote(run + "/job.sbatch") << "\n"
    << "# Every start of it (the first, and each after a requeue) resumes from the newest checkpoint.\n"
    << "#SBATCH --job-name=" << name << "\n"
    << "#SBATCH --nodes=" << job.nodes << "\n"
    << "#SBATCH --ntasks-per-node=" << job.gpus_per_node << "\n"
    << "#SBATCH --gpus-per-node=" << job.gpus_per_node << "\n"
    << "#SBATCH --cpus-per-task=" << job.cpus_per_task << "\n"
    << "#SBATCH --time=" << job.time << "\n";
  if (!job.partition.empty()) s << "#SBATCH --partition=" << job.partition << "\n";
  if (!job.account.empty()) s << "#SBATCH --account=" << job.account << "\n";
  s << "# USR1 goes to the tasks of the job step (no B: prefix, so not to this shell) "
    << job.signal_before_s << " s before\n"
    << "# the time limit: every rank finishes its step, the checkpoint is saved and the trainer exits 42.\n"
    << "#SBATCH --signal=USR1@" << job.signal_before_s << "\n"
    << "#SBATCH --requeue\n"
    << "#SBATCH --open-mode=append\n"
    << "#SBATCH --output=" << run << "/slurm-%j.out\n"
    << "set -uo pipefail\n"
    << "cd " << sh_quote(job.workdir) << " || exit 1\n"
    << "run_dir=" << sh_quote(run) << "\n"
    << "ckpt_dir=" << sh_quote(job.checkpoint_dir) << "\n"
    << "export OMP_NUM_THREADS=" << job.cpus_per_task << "\n"
    << "# srun passes this environment to every rank: set network options here or before sbatch, e.g.\n"
    << "#   export NCCL_SOCKET_IFNAME=ib0 NCCL_IB_HCA=mlx5 UCX_NET_DEVICES=mlx5_0:1\n"
    << "echo \"shoestring job ${SLURM_JOB_ID:-} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-} at "
       "$(date -u +%Y-%m-%dT%H:%M:%SZ)\"\n"
    << "env | grep -E '^(NCCL_|UCX_|OMPI_MCA_|PMIX_MCA_)' | sort | sed 's/^/  env /'\n"
    // --cpus-per-task again on srun: since Slurm 22.05 a step no longer inherits it from sbatch.
    << "cmd=(srun --kill-on-bad-exit=1 --cpus-per-task=" << job.cpus_per_task << " " << sh_quote(job.binary)
    << " train --config \"$run_dir/config.yaml\" --set \"log.run_dir=$run_dir\" --resume auto)\n"
    << "printf '+'; printf ' %q' \"${cmd[@]}\"; printf '\\n'\n"
    << "newest() { cat \"$ckpt_dir/latest\" 2> /dev/null; }\n"
    << "before=$(newest)\n"
    << "\"${cmd[@]}\"\n"
    << "rc=$?\n"
    << "# 42: the ranks stopped on the signal, the checkpoint complete before any of them exited. srun\n"
    << "# reports a task killed by a signal over the others' 42 (--kill-on-bad-exit kills the slower\n"
    << "# ones once the first exits): a kill after a new checkpoint appeared counts too, and only then,\n"
    << "# so that a job failing the same way before saving anything is not requeued forever.\n"
    << "if ((rc == 42)) || { ((rc > 128)) && [[ $(newest) != \"$before\" ]]; }; then\n"
    << "  echo \"shoestring: exit $rc with a new checkpoint in $ckpt_dir: requeueing job $SLURM_JOB_ID\"\n"
    << "  scontrol requeue \"$SLURM_JOB_ID\"\n"
    << "fi\n"
    << "exit $rc\n";
  return s.str();
}

}  // namespace shoestring
